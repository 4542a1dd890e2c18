"""The Kaggle round trip offline: python -m src.export, notebooks/kaggle_inference.ipynb
executed against the export, and scripts/kaggle_submit.sh with a stub `kaggle` CLI."""
from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest

from src.export import main as export_main
from src.pref import export as ex
from src.pref.inference.submission import check_submission, predict_file
from tests.fixtures_pref import write_test_csv
from tests.pref_helpers import run_kaggle_notebook

REPO = Path(__file__).resolve().parents[1]
SUBMIT = REPO / "scripts" / "kaggle_submit.sh"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, minilm_run) -> Path:
    out = tmp_path_factory.mktemp("export") / "minilm-export"
    ex.export_runs([minilm_run], out, kaggle_user="tester", log=None)  # verify=True: imports + loads in a fresh python
    return out


@pytest.mark.slow  # the real MiniLM export, verified in a fresh python / a notebook kernel
def test_export_folder_is_self_contained(exported, minilm_run):
    meta = json.loads((exported / "dataset-metadata.json").read_text())
    assert meta["id"].startswith("tester/") and 6 <= len(meta["title"]) <= 50
    assert meta["licenses"] == [{"name": "other"}]
    slug = meta["id"].split("/", 1)[1]
    assert 3 <= len(slug) <= 50 and all(c.isalnum() or c == "-" for c in slug)
    manifest = json.loads((exported / ex.MANIFEST).read_text())
    (model,) = manifest["models"]
    m0 = exported / model["path"]
    for name in ("model.safetensors", "config.yaml", "calibration.json", "prior.json", "encoder/config.json",
                 "tokenizer/tokenizer_config.json"):
        assert (m0 / name).is_file(), name
    prior = json.loads((m0 / "prior.json").read_text())
    assert abs(sum(prior["prior"]) - 1) < 1e-12 and "training rows" in prior["source"]
    src = exported / ex.SRC_DIR / "src"
    for name in ("__init__.py", "predict.py", "pref/inference/submission.py", "pref/inference/predict.py", "pref/inputs/encode.py", "pref/inputs/collate.py", "pref/inference/ensemble.py", "pref/modeling/model.py", "data/arena.py",
                 "engine/batching.py", "device.py", "config.py"):
        assert (src / name).is_file(), name
    assert not (src / "pref" / "train.py").exists() and not (src / "engine" / "loop.py").exists()  # only what it needs
    assert not list(exported.rglob("__pycache__")) and not list(exported.rglob("*.pyc"))
    assert sorted(manifest["src_files"]) == sorted(p.relative_to(exported / ex.SRC_DIR).as_posix()
                                                   for p in src.rglob("*.py"))


@pytest.mark.slow  # the real MiniLM export, verified in a fresh python / a notebook kernel
def test_export_holds_no_local_paths_and_the_training_rows_prior(exported, minilm_run):
    """(issue 13, item 9) Nothing in the export names a folder of this machine, and the
    prior is counted over the rows the run trained on, not over the whole file."""
    import yaml
    here = [str(minilm_run.resolve().parent), str(Path.home()), str(REPO)]
    for f in exported.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".yaml", ".md"):
            text = f.read_text()
            assert not [h for h in here if h in text], f
    (model,) = json.loads((exported / ex.MANIFEST).read_text())["models"]
    assert model["source_run"] == minilm_run.name and model["checkpoint"] == "checkpoint/best"
    cfg = yaml.safe_load((exported / model["path"] / "config.yaml").read_text())
    assert cfg["data"] == "train.csv" and cfg["out"] == minilm_run.name
    prior = json.loads((exported / model["path"] / "prior.json").read_text())["prior"]
    metrics = json.loads((minilm_run / "metrics.json").read_text())
    counts = json.loads((minilm_run / "prior.json").read_text())["counts"]
    # the rows the run used outside validation: training rows and the selection slice (--select-frac)
    used = metrics["n_train"] + metrics.get("n_select", 0)
    assert sum(counts) == used < used + metrics["n_val"]
    assert np.allclose(prior, (np.array(counts) + 1) / (sum(counts) + 3))
    assert 100 < metrics["peak_rss_mb"] < 64 * 1024  # (issue 13, item 12) the run's peak memory is recorded


@pytest.mark.slow  # the real MiniLM export, verified in a fresh python / a notebook kernel
def test_verify_export_catches_a_missing_module(exported, tmp_path):
    """(The fixture's export passed the same check, models loaded, before it was moved into place.)"""
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(exported / ex.SRC_DIR, broken / ex.SRC_DIR)
    shutil.copy(exported / ex.MANIFEST, broken / ex.MANIFEST)
    (broken / ex.SRC_DIR / "src" / "pref" / "inputs" / "encode.py").unlink()
    with pytest.raises(RuntimeError, match="encode"):
        ex.verify_export(broken, load_models=False)


