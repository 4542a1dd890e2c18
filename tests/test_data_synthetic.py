"""src.data.synthetic: Kaggle-schema synthetic data whose labels follow known probabilities."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from src.data.arena import read_pairs
from src.data.synthetic import (TIE_NU, bayes_log_loss, davidson_probs, demo_csv, main, make_rows, strength,
                                write_csv)

KAGGLE_TRAIN = ["id", "model_a", "model_b", "prompt", "response_a", "response_b",
                "winner_model_a", "winner_model_b", "winner_tie"]
ONE_HOT = ["winner_model_a", "winner_model_b", "winner_tie"]
P_COLS = ["p_a", "p_b", "p_tie"]


@pytest.fixture(scope="module")
def big() -> pd.DataFrame:
    return make_rows(20_000, seed=2024)


def test_exact_kaggle_schema(big):
    assert list(big.columns) == KAGGLE_TRAIN + P_COLS
    assert big["id"].is_unique
    assert (big[ONE_HOT].sum(axis=1) == 1).all() and big[ONE_HOT].isin([0, 1]).all().all()
    assert (big["model_a"] != big["model_b"]).all()
    for col in ("prompt", "response_a", "response_b"):
        cells = big[col].head(200).map(json.loads)
        assert cells.map(lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v)).all()
    n_turns = big["prompt"].head(500).map(lambda s: len(json.loads(s)))
    assert (n_turns == big["response_a"].head(500).map(lambda s: len(json.loads(s)))).all()
    assert set(n_turns) <= {1, 2, 3} and (n_turns > 1).any()


def test_probabilities_are_valid(big):
    p = big[P_COLS].to_numpy()
    assert (p > 0).all() and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_label_frequencies_match_probabilities(big):
    y = big[ONE_HOT].to_numpy(dtype=float)
    p = big[P_COLS].to_numpy()
    n = len(big)
    se = np.sqrt((p * (1 - p)).sum(axis=0)) / n  # std. error of the mean of one-hot labels
    gap = np.abs(y.mean(axis=0) - p.mean(axis=0))
    assert (gap < 4 * se + 1e-3).all(), (y.mean(axis=0), p.mean(axis=0), se)
    # not degenerate: all three outcomes occur in substantial numbers
    assert (y.mean(axis=0) > 0.1).all()


def test_calibration_by_bins_of_p_a(big):
    p_a = big["p_a"].to_numpy()
    won_a = big["winner_model_a"].to_numpy(dtype=float)
    edges = np.quantile(p_a, np.linspace(0, 1, 11))
    bins = np.clip(np.searchsorted(edges, p_a, side="right") - 1, 0, 9)
    means = []
    for b in range(10):
        m = bins == b
        pred, obs = p_a[m].mean(), won_a[m].mean()
        se = np.sqrt((p_a[m] * (1 - p_a[m])).sum()) / m.sum()
        assert abs(obs - pred) < 4 * se + 0.005, (b, pred, obs, se)
        means.append(obs)
    assert means[-1] - means[0] > 0.4  # p_a really separates the rows


def test_bayes_log_loss_beats_class_prior(big):
    bayes = bayes_log_loss(big)
    prior = big[ONE_HOT].mean().to_numpy()
    y = big[ONE_HOT].to_numpy().argmax(axis=1)
    prior_loss = float(-np.mean(np.log(prior[y])))
    assert bayes < prior_loss - 0.05, (bayes, prior_loss)
    assert 0.3 < bayes < np.log(3)


def test_bayes_log_loss_by_hand():
    df = pd.DataFrame({"p_a": [0.5, 0.2], "p_b": [0.25, 0.7], "p_tie": [0.25, 0.1],
                       "winner_model_a": [1, 0], "winner_model_b": [0, 0], "winner_tie": [0, 1]})
    assert bayes_log_loss(df) == pytest.approx(-(np.log(0.5) + np.log(0.1)) / 2)


def test_davidson_probs():
    p = davidson_probs(0.0, 0.0)
    assert p.sum() == pytest.approx(1.0)
    assert p[0] == pytest.approx(p[1]) == pytest.approx(1 / (2 + TIE_NU))
    strong_a = davidson_probs(3.0, 0.0)
    e3 = np.exp(3.0)
    z = e3 + 1 + TIE_NU * np.sqrt(e3)
    assert np.allclose(strong_a, [e3 / z, 1 / z, TIE_NU * np.sqrt(e3) / z])
    assert strong_a[0] > 0.8 and strong_a[0] > strong_a[2] > strong_a[1]
    assert np.allclose(davidson_probs(1.0, -0.5)[[1, 0, 2]], davidson_probs(-0.5, 1.0))  # symmetric under swap


def test_strength_prefers_relevant_long_structured_answers():
    base = {"words": 60, "rel": 0.5, "struct": 0, "code": 0, "refuse": 0}
    assert strength({**base, "words": 200}) > strength(base)
    assert strength({**base, "rel": 0.9}) > strength(base)
    assert strength({**base, "struct": 1}) > strength(base)
    assert strength({**base, "refuse": 1}) < strength(base)


def test_deterministic_per_seed():
    a, b, c = make_rows(150, seed=5), make_rows(150, seed=5), make_rows(150, seed=6)
    pd.testing.assert_frame_equal(a, b)
    assert not a["response_a"].equals(c["response_a"])
    assert list(make_rows(3, seed=1, id_start=100)["id"]) == [100, 101, 102]


def test_read_pairs_reads_generator_output(tmp_path):
    df = make_rows(300, seed=9)
    path = tmp_path / "train.csv"
    write_csv(df, path)
    res = read_pairs(path)
    assert res.quarantine == [] and len(res.records) == 300
    r0 = res.records[0]
    assert r0.prompt == json.loads(df["prompt"][0]) and r0.response_b == json.loads(df["response_b"][0])
    assert [r.label for r in res.records] == df[ONE_HOT].to_numpy().argmax(axis=1).tolist()
    assert set(r0.extra) == set(P_COLS) and float(r0.extra["p_a"]) == pytest.approx(df["p_a"][0])
    assert r0.model_a == df["model_a"][0]


def test_cli_train_and_test_schema(tmp_path, capsys):
    train, test = tmp_path / "train.csv", tmp_path / "sub" / "test.csv"
    main(["--rows", "120", "--seed", "3", "--out", str(train)])
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 120 and sum(info["labels"].values()) == 120 and 0 < info["bayes_log_loss"] < 1.1
    main(["--rows", "120", "--seed", "3", "--schema", "test", "--out", str(test)])
    capsys.readouterr()
    tdf = pd.read_csv(test)
    assert list(tdf.columns) == ["id", "prompt", "response_a", "response_b"]
    full = pd.read_csv(train)
    assert list(full.columns) == KAGGLE_TRAIN + P_COLS
    pd.testing.assert_frame_equal(tdf, full[["id", "prompt", "response_a", "response_b"]])
    res = read_pairs(test)
    assert res.quarantine == [] and len(res.records) == 120 and not res.has_labels


def test_demo_csv_is_generated_once_then_reused(tmp_path):
    p = demo_csv(rows=50, seed=1, folder=tmp_path / "syn")
    assert p.exists() and p.name == "demo_50_seed1.csv"
    mtime = p.stat().st_mtime_ns
    assert demo_csv(rows=50, seed=1, folder=tmp_path / "syn") == p
    assert p.stat().st_mtime_ns == mtime
    assert len(read_pairs(p).records) == 50
