"""Pseudo-labels from --task binary runs (issue 22 follow-up): written with A/B renormalised and
no tie mass, so the soft rows teach a student nothing about ties the teacher never learnt;
`--min-confidence` reads max(P(A), P(B)); runs of two tasks are refused before any work."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.data.arena import read_pairs
from src.data.records import LABEL_NAMES, PairRecord
from src.data.targets import parse_winner
from src.data.tasks import training_records
from src.errors import UsageError
from src.pref.inference.pseudo_label import pseudo_label_file, soft_columns, write_pseudo_labels
from tests.pref_helpers import make_tiny_encoder

probs_rows = st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3).filter(lambda v: sum(v[:2]) > 1e-9)


@settings(max_examples=300, deadline=None)
@given(probs_rows)
def test_binary_soft_columns_carry_no_tie_and_read_back_soft(row):
    p = np.array(row) / sum(row)
    (a, b, tie), = soft_columns(p[None, :], task="binary")
    assert tie == 0.0 and abs(a + b - 1.0) < 1e-9 and 0.0 < a < 1.0 and 0.0 < b < 1.0
    label, target = parse_winner(LABEL_NAMES, [f"{a:.6f}", f"{b:.6f}", f"{tie:.6f}"])
    assert label is None and target[2] == 0.0  # soft, never a hard human label
    if p[0] > p[1]:
        assert a >= b  # rounding may tie two near-equal sides, never flip them
    elif p[1] > p[0]:
        assert b >= a
    np.testing.assert_allclose(a, p[0] / (p[0] + p[1]), atol=2e-5)


def test_binary_pseudo_labels_round_trip_without_tie_mass(tmp_path):
    rng = np.random.default_rng(3)
    recs = [PairRecord(str(i), [f"q {i}"], [f"a {i}"], [f"b {i}"]) for i in range(30)]
    probs = rng.dirichlet([1, 1, 1], size=30)
    probs[0] = [0.45, 0.10, 0.45]  # binary 0.818 / 0.182: confident as A/B, not as three classes
    out = tmp_path / "pl.csv"
    rep = write_pseudo_labels(recs, probs, ["runs/b"], out, min_confidence=0.8, task="binary")
    ab = probs[:, :2] / probs[:, :2].sum(1, keepdims=True)
    kept = [i for i in range(30) if ab[i].max() >= 0.8]
    assert 0 in kept and probs[0].max() < 0.8
    back = read_pairs(out)
    assert [r.id for r in back.records] == [str(i) for i in kept] and not back.quarantine
    for r in back.records:
        assert r.label is None and r.target[2] == 0.0
        np.testing.assert_allclose(r.target[:2], ab[int(r.id)], atol=2e-5)
    assert rep["task"] == "binary" and rep["rows_written"] == len(kept)
    assert rep["dropped_below_min_confidence"] == 30 - len(kept)
    assert rep["mean_tie_mass_removed"] == pytest.approx(probs[kept, 2].mean())
    assert rep["mean_probabilities"]["winner_tie"] == 0.0
    assert json.loads((tmp_path / "pl_report.json").read_text())["task"] == "binary"
    # a binary student reads them unchanged: no tie mass to move
    _, counts = training_records(back.records, "binary", "drop")
    assert counts["soft_tie_mass_moved"] == 0 and counts["rows_kept"] == len(kept)


def test_an_unknown_task_is_refused():
    with pytest.raises(UsageError, match="unknown task"):
        write_pseudo_labels([], np.zeros((0, 3)), [], "never.csv", task="ternary")


@pytest.fixture(scope="module")
def tiny_binary_run(tmp_path_factory) -> Path:
    """A tiny random BERT trained with --task binary (150 rows, ties dropped): about a second."""
    from src.data.synthetic import make_rows, to_binary, write_csv
    from src.pref.config import PrefConfig
    from src.pref.train import run
    folder = tmp_path_factory.mktemp("tiny_binary")
    write_csv(to_binary(make_rows(200, seed=4), seed=4).iloc[:150], folder / "train.csv")
    run(PrefConfig(model=str(make_tiny_encoder(folder / "bert")), data=str(folder / "train.csv"),
                   out=str(folder / "run"), epochs=1, max_len=64, prompt_budget=16, batch_size=16,
                   progress=False, seed=0, task="binary"))
    return folder / "run"


def test_pseudo_label_file_from_a_binary_run_and_a_mixed_ensemble_refused(tiny_binary_run, tiny_run, tmp_path):
    from tests.fixtures_pref import write_test_csv
    data = write_test_csv(tmp_path / "unlabelled.csv", rows=20, seed=8)
    out = tmp_path / "pl.csv"
    rep = pseudo_label_file([tiny_binary_run], data, out, device="cpu", log=None)
    assert rep["task"] == "binary" and rep["rows_written"] == 20 and rep["mean_tie_mass_removed"] > 0
    assert all(r.label is None and r.target[2] == 0.0 for r in read_pairs(out).records)
    # an arena3 run's pseudo-labels keep their tie mass, as before
    rep3 = pseudo_label_file([tiny_run], data, tmp_path / "pl3.csv", device="cpu", log=None)
    assert rep3["task"] == "arena3" and "mean_tie_mass_removed" not in rep3
    assert all(r.target[2] > 0 for r in read_pairs(tmp_path / "pl3.csv").records)
    with pytest.raises(UsageError, match="trained with --task binary"):  # predict --task, checked likewise
        pseudo_label_file([tiny_binary_run], data, tmp_path / "x.csv", task="arena3", device="cpu", log=None)
    assert not (tmp_path / "x.csv").exists()
    mixed = tmp_path / "mixed.csv"
    with pytest.raises(UsageError, match="different tasks"):
        pseudo_label_file([tiny_binary_run, tiny_run], data, mixed, device="cpu", log=None)
    assert not mixed.exists()
