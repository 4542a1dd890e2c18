"""Fold averaging (src/pref/modeling/average.py, predict --average-folds): the mean of the
tensors, identical folds average to the fold itself (same weights, same predictions),
and runs that cannot be averaged are refused in one line with nothing written."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from src.errors import UsageError
from src.pref.modeling.average import average_state_dicts
from tests.fixtures_pref import write_test_csv  # tiny_run: the session fixture in conftest.py


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_average_is_the_elementwise_mean_and_identity_on_copies(k, seed):
    g = torch.Generator().manual_seed(seed)
    states = [{"w": torch.randn(3, 4, generator=g), "h": torch.randn(5, generator=g).to(torch.bfloat16),
               "pos": torch.arange(6)} for _ in range(k)]
    avg = average_state_dicts(states)
    torch.testing.assert_close(avg["w"], torch.stack([s["w"] for s in states]).mean(0))
    assert avg["h"].dtype == torch.bfloat16 and torch.equal(avg["pos"], torch.arange(6))
    same = average_state_dicts([states[0]] * 3)
    assert all(torch.equal(same[n], states[0][n]) for n in states[0])


def test_mismatched_runs_are_refused():
    a = {"w": torch.zeros(2, 2), "pos": torch.arange(3)}
    with pytest.raises(UsageError, match="other tensors"):
        average_state_dicts([a, {"w": torch.zeros(2, 2)}])
    with pytest.raises(UsageError, match="shapes"):
        average_state_dicts([a, {"w": torch.zeros(3, 2), "pos": torch.arange(3)}])
    with pytest.raises(UsageError, match="integer tensor pos differs"):
        average_state_dicts([a, {"w": torch.zeros(2, 2), "pos": torch.arange(1, 4)}])


@pytest.mark.slow
def test_averaged_identical_folds_predict_as_each_fold(tiny_run, tmp_path, capsys):
    from src.predict import main as predict_main
    cv = tmp_path / "cv"
    for k in range(2):  # two identical "folds"
        shutil.copytree(tiny_run, cv / f"fold{k}")
    avg = tmp_path / "avg"
    assert predict_main(["--average-folds", str(avg), "--run", str(cv)]) == 0
    data = write_test_csv(tmp_path / "test.csv", rows=20)
    outs = {}
    for name, run in (("fold", cv / "fold0"), ("avg", avg)):
        out = tmp_path / f"{name}.csv"
        assert predict_main(["--run", str(run), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
        outs[name] = np.loadtxt(out, delimiter=",", skiprows=1, usecols=(1, 2, 3))
    np.testing.assert_array_equal(outs["avg"], outs["fold"])
    # a second average onto the same folder is refused, and leaves it as it was
    before = sorted(p.name for p in avg.rglob("*"))
    assert predict_main(["--average-folds", str(avg), "--run", str(cv)]) == 2
    assert "exists" in capsys.readouterr().err and sorted(p.name for p in avg.rglob("*")) == before
