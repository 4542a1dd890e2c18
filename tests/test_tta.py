"""Gated swap TTA (src/pref/inference/tta.py, predict --tta-budget-minutes): a budget of 0 is
one pass, an unlimited one is full TTA, and in between the least confident rows get both
orders first while every other row keeps its finished first-pass probabilities."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.pref.inference.calibration import average_probs
from src.pref.inference.tta import combine, confidence, gated_swap
from tests.fixtures_pref import write_test_csv  # tiny_run: the session fixture in conftest.py


class FakeClock:
    """Advances one second per chunk predicted: the deadline decides how many chunks run."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 60), st.integers(1, 8), st.integers(0, 12), st.integers(0, 2**31 - 1))
def test_budget_spent_on_least_confident_rows_first(n, chunk, seconds, seed):
    rng = np.random.default_rng(seed)
    ab, ba_all = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    clock = FakeClock()

    def swapped(rows):
        clock.t += 1.0
        return ba_all[rows]
    g = gated_swap(ab, swapped, deadline=float(seconds), chunk_rows=chunk, clock=clock)
    k = min(n, seconds * chunk)
    assert g.swapped.sum() == k
    conf = confidence(ab)
    if 0 < k < n:  # every swapped row is at most as confident as every row left with one order
        assert conf[g.swapped].max() <= conf[~g.swapped].min()
    probs = combine(ab, g)
    np.testing.assert_allclose(probs[g.swapped], average_probs(ab, ba_all)[g.swapped], atol=1e-6)
    # rows the budget did not reach keep the first pass exactly
    np.testing.assert_array_equal(probs[~g.swapped], average_probs(ab, None)[~g.swapped])


def test_zero_and_unlimited_budgets():
    rng = np.random.default_rng(0)
    ab, ba = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    calls = []
    none = gated_swap(ab, lambda r: calls.append(r) or ba[r], deadline=-math.inf)
    assert not calls and not none.swapped.any()
    np.testing.assert_array_equal(combine(ab, none, 1.3), average_probs(ab, None, 1.3))
    full = gated_swap(ab, lambda r: ba[r], deadline=math.inf, chunk_rows=3)
    assert full.swapped.all()
    np.testing.assert_allclose(combine(ab, full, 1.3), average_probs(ab, ba, 1.3), atol=1e-6)


@pytest.mark.slow
def test_predict_budget_zero_is_one_pass_and_unlimited_is_full_tta(tiny_run, tmp_path):
    import json
    from src.predict import main as predict_main
    data = write_test_csv(tmp_path / "test.csv", rows=30)

    def run(*flags):
        out = tmp_path / f"s{len(list(tmp_path.iterdir()))}.csv"
        assert predict_main(["--run", str(tiny_run), "--data", str(data), "--out", str(out), "--no-progress",
                             *flags]) == 0
        probs = np.loadtxt(out, delimiter=",", skiprows=1, usecols=(1, 2, 3))
        return probs, json.loads(out.with_name(out.stem + "_report.json").read_text())
    one, _ = run("--no-tta")
    full, _ = run()
    zero, rep0 = run("--tta-budget-minutes", "0")
    inf, rep_inf = run("--tta-budget-minutes", "1e9")
    assert rep0["tta_rows_both_orders"] == [0] and rep_inf["tta_rows_both_orders"] == [30]
    np.testing.assert_allclose(zero, one, atol=1e-6)
    np.testing.assert_allclose(inf, full, atol=1e-5)
    assert np.abs(full - one).max() > 1e-4  # the two orders do differ: the test could fail
