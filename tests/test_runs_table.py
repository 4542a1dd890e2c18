"""python -m src.runs: one row per run (a CV run dir folds into one), pooled figures, config diffs, best pick."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from src.pref import runs as rt
from src.runs import main as runs_main


def fake_run(folder: Path, cfg: dict, metrics: dict | None) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def m(loss, raw, acc, n, secs=60.0, rss=1024.0):
    return {"val_log_loss": loss, "val_log_loss_uncalibrated": raw, "val_accuracy": acc, "n_val": n,
            "train_seconds": secs, "peak_rss_mb": rss}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0.1, 3.0), st.integers(1, 500)), min_size=1, max_size=6))
def test_pooled_fold_loss_equals_the_loss_over_all_rows(folds):
    """Each fold's loss is a mean over its rows: the row-weighted mean is the mean over all rows."""
    metrics = [{"val_log_loss": v, "n_val": n} for v, n in folds]
    per_row = [v for v, n in folds for _ in range(n)]
    assert rt._pooled(metrics, "val_log_loss") == pytest.approx(sum(per_row) / len(per_row), rel=1e-12)


def test_a_cv_run_is_one_row_and_diffs_name_only_what_differs(tmp_path):
    base = {"model": "minilm", "data": "/x/real.csv", "lr": 2e-5, "max_len": 128, "out": "runs/a"}
    fake_run(tmp_path / "runs" / "a", base, m(0.90, 0.95, 0.50, 100, 120, 2048))
    cv = fake_run(tmp_path / "runs" / "cv", {**base, "lr": 1e-4, "folds": 2, "fold": -1, "out": "runs/cv"},
                  {"cv_log_loss": 0.80, "cv_accuracy": 0.6, "folds": 2})
    fake_run(cv / "fold0", {}, m(0.70, 0.75, 0.6, 30, 60, 1000))
    fake_run(cv / "fold1", {}, m(0.85, 0.90, 0.6, 70, 90, 3000))
    fake_run(tmp_path / "runs" / "c", {**base, "train": {"max_len": 256}}, None)  # sectioned config, unfinished
    table = rt.runs_table([tmp_path / "runs"]).set_index("run")
    assert len(table) == 3  # fold0/fold1 are part of cv's row, not rows of their own
    row = table.loc[str(cv)]
    assert row["folds"] == "2/2" and row["val_log_loss"] == 0.80 and row["rows"] == 100
    assert row["val_log_loss_uncalibrated"] == pytest.approx((0.75 * 30 + 0.90 * 70) / 100)
    assert row["minutes"] == pytest.approx(2.5) and row["peak_gib"] == pytest.approx(3000 / 1024)
    assert set(row["differs_from_first"].split(", ")) == {"lr 2e-05->0.0001", "folds None->2"}  # not out, fold
    c = table.loc[str(tmp_path / "runs" / "c")]
    assert c["state"] == "no metrics" and c["differs_from_first"] == "max_len 128->256"
    assert rt.best_run(table.reset_index()) == str(cv)


def test_cli_writes_csv_and_names_the_best_and_refuses_a_missing_dir(tmp_path, capsys):
    fake_run(tmp_path / "a", {"model": "minilm"}, m(0.9, 0.9, 0.5, 10))
    fake_run(tmp_path / "b", {"model": "minilm", "lr": 1e-3}, m(0.8, 0.9, 0.5, 20))
    assert runs_main([str(tmp_path / "a"), str(tmp_path / "b"), "--csv", str(tmp_path / "t.csv"), "--best"]) == 0
    out = capsys.readouterr().out
    assert f"best: {tmp_path / 'b'}" in out and "different numbers of rows" in out
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 3
    assert runs_main([str(tmp_path / "nope")]) == 2
    assert "no such run dir" in capsys.readouterr().err


def test_a_trained_run_reads_back_with_its_own_figures(tiny_run):
    """The keys the table reads are the ones train_pref writes."""
    row = rt.describe(tiny_run)
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert row["state"] == "done" and row["model"] == yaml.safe_load((tiny_run / "config.yaml").read_text())["model"]
    assert row["model"].endswith("bert")  # the tiny encoder's folder (conftest's tiny_run), read back from the run
    assert row["val_log_loss"] == metrics["val_log_loss"] and row["rows"] == metrics["n_val"]
    assert row["val_log_loss_uncalibrated"] == metrics["val_log_loss_uncalibrated"] and row["minutes"] > 0
