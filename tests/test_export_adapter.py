"""An adapter (LoRA) run through the Kaggle round trip offline: `python -m src.export` ships the
adapters + head, backbone.json and the base model folder (or names a Kaggle model path), the
code the adapter path imports lazily, and peft as a requirement; notebooks/kaggle_inference.ipynb
run from the export predicts what `python -m src.predict` predicts from the run (1e-6)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.data.records import LABEL_NAMES
from src.errors import UsageError
from src.export import main as export_main
from src.predict import main as predict_main
from src.pref import export as ex
from src.pref.checkpoint import load_pref_checkpoint
from src.pref.inference.submission import check_submission
from tests.fixtures_pref import write_test_csv
from tests.pref_helpers import run_kaggle_notebook

pytestmark = pytest.mark.slow  # trains a LoRA run, exports it and verifies it in a fresh python / a notebook kernel

REPO = Path(__file__).resolve().parents[1]
KAGGLE_BASE = "/kaggle/input/tiny-llama-model/transformers/default/1"


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    """tiny-llama, LoRA r=2, cross judge prompt, 60 synthetic rows, one epoch (~10 s on one core)."""
    from src.data.synthetic import make_rows, write_csv
    from src.pref.config import PrefConfig
    from src.pref.train import run
    folder = tmp_path_factory.mktemp("lora_run")
    write_csv(make_rows(60, seed=13), folder / "train.csv")
    run(PrefConfig(model="tiny-llama", lora=True, lora_r=2, lora_alpha=4, lora_dropout=0.0, arch="cross",
                   data=str(folder / "train.csv"), out=str(folder / "run"), epochs=1, max_len=224, batch_size=8,
                   head_hidden=16, progress=False, seed=0))
    return folder / "run"


@pytest.fixture(scope="module")
def lora_export(tmp_path_factory, lora_run) -> Path:
    out = tmp_path_factory.mktemp("export") / "tiny-llama-lora"
    ex.export_runs([lora_run], out, kaggle_user="tester", log=None)  # verify: fresh python, loads + predicts
    return out


def test_adapter_export_holds_adapter_base_and_the_lazily_imported_code(lora_export, lora_run):
    manifest = json.loads((lora_export / ex.MANIFEST).read_text())
    (model,) = manifest["models"]
    m0 = lora_export / model["path"]
    meta = json.loads((m0 / "backbone.json").read_text())
    assert meta["base"] == "tiny-llama" and meta["lora"]["r"] == 2
    assert meta["base_dir"] == "../../bases/tiny-llama" and model["base"] == {
        "name": "tiny-llama", "dir": "../../bases/tiny-llama", "copied": True}
    base = (m0 / meta["base_dir"]).resolve()
    assert base == (lora_export / "bases" / "tiny-llama").resolve()
    for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
        assert (base / name).is_file(), name
    # adapters + head only: the base's weights are not in the model's file
    assert (m0 / "model.safetensors").stat().st_size < (base / "model.safetensors").stat().st_size / 10
    assert "peft" in manifest["requires"] and "accelerate" in manifest["requires"]
    src = lora_export / ex.SRC_DIR / "src"
    for name in ("pref/modeling/adapters.py", "pref/modeling/backbone.py", "models/__init__.py", "models/names.py", "models/tiny.py", "models/embedded.py",
                 "pref/registry.py", "pref/inputs/judge.py"):
        assert (src / name).is_file(), name
    # the import scan ships what prediction reaches, no more: the hand-kept list also copied memplan
    # (the --plan estimate), which nothing on the prediction path imports (the check above predicts without it)
    assert not (src / "pref" / "modeling" / "memplan.py").exists()
    assert "peft" not in ex.verify_export(lora_export, load_models=False)["blocked"]
    assert not [f for f in lora_export.rglob("*.json") if str(REPO) in f.read_text() or "/tmp/" in f.read_text()]


def test_exported_adapter_loads_its_copied_base_not_a_rebuilt_one(lora_export, monkeypatch):
    import src.models.tiny as tiny

    def no_build(*a, **k):
        raise AssertionError("the export's base must come from bases/, not be rebuilt")
    monkeypatch.setattr(tiny, "build_tiny_decoder", no_build)
    monkeypatch.setattr(tiny, "_built", {})
    model, _, cfg, _ = load_pref_checkpoint(lora_export / "models" / "m0")
    assert cfg.lora and type(model.encoder).__name__ == "PeftModel"


def test_notebook_predicts_like_the_repo_with_an_adapter_run(lora_export, lora_run, tmp_path, monkeypatch):
    test = write_test_csv(tmp_path / "test.csv", rows=10, seed=23)
    with open(test, "a") as f:
        f.write('424242,"[""q""]",not json,"[""b""]"\n')  # an unparseable row still gets a prediction
    out = tmp_path / "working" / "submission.csv"
    text = run_kaggle_notebook(tmp_path, monkeypatch, export=lora_export, test=test, out=out, device="cpu")
    assert "adapter on tiny-llama from ../../bases/tiny-llama" in text
    assert "ok, 11 rows (1 given the class prior)" in text and check_submission(out, test) == []
    # the repository's CLI on the run dir (base rebuilt from its name) predicts the same
    assert predict_main(["--run", str(lora_run), "--data", str(test), "--out", str(tmp_path / "repo.csv"),
                         "--device", "cpu"]) == 0
    got, ref = pd.read_csv(out, dtype={"id": str}), pd.read_csv(tmp_path / "repo.csv", dtype={"id": str})
    assert got["id"].tolist() == ref["id"].tolist()
    np.testing.assert_allclose(got[list(LABEL_NAMES)].to_numpy(), ref[list(LABEL_NAMES)].to_numpy(), atol=1e-6, rtol=0)
    assert got[list(LABEL_NAMES)].std().max() > 0  # not one constant row: the model says something per row


def test_base_dir_names_a_kaggle_model_instead_of_copying(lora_run, tmp_path):
    out = tmp_path / "ref"
    assert export_main(["--run", str(lora_run), "--to", str(out), "--base-dir", KAGGLE_BASE]) == 0  # checked with a stand-in
    assert not (out / "bases").exists()
    assert json.loads((out / "models" / "m0" / "backbone.json").read_text())["base_dir"] == KAGGLE_BASE
    with pytest.raises(UsageError, match=KAGGLE_BASE.replace("/", ".")):  # here, that path does not exist
        load_pref_checkpoint(out / "models" / "m0")
    from src.models import resolve
    model, *_ = load_pref_checkpoint(out / "models" / "m0", base_dir=resolve("tiny-llama"))
    assert type(model.encoder).__name__ == "PeftModel"


def test_base_dir_on_a_full_weight_run_is_refused(lora_run, tmp_path, capsys):
    full = tmp_path / "full"
    shutil.copytree(lora_run, full)
    (full / "checkpoint" / "best" / "backbone.json").unlink()
    assert export_main(["--run", str(full), "--to", str(tmp_path / "o"), "--base-dir", KAGGLE_BASE,
                        "--no-verify"]) == 2
    assert "--base-dir is for adapter (LoRA) runs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # trains a tiny decoder, checks the export in a fresh interpreter
def test_a_module_missing_from_the_copy_fails_the_isolated_check(lora_run, tmp_path, monkeypatch):
    """Before the import scan, a hand-kept ENTRY_MODULES missed what the adapter path imports
    lazily (gen.tiny, memplan, judge ...): the fresh-interpreter check must catch such a gap,
    and leave nothing behind."""
    full = ex.inference_modules()
    monkeypatch.setattr(ex, "inference_modules", lambda root=ex.ROOT: [f for f in full if f.name != "tiny.py"])
    with pytest.raises(RuntimeError, match="export check failed"):
        ex.export_runs([lora_run], tmp_path / "old", log=None)
    assert not (tmp_path / "old").exists()


def test_metrics_say_how_the_temperature_was_fitted(lora_run):
    """metrics.json names the rows the temperature was fitted on, its range, and both figures
    there: the fitted one is never worse than T = 1 (the calibrated-worse puzzle)."""
    m = json.loads((lora_run / "metrics.json").read_text())
    fit = m["temperature_fit"]
    assert fit["rows"] in ("select", "val") and fit["n"] == (m["n_select"] if fit["rows"] == "select" else m["n_val"])
    assert len(fit["label_counts"]) == 3 and sum(fit["label_counts"]) == fit["n"]  # a slice without ties says so
    low, high = fit["bounds"]
    assert low <= m["temperature"] <= high and low <= 1.0 <= high
    assert fit["log_loss_fitted"] <= fit["log_loss_t1"] + 1e-9


@pytest.mark.slow
def test_notebook_quantize_switch_predicts_on_cpu(lora_export, lora_run, tmp_path, monkeypatch):
    """PREFPIPE_QUANTIZE=8bit on the CPU (bitsandbytes >= 0.50 runs there): the notebook loads the
    export's copied base in 8-bit and writes what `predict --load-in-8bit` writes for the run dir,
    near the unquantised figures and not equal to them (the base really was quantised)."""
    test = write_test_csv(tmp_path / "test.csv", rows=6, seed=5)
    out = tmp_path / "working" / "submission.csv"
    run_kaggle_notebook(tmp_path, monkeypatch, export=lora_export, test=test, out=out, device="cpu",
                        precision="fp32", quantize="8bit")
    assert check_submission(out, test) == []
    common = ["--run", str(lora_run), "--data", str(test), "--device", "cpu", "--precision", "fp32"]
    assert predict_main(common + ["--out", str(tmp_path / "q.csv"), "--load-in-8bit"]) == 0
    assert predict_main(common + ["--out", str(tmp_path / "full.csv")]) == 0
    got, q, full = (pd.read_csv(p, dtype={"id": str})[list(LABEL_NAMES)].to_numpy()
                    for p in (out, tmp_path / "q.csv", tmp_path / "full.csv"))
    np.testing.assert_allclose(got, q, atol=1e-6, rtol=0)
    assert 0 < np.abs(got - full).max() < 0.02