def test_export_refuses_a_nonempty_folder_and_names_the_user(tiny_run, tmp_path, monkeypatch, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="--force"):
        ex.export_runs([tiny_run], tmp_path / "taken", log=None)
    assert export_main(["--run", str(tiny_run), "--to", str(tmp_path / "taken")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert export_main(["--run", str(tmp_path), "--to", str(tmp_path / "o")]) == 2
    assert "no trained classifier" in capsys.readouterr().err
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    assert ex.dataset_metadata("prefpipe test", user=None, slug=None, license_name="CC0-1.0")["id"] == \
        f"{ex.USER_PLACEHOLDER}/prefpipe-test"
    monkeypatch.setenv("KAGGLE_USERNAME", "envuser")
    assert ex.dataset_metadata("prefpipe test", user=None, slug="s-1", license_name="other")["id"] == "envuser/s-1"
    assert ex.dataset_metadata("prefpipe test", user="flag", slug=None, license_name="other")["id"].startswith("flag/")


@pytest.mark.slow  # the real MiniLM export, verified in a fresh python / a notebook kernel
def test_notebook_predicts_offline_from_the_export(exported, minilm_run, tmp_path, monkeypatch):
    test = write_test_csv(tmp_path / "test.csv", rows=12, seed=21)
    with open(test, "a") as f:
        f.write('424242,"[""q""]",not json,"[""b""]"\n')  # an unparseable row still gets a prediction
    out = tmp_path / "working" / "submission.csv"
    text = run_kaggle_notebook(tmp_path, monkeypatch, export=exported, test=test, out=out, device="cpu")
    assert str(exported) in text and "ok, 13 rows (1 given the class prior)" in text
    assert check_submission(out, test) == []
    # the exported code and weights predict exactly what the repository's code predicts from the run
    predict_file([minilm_run], test, tmp_path / "repo.csv", device="cpu", log=None)
    assert out.read_text() == (tmp_path / "repo.csv").read_text()


# --- scripts/kaggle_submit.sh ---------------------------------------------------------------

def _stub_kaggle(folder: Path, version_output: str = "Kaggle CLI 2.2.4", version_rc: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stub = folder / "kaggle"
    stub.write_text(f"""#!/usr/bin/env bash
if [[ "$1" == "--version" ]]; then echo "{version_output}"; exit {version_rc}; fi
printf '%s\\n' "$@" > "{folder}/args.txt"
echo "Successfully submitted"
""")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return stub


def _run_submit(args: list[str], tmp_path: Path, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("KAGGLE_")}  # never the caller's real credentials
    base.update({"HOME": str(tmp_path / "home"), "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", **env})
    (tmp_path / "home").mkdir(exist_ok=True)
    return subprocess.run(["bash", str(SUBMIT), *args], capture_output=True, text=True, env=base, cwd=tmp_path,
                          timeout=300)


def test_submit_script_fails_clearly_without_credentials(tmp_path):
    _stub_kaggle(tmp_path / "bin")
    sub = tmp_path / "s.csv"
    sub.write_text("id,winner_model_a,winner_model_b,winner_tie\n1,0.3,0.3,0.4\n")
    r = _run_submit([str(sub), "msg"], tmp_path)
    assert r.returncode == 3 and "no Kaggle credentials found" in r.stderr
    assert not (tmp_path / "bin" / "args.txt").exists()


def test_submit_script_submits_without_printing_secrets(tmp_path):
    _stub_kaggle(tmp_path / "bin")
    sub = tmp_path / "s.csv"
    sub.write_text("id,winner_model_a,winner_model_b,winner_tie\n1,0.3,0.3,0.4\n")
    secret = "k3y-do-not-print-0123456789"
    r = _run_submit([str(sub), "minilm, tta on"], tmp_path, KAGGLE_USERNAME="someone", KAGGLE_KEY=secret)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "bin" / "args.txt").read_text().splitlines() == \
        ["competitions", "submit", "lmsys-chatbot-arena", "-f", str(sub), "-m", "minilm, tta on"]
    assert secret not in r.stdout + r.stderr
    # code competition: a notebook version
    r = _run_submit(["submission.csv", "v3", "--kernel", "someone/infer", "--version", "3", "--competition", "c"],
                    tmp_path, KAGGLE_API_TOKEN=secret)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "bin" / "args.txt").read_text().splitlines()[-4:] == ["-k", "someone/infer", "-v", "3"]
    assert secret not in r.stdout + r.stderr
    # credentials from a file in ~/.kaggle
    (tmp_path / "home" / ".kaggle").mkdir(parents=True)
    (tmp_path / "home" / ".kaggle" / "access_token").write_text(secret)
    r = _run_submit([str(sub), "m"], tmp_path)
    assert r.returncode == 0 and secret not in r.stdout + r.stderr


@pytest.mark.slow  # spawns the submit script and its python check
def test_submit_script_checks_the_cli_and_the_file(tmp_path):
    sub = tmp_path / "s.csv"
    sub.write_text("id,winner_model_a,winner_model_b,winner_tie\n1,0.5,0.5,0.5\n")
    creds = {"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}
    r = _run_submit([str(sub), "m"], tmp_path, KAGGLE_BIN="kaggle-not-here-xyz", **creds)
    assert r.returncode == 2 and "pip install kaggle six" in r.stderr
    _stub_kaggle(tmp_path / "bin", version_output="ModuleNotFoundError: No module named 'six'", version_rc=1)
    r = _run_submit([str(sub), "m"], tmp_path, **creds)
    assert r.returncode == 2 and "pip install six" in r.stderr
    _stub_kaggle(tmp_path / "bin")
    r = _run_submit([str(tmp_path / "missing.csv"), "m"], tmp_path, **creds)
    assert r.returncode == 2 and "no such file" in r.stderr
    test = tmp_path / "t.csv"
    test.write_text('id,prompt,response_a,response_b\n1,"[""q""]","[""a""]","[""b""]"\n')
    r = _run_submit([str(sub), "m", "--check", str(test)], tmp_path, **creds)  # row sums to 1.5
    assert r.returncode == 4 and "sum to 1.5" in r.stdout and "not submitted" in r.stderr
    assert not (tmp_path / "bin" / "args.txt").exists()
