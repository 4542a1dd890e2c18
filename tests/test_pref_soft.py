"""Soft labels, pseudo-labels, extra sources, warm start and fitted weights through the classifier."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from src.data.arena import read_pairs
from src.data.records import LABEL_NAMES, SWAP_LABEL
from src.data.synthetic import make_rows, write_csv
from src.errors import UsageError
from src.predict import main as predict_main
from src.pref.inputs.collate import collate
from src.pref.config import PrefConfig
from src.pref.inputs.encode import encode_pairs
from src.pref.task import PrefTask
from src.pref.train import build, run
from tests.pref_helpers import make_tiny_encoder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(make_tiny_encoder(tmp_path_factory.mktemp("tiny_enc_soft"), hidden=32))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("soft_data")
    write_csv(make_rows(240, seed=5), d / "train.csv")
    write_csv(make_rows(120, seed=6, id_start=10_000), d / "pool.csv", schema="test")
    return d


def _cfg(tiny_model, data, out, **kw) -> PrefConfig:
    base = dict(model=tiny_model, data=str(data), out=str(out), max_len=64, prompt_budget=16, batch_size=16,
                epochs=1, lr=3e-4, head_lr_mult=10, head_dropout=0.0, precision="fp32", progress=False, seed=3)
    base.update(kw)
    return PrefConfig(**base)


def test_task_loss_on_one_hot_targets_is_the_hard_cross_entropy(tiny_model, files):
    cfg = _cfg(tiny_model, files / "train.csv", "unused")
    model, tok = build(cfg)
    recs = read_pairs(files / "train.csv").records[:12]
    enc = encode_pairs(recs, tok, arch="siamese", max_len=64, prompt_budget=16)
    task = PrefTask(cfg, enc, enc, tok, "cpu")
    batch = collate(enc, list(range(12)), True)
    assert torch.equal(batch["targets"], F.one_hot(batch["labels"], 3).float())
    got, n = task.loss(model, batch)
    ab, ba = model(batch["input_ids"], batch["attention_mask"], batch["style"], both_orders=True)
    y = batch["labels"]
    want = 0.5 * (F.cross_entropy(ab, y, reduction="sum") + F.cross_entropy(ba, torch.tensor(SWAP_LABEL)[y], reduction="sum"))
    assert float(n) == 12 and torch.allclose(got, want, rtol=1e-6)


@pytest.mark.slow  # trains classifier runs (teacher, student, warm start)
def test_pseudo_labels_train_a_student_with_the_leak_guard_and_source_blocks(tiny_model, files, tmp_path):
    teacher = run(_cfg(tiny_model, files / "train.csv", tmp_path / "teacher"))
    pl = tmp_path / "pool_pl.csv"
    assert predict_main(["--run", str(tmp_path / "teacher"), "--data", str(files / "pool.csv"),
                         "--pseudo-label", str(pl), "--min-confidence", "0.4", "--device", "cpu"]) == 0
    back = read_pairs(pl)
    rep = json.loads((tmp_path / "pool_pl_report.json").read_text())
    assert back.report()["label_kinds"]["soft"] == len(back.records) == rep["rows_written"]
    assert rep["rows_written"] + rep["dropped_below_min_confidence"] == 120
    assert set(pd.read_csv(pl)["pseudo_label_runs"]) == {str(tmp_path / "teacher")}
    assert all(max(r.target) >= 0.4 for r in back.records)

    student = run(_cfg(tiny_model, files / "train.csv", tmp_path / "student", extra_data=[f"{pl}:1.5"],
                       distill_kl=0.5, label_smoothing=0.05))
    report = json.loads((tmp_path / "student" / "data_report.json").read_text())
    primary, extra = report["sources"]
    assert primary["role"] == "primary" and extra["role"] == "extra" and extra["weight"] == 1.5
    assert extra["train"] + extra["dropped_validation_prompt"] + extra["dropped_duplicate"] == extra["used"]
    assert extra["dropped_validation_prompt"] > 0  # synthetic prompts repeat: the guard must fire
    assert extra["train_draws"] == extra["train"] + round(0.5 * extra["train"])
    # validation is the same hard rows as the teacher's (folds come from --data only)
    assert student["n_val"] == teacher["n_val"] == report["validation"]["scored_hard_rows"]
    assert student["n_train"] == primary["train_draws"] + extra["train_draws"]
    tv = pd.read_csv(tmp_path / "teacher" / "val_predictions.csv", dtype={"id": str})
    sv = pd.read_csv(tmp_path / "student" / "val_predictions.csv", dtype={"id": str})
    assert tv["id"].tolist() == sv["id"].tolist()


@pytest.mark.slow  # trains classifier runs (teacher, student, warm start)
def test_init_from_starts_from_the_runs_weights_first_step_loss_equal(tiny_model, files, tmp_path):
    first = _cfg(tiny_model, files / "train.csv", tmp_path / "stage1")
    run(first)
    from src.pref.checkpoint import load_pref_checkpoint
    src_model, tok, _, _ = load_pref_checkpoint(tmp_path / "stage1")
    second = replace(first, out=str(tmp_path / "stage2"), init_from=str(tmp_path / "stage1"), seed=11)
    warm, _ = build(second)
    cold, _ = build(replace(second, init_from=""))
    a, b = src_model.state_dict(), warm.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    recs = read_pairs(files / "train.csv").records[:16]
    enc = encode_pairs(recs, tok, arch="siamese", max_len=64, prompt_budget=16)
    task = PrefTask(second, enc, enc, tok, "cpu")
    batch = collate(enc, list(range(16)), True)
    with torch.no_grad():
        l_src, l_warm, l_cold = (float(task.loss(m.eval(), batch)[0]) for m in (src_model, warm, cold))
    assert l_warm == pytest.approx(l_src, rel=1e-6)
    assert abs(l_cold - l_src) > 1e-3  # a fresh model is not that run
    with pytest.raises(UsageError, match="--init-from .*arch"):
        build(replace(second, arch="cross"))


@pytest.mark.slow  # trains classifier runs (teacher, student, warm start)
def test_fitted_weights_file_drives_predict(tiny_model, files, tmp_path):
    runs = []
    for k, lr in enumerate((3e-4, 1e-5)):  # same seed -> same validation rows, different quality
        run(_cfg(tiny_model, files / "train.csv", tmp_path / f"r{k}", lr=lr))
        runs.append(str(tmp_path / f"r{k}"))
    wj = tmp_path / "weights.json"
    assert predict_main(["--fit-weights", "--run", runs[0], "--run", runs[1], "--out", str(wj)]) == 0
    fw = json.loads(wj.read_text())
    assert fw["oof_log_loss"] <= fw["equal_weights_log_loss"] + 1e-12 and fw["n_rows"] > 0
    sub = tmp_path / "sub.csv"
    assert predict_main(["--run", runs[0], "--run", runs[1], "--weights", str(wj), "--data", str(files / "pool.csv"),
                         "--out", str(sub), "--device", "cpu"]) == 0
    rep = json.loads((tmp_path / "sub_report.json").read_text())
    assert rep["weights"] == pytest.approx(fw["weights"]) and rep["ensemble_temperature"] == pytest.approx(fw["temperature"])
    p = pd.read_csv(sub)[list(LABEL_NAMES)].to_numpy()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert predict_main(["--fit-weights", "--run", runs[0], "--run", str(tmp_path / "nope"), "--out", str(wj)]) == 2


@pytest.mark.slow  # trains classifier runs (teacher, student, warm start)
def test_temperature_and_checkpoint_come_from_the_selection_slice_not_validation(tiny_model, files, tmp_path):
    m = run(_cfg(tiny_model, files / "train.csv", tmp_path / "honest", epochs=2, eval_every=4, select_frac=0.2))
    lines = [json.loads(x) for x in (tmp_path / "honest" / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "select_log_loss" in x]
    assert len(evals) >= 3
    # the best checkpoint is the eval with the lowest SELECTION loss, whatever validation said
    assert m["best_step"] == min(evals, key=lambda x: x["select_log_loss"])["step"]
    # a temperature refitted on the validation rows can only look better there: the in-sample figure
    assert m["val_log_loss_in_sample_calibrated"] <= m["val_log_loss"] + 1e-9
    assert set(m["figures"]) >= {"val_log_loss", "val_log_loss_uncalibrated", "val_log_loss_in_sample_calibrated",
                                 "select_log_loss"}
    rep = json.loads((tmp_path / "honest" / "data_report.json").read_text())
    assert rep["selection"]["rows"] == m["n_select"] > 0
    # every row is in exactly one of training, selection, validation
    assert m["n_train"] + m["n_select"] + m["n_val"] == len(read_pairs(files / "train.csv").records)


@pytest.mark.slow  # trains classifier runs (teacher, student, warm start)
def test_select_frac_zero_is_the_in_sample_behaviour(tiny_model, files, tmp_path):
    m = run(_cfg(tiny_model, files / "train.csv", tmp_path / "old", select_frac=0.0))
    assert m["n_select"] == 0 and "select_log_loss" not in m
    # the temperature is chosen on the validation rows: the refitted one where it holds up
    # cross-fitted there, else T = 1 (calibration.choose_temperature), said in temperature_fit
    kept_t1 = m["temperature_fit"]["kept_t1"]
    assert m["temperature_fit"]["rows"] == "val" and (m["temperature"] == 1.0) == (kept_t1 is not None)
    same = m["val_log_loss_uncalibrated"] if kept_t1 else m["val_log_loss_in_sample_calibrated"]
    assert m["val_log_loss"] == pytest.approx(same, abs=1e-6)
    assert "in-sample" in m["figures"]["val_log_loss"]
