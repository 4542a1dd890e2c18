"""Winner and teacher columns: one-hot -> hard, probabilities -> soft, anything else -> quarantine reason."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.data.records import LABEL_NAMES
from src.data.rows import RowError
from src.data.targets import parse_teacher, parse_winner


@pytest.mark.parametrize("cells, label", [(["1", "0", "0"], 0), (["0", "1.0", "0"], 1), (["0.0", "0", "1"], 2)])
def test_one_hot_rows_stay_hard(cells, label):
    assert parse_winner(LABEL_NAMES, cells) == (label, None)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.001, 1.0), min_size=3, max_size=3))
def test_probability_rows_read_as_soft_targets_summing_to_one(raw):
    total = sum(raw)
    cells = [f"{v / total:.6f}" for v in raw]
    label, target = parse_winner(LABEL_NAMES, cells)
    assert label is None
    assert sum(target) == pytest.approx(1.0, abs=1e-12)
    assert all(abs(t - float(c)) < 2e-6 for t, c in zip(target, cells))


@pytest.mark.parametrize("cells, detail", [
    (["0.5", "0.4", "0.2"], "sum to 1.1"),
    (["1.2", "-0.1", "-0.1"], "each must be in [0, 1]"),
    (["0.5", "x", "0.5"], "is not a number"),
    (["nan", "0.5", "0.5"], "is not finite"),
    (["0", "0", "0"], "sum to 0"),
])
def test_anything_else_is_quarantined_with_a_reason(cells, detail):
    with pytest.raises(RowError) as e:
        parse_winner(LABEL_NAMES, cells)
    assert e.value.reason == "label_not_a_distribution" and detail in e.value.detail


def test_sums_within_the_tolerance_are_accepted_and_renormalised():
    _, t = parse_winner(LABEL_NAMES, ["0.3333", "0.3333", "0.3333"])
    assert sum(t) == pytest.approx(1.0)
    with pytest.raises(RowError):
        parse_winner(LABEL_NAMES, ["0.33", "0.33", "0.33"])  # off by 0.01


def test_teacher_columns_empty_means_none_and_bad_ones_are_a_reason():
    assert parse_teacher(["", " ", ""]) is None
    assert parse_teacher(["0.2", "0.7", "0.1"]) == pytest.approx((0.2, 0.7, 0.1))
    assert parse_teacher(["1", "0", "0"]) == (1.0, 0.0, 0.0)  # a one-hot teacher is still a teacher
    with pytest.raises(RowError) as e:
        parse_teacher(["0.2", "", "0.1"])
    assert e.value.reason == "bad_teacher"
