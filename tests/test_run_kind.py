"""A run of the wrong kind given to generate, predict or export: one line naming what it is,
exit 2, nothing written. The folders carry only the marker files each stage's layout looks
for (no weights): the refusal comes before any model load."""
from __future__ import annotations

from pathlib import Path

import pytest

from src.run_kind import CLASSIFIER, GENERATIVE, KFOLD, run_kind


def _classifier(root: Path) -> Path:
    best = root / "checkpoint" / "best"
    best.mkdir(parents=True)
    for name in ("model.safetensors", "config.yaml", "calibration.json"):
        (best / name).write_text("")
    (best / "tokenizer").mkdir()
    (best / "tokenizer" / "tokenizer_config.json").write_text("{}")
    return root


def _generative(root: Path) -> Path:
    from src.gen.checkpoint import CHECKPOINT_META
    best = root / "checkpoint" / "best"
    best.mkdir(parents=True)
    (best / CHECKPOINT_META).write_text('{"finetune": "full"}')
    (root / "config.yaml").write_text("objective: sft\n")
    return root


def test_kinds_are_told_apart(tmp_path):
    assert run_kind(_classifier(tmp_path / "c")) == CLASSIFIER
    assert run_kind(_generative(tmp_path / "g")) == GENERATIVE
    _classifier(tmp_path / "cv" / "fold0")
    assert run_kind(tmp_path / "cv") == KFOLD
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert run_kind(tmp_path / "hf") is None and run_kind(tmp_path / "missing") is None


def test_generate_on_a_classifier_run_names_it(tmp_path, capsys):
    """Before: the tokenizer loader's 'You need to have sentencepiece or tiktoken installed'."""
    from src.generate import main
    run = _classifier(tmp_path / "minilm-run")
    assert main(["--run", str(run), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{run} is a classifier run" in err and "src.train_pref" in err


@pytest.mark.parametrize("cli", ["predict", "export"])
def test_predict_and_export_on_a_generative_run_name_it(cli, tmp_path, capsys):
    run = _generative(tmp_path / "sft-run")
    if cli == "predict":
        from src.predict import main
        data = tmp_path / "test.csv"
        data.write_text('id,prompt,response_a,response_b\n1,"[""q""]","[""a""]","[""b""]"\n')
        rc = main(["--run", str(run), "--data", str(data), "--out", str(tmp_path / "sub.csv"), "--no-progress"])
        written = tmp_path / "sub.csv"
    else:
        from src.export import main
        rc = main(["--run", str(run), "--to", str(tmp_path / "exp")])
        written = tmp_path / "exp"
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{run} is a generative run" in err and "src.generate" in err
    assert not written.exists()
