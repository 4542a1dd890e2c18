"""Paired comparison of two sets of fold runs."""
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from src.errors import UsageError
from src.pref.inference.compare import expand_folds, paired, paired_vs_prior, row_losses, split_vs_prior


def _run(tmp_path, name, ids, probs, labels):
    d = tmp_path / name
    d.mkdir()
    f = pd.DataFrame(probs, columns=["winner_model_a", "winner_model_b", "winner_tie"])
    f.insert(0, "id", ids)
    f["label"] = labels
    f.to_csv(d / "val_predictions.csv", index=False)
    (d / "metrics.json").write_text(json.dumps({"val_log_loss": 0.0}))
    return d


def _probs(rng, n):
    p = rng.random((n, 3)) + 0.05
    return p / p.sum(1, keepdims=True)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 40), seed=st.integers(0, 10_000))
def test_paired_difference_is_the_mean_row_difference_whatever_the_row_order(tmp_path_factory, n, seed):
    tmp = tmp_path_factory.mktemp("c")
    rng = np.random.default_rng(seed)
    ids, labels = np.arange(n), rng.integers(0, 3, n)
    pa, pb = _probs(rng, n), _probs(rng, n)
    a = _run(tmp, "a", ids, pa, labels)
    perm = rng.permutation(n)  # B lists the same rows in another order
    b = _run(tmp, "b", ids[perm], pb[perm], labels[perm])
    r = paired([a], [b])
    la = -np.log(pa[np.arange(n), labels])
    lb = -np.log(pb[np.arange(n), labels])
    assert r.n == n
    assert r.diff == pytest.approx((lb - la).mean(), abs=1e-9)
    assert r.se == pytest.approx((lb - la).std(ddof=1) / np.sqrt(n), abs=1e-9)


def test_a_run_against_itself_differs_by_zero(tmp_path):
    rng = np.random.default_rng(0)
    a = _run(tmp_path, "a", np.arange(10), _probs(rng, 10), rng.integers(0, 3, 10))
    r = paired([a], [a])
    assert r.diff == 0.0 and r.se == 0.0 and r.mean_a == r.mean_b


def test_refuses_runs_of_different_folds_or_counts(tmp_path):
    rng = np.random.default_rng(0)
    a = _run(tmp_path, "a", np.arange(10), _probs(rng, 10), np.zeros(10, int))
    b = _run(tmp_path, "b", np.arange(5, 15), _probs(rng, 10), np.zeros(10, int))
    c = _run(tmp_path, "c", np.arange(10), _probs(rng, 10), np.ones(10, int))
    with pytest.raises(UsageError, match="different validation rows"):
        paired([a], [b])
    with pytest.raises(UsageError, match="disagree on labels"):
        paired([a], [c])
    with pytest.raises(UsageError, match="one B run per A run"):
        paired([a, a], [a])


def test_row_losses_floor_a_zero_probability():
    f = pd.DataFrame({"winner_model_a": [0.0], "winner_model_b": [1.0], "winner_tie": [0.0], "label": [0]})
    assert np.isfinite(row_losses(f)).all()


def _with_prior(run, prior):
    (run / "prior.json").write_text(json.dumps({"prior": list(prior), "source": "training rows"}))
    return run


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 30), seed=st.integers(0, 10_000))
def test_against_the_prior_is_the_model_minus_each_folds_own_prior(tmp_path_factory, n, seed):
    tmp = tmp_path_factory.mktemp("p")
    rng = np.random.default_rng(seed)
    runs, want = [], []
    for k in range(2):  # two folds, each with the prior of its own training rows
        labels, p = rng.integers(0, 3, n), _probs(rng, n)
        prior = rng.dirichlet([5, 5, 1])
        runs.append(_with_prior(_run(tmp, f"f{k}", np.arange(k * n, (k + 1) * n), p, labels), prior))
        want.append(-np.log(p[np.arange(n), labels]) + np.log(prior[labels]))
    r = paired_vs_prior(runs)
    d = np.concatenate(want)
    assert r.n == 2 * n
    assert r.diff == pytest.approx(d.mean(), abs=1e-9)
    assert r.se == pytest.approx(d.std(ddof=1) / np.sqrt(2 * n), abs=1e-9)


def test_a_kfold_folder_stands_for_its_folds_in_order(tmp_path):
    rng = np.random.default_rng(1)
    root_a, root_b = tmp_path / "a", tmp_path / "b"
    root_a.mkdir(), root_b.mkdir()
    for k in range(11):  # fold10 sorts after fold9, not after fold1
        ids, labels = np.arange(k * 4, k * 4 + 4), rng.integers(0, 3, 4)
        _run(root_a, f"fold{k}", ids, _probs(rng, 4), labels)
        _run(root_b, f"fold{k}", ids, _probs(rng, 4), labels)
    folds_a = [root_a / f"fold{k}" for k in range(11)]
    assert expand_folds([root_a]) == folds_a
    by_root, by_folds = paired([root_a], [root_b]), paired(folds_a, [root_b / f"fold{k}" for k in range(11)])
    assert by_root.n == 44
    assert (by_root.diff, by_root.se) == (by_folds.diff, by_folds.se)


def test_against_the_prior_needs_the_runs_prior_json(tmp_path):
    rng = np.random.default_rng(0)
    run = _run(tmp_path, "old", np.arange(5), _probs(rng, 5), rng.integers(0, 3, 5))
    with pytest.raises(UsageError, match=r"old: no prior\.json"):
        paired_vs_prior([run])


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 30), seed=st.integers(0, 10_000))
def test_the_two_parts_of_the_gain_over_the_prior_sum_to_it(tmp_path_factory, n, seed):
    tmp = tmp_path_factory.mktemp("s")
    rng = np.random.default_rng(seed)
    run = _with_prior(_run(tmp, "r", np.arange(n), _probs(rng, n), rng.integers(0, 3, n)), rng.dirichlet([5, 5, 1]))
    total, parts = paired_vs_prior([run]), split_vs_prior([run])
    assert parts.n == total.n == n
    assert parts.tie + parts.ab == pytest.approx(total.diff, abs=1e-9)


def test_only_telling_a_from_b_earns_the_ab_part(tmp_path):
    rng = np.random.default_rng(3)
    n, p_tie = 40, 0.1
    labels = rng.integers(0, 2, n)  # no ties
    even = np.tile([(1 - p_tie) / 2, (1 - p_tie) / 2, p_tie], (n, 1))
    knows = even.copy()  # the same P(tie), and 0.7 of the rest on the true winner
    knows[np.arange(n), labels] = 0.7 * (1 - p_tie)
    knows[np.arange(n), 1 - labels] = 0.3 * (1 - p_tie)
    prior = [0.45, 0.45, 0.1]
    s_even = split_vs_prior([_with_prior(_run(tmp_path, "even", np.arange(n), even, labels), prior)])
    s_knows = split_vs_prior([_with_prior(_run(tmp_path, "knows", np.arange(n), knows, labels), prior)])
    assert s_even.ab == 0.0 and s_even.tie == pytest.approx(0.0, abs=1e-12)  # even at the prior's P(tie)
    assert s_knows.tie == s_even.tie
    assert s_knows.ab == pytest.approx(-np.log(0.7 / 0.5), abs=1e-9)
