"""Soft labels as a property of records: reading, counting, swapping, pseudo-label round trip."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from src.data.arena import read_pairs
from src.data.records import LABEL_NAMES, PairRecord, swap
from src.data.targets import TEACHER_NAMES, label_kinds, target_of, targets_matrix, teachers_matrix
from src.pref.inference.pseudo_label import pseudo_label_frame, report_path, soft_columns, write_pseudo_labels

REPO = Path(__file__).resolve().parents[1]
HEADER = ["id", "prompt", "response_a", "response_b", *LABEL_NAMES]


def _write(path: Path, rows, header=HEADER) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def _row(i, winners, *extra):
    return [str(i), json.dumps([f"q{i}"]), json.dumps([f"a{i}"]), json.dumps([f"b{i}"]), *winners, *extra]


def test_soft_and_hard_rows_in_one_file_read_with_exact_counts(tmp_path):
    hard = [("1", "0", "0"), ("0", "1", "0"), ("0", "0", "1"), ("0.0", "1.0", "0.0")]
    soft = [("0.7", "0.2", "0.1"), ("0.3333", "0.3333", "0.3334"), ("0", "0.5", "0.5")]
    bad = [("0.7", "0.7", "0.1"), ("1", "1", "0"), ("x", "0", "1")]
    kinds = ["h", "s", "b", "h", "s", "b", "h", "s", "b", "h"]
    it = {"h": iter(hard), "s": iter(soft), "b": iter(bad)}
    rows = [_row(i, next(it[k])) for i, k in enumerate(kinds)]
    res = read_pairs(_write(tmp_path / "mixed.csv", rows))
    rep = res.report()
    assert rep["rows"] == 10 and rep["ok"] == 7 and rep["quarantined"] == 3
    assert rep["label_kinds"] == {"hard": 4, "soft": 3, "unlabelled": 0, "with_teacher": 0}
    assert rep["reasons"] == {"label_not_a_distribution": 3}
    assert sorted(q.id for q in res.quarantine) == ["2", "5", "8"]
    by_id = {r.id: r for r in res.records}
    assert by_id["0"].label == 0 and by_id["0"].target is None
    assert by_id["1"].label is None and by_id["1"].target == pytest.approx((0.7, 0.2, 0.1))
    assert by_id["9"].label == 1
    assert res.has_labels  # soft rows are labelled rows
    t = targets_matrix(res.records)
    np.testing.assert_allclose(t.sum(1), 1.0)
    np.testing.assert_allclose(t[0], [1, 0, 0])


@pytest.mark.slow  # spawns the validate CLI in a child process
def test_validate_cli_reports_hard_and_soft_counts(tmp_path):
    path = _write(tmp_path / "m.csv", [_row(0, ("1", "0", "0")), _row(1, ("0.6", "0.3", "0.1")),
                                       _row(2, ("0.6", "0.6", "0.1"))])
    proc = subprocess.run([sys.executable, "-m", "src.data.validate", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["label_kinds"]["hard"] == 1 and rep["label_kinds"]["soft"] == 1 and rep["quarantined"] == 1


def test_teacher_columns_are_read_and_checked(tmp_path):
    header = HEADER + list(TEACHER_NAMES)
    rows = [_row(0, ("1", "0", "0"), "0.6", "0.3", "0.1"), _row(1, ("0", "1", "0"), "", "", ""),
            _row(2, ("0", "1", "0"), "0.9", "0.9", "0")]
    res = read_pairs(_write(tmp_path / "t.csv", rows, header))
    assert [r.id for r in res.records] == ["0", "1"]
    assert res.quarantine[0].reason == "bad_teacher"
    assert res.records[0].teacher == pytest.approx((0.6, 0.3, 0.1)) and res.records[1].teacher is None
    assert "teacher_a" not in res.records[0].extra
    tm = teachers_matrix(res.records)
    assert np.isnan(tm[1]).all() and tm[0] == pytest.approx([0.6, 0.3, 0.1])
    assert label_kinds(res.records)["with_teacher"] == 1


def test_swap_moves_soft_targets_and_teachers_with_the_sides():
    r = PairRecord("1", ["q"], ["a"], ["b"], target=(0.7, 0.2, 0.1), teacher=(0.5, 0.4, 0.1))
    s = swap(r)
    assert s.target == (0.2, 0.7, 0.1) and s.teacher == (0.4, 0.5, 0.1) and s.label is None
    assert swap(s) == r
    np.testing.assert_allclose(target_of(s), [0.2, 0.7, 0.1])


def test_pseudo_label_output_rereads_as_soft_training_data(tmp_path):
    rng = np.random.default_rng(0)
    recs = [PairRecord(str(i), [f"q {i}", "more"], [f"a {i}"], [f"b {i}, \"quoted\""], model_a="m1")
            for i in range(40)]
    probs = rng.dirichlet([1, 1, 0.3], size=40)
    probs[0] = [1.0, 0.0, 0.0]  # a sure prediction must still come back soft, not as a human label
    probs[1] = [0.9999999, 1e-7, 0.0]
    probs[2] = np.nan  # a row predict could not score
    out = tmp_path / "pl.csv"
    rep = write_pseudo_labels(recs, probs, ["runs/a", "runs/b"], out, min_confidence=0.5)
    back = read_pairs(out)
    kept = [i for i in range(40) if np.isfinite(probs[i]).all() and probs[i].max() >= 0.5]
    assert [r.id for r in back.records] == [str(i) for i in kept]
    assert not back.quarantine
    assert back.report()["label_kinds"] == {"hard": 0, "soft": len(kept), "unlabelled": 0, "with_teacher": 0}
    for r in back.records:
        i = int(r.id)
        assert r.prompt == recs[i].prompt and r.response_b == recs[i].response_b and r.model_a == "m1"
        np.testing.assert_allclose(r.target, probs[i], atol=2e-5)
        assert r.extra["pseudo_label_runs"] == "runs/a;runs/b"
    assert rep["rows_written"] == len(kept) and rep["dropped_no_prediction"] == 1
    assert rep["dropped_below_min_confidence"] == 40 - 1 - len(kept)
    assert json.loads(report_path(out).read_text())["runs"] == ["runs/a", "runs/b"]


def test_soft_columns_never_round_to_one_hot():
    p = soft_columns(np.array([[1.0, 0.0, 0.0], [0.4999996, 0.5000004, 0.0], [1 / 3, 1 / 3, 1 / 3]]))
    assert (p > 0).all() and (p < 1).all()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-9)


def test_min_confidence_out_of_range_is_refused():
    from src.errors import UsageError
    with pytest.raises(UsageError, match="--min-confidence"):
        pseudo_label_frame([], np.zeros((0, 3)), [], min_confidence=1.5)
