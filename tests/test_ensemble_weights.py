"""Ensemble weights fitted on OOF predictions: never worse than equal weights, refusal of mismatched runs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.data.records import LABEL_NAMES
from src.errors import UsageError
from src.pref.inference.calibration import log_loss
from src.pref.inference.ensemble_weights import align, combine, fit_runs, fit_weights, load_weights_file


def _oof(ids, labels, probs) -> pd.DataFrame:
    df = pd.DataFrame(probs, columns=list(LABEL_NAMES))
    df.insert(0, "id", [str(i) for i in ids])
    df["label"] = labels
    return df


def _runs(k: int, n: int, seed: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    true = rng.dirichlet([2, 2, 1], size=n)
    labels = np.array([rng.choice(3, p=p) for p in true])
    labels[:3] = [0, 1, 2]  # every class present (rows without one are refused)
    out = {}
    for j in range(k):
        noise = rng.uniform(0.1, 3.0)  # runs of different quality
        logits = np.log(true) + noise * rng.normal(size=(n, 3))
        p = np.exp(logits)
        out[f"run{j}"] = _oof(range(n), labels, p / p.sum(1, keepdims=True))
    return out


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 4), n=st.integers(12, 120), seed=st.integers(0, 10_000), temp=st.booleans())
def test_fitted_weights_never_do_worse_on_oof_than_equal_weights(k, n, seed, temp):
    shared = align(_runs(k, n, seed))
    fw = fit_weights(shared, fit_temperature=temp, cross_fit_folds=3)
    assert fw.oof_log_loss <= fw.equal_weights_log_loss + 1e-12
    assert all(w >= 0 for w in fw.weights) and sum(fw.weights) == pytest.approx(1.0)
    # the reported figure is what combine() gives with the fitted weights
    assert log_loss(combine(shared.probs, fw.weights, fw.temperature), shared.labels) == pytest.approx(fw.oof_log_loss)


def test_fit_puts_the_weight_on_the_informative_run():
    rng = np.random.default_rng(0)
    n = 600
    true = rng.dirichlet([2, 2, 1], size=n)
    labels = np.array([rng.choice(3, p=p) for p in true])
    noise = rng.dirichlet([1, 1, 1], size=n)
    shared = align({"good": _oof(range(n), labels, true), "noise": _oof(range(n), labels, noise)})
    fw = fit_weights(shared)
    assert fw.weights[0] > 0.8
    assert fw.oof_log_loss < fw.equal_weights_log_loss - 0.05
    assert fw.cross_fitted_log_loss is not None and fw.cross_fitted_log_loss < fw.equal_weights_log_loss


def test_temperature_undoes_an_overconfident_ensemble():
    rng = np.random.default_rng(1)
    n = 800
    true = rng.dirichlet([2, 2, 1], size=n)
    labels = np.array([rng.choice(3, p=p) for p in true])
    sharp = true ** 3
    sharp /= sharp.sum(1, keepdims=True)
    fw = fit_weights(align({"a": _oof(range(n), labels, sharp)}))
    assert fw.temperature == pytest.approx(3.0, rel=0.25)


def test_runs_whose_oof_rows_differ_are_refused():
    runs = _runs(2, 30, 0)
    other = runs["run1"].iloc[1:]  # one row fewer
    with pytest.raises(UsageError, match="run1: OOF rows do not match run0"):
        align({"run0": runs["run0"], "run1": other})
    relabelled = runs["run1"].copy()
    relabelled.loc[0, "label"] = (relabelled.loc[0, "label"] + 1) % 3
    with pytest.raises(UsageError, match="1 rows have another label"):
        align({"run0": runs["run0"], "run1": relabelled})


def test_row_order_does_not_matter_and_files_round_trip(tmp_path):
    runs = _runs(2, 40, 5)
    dirs = []
    for j, (name, df) in enumerate(runs.items()):
        d = tmp_path / name
        d.mkdir()
        df.sample(frac=1.0, random_state=j).to_csv(d / "oof_predictions.csv", index=False)
        dirs.append(d)
    fw = fit_runs(dirs)
    same = fit_weights(align(runs))
    assert fw.weights == pytest.approx(same.weights, abs=1e-6)
    fw.save(tmp_path / "w.json")
    back = load_weights_file(tmp_path / "w.json", runs=[str(d) for d in dirs])
    assert back.weights == fw.weights and back.temperature == fw.temperature
    with pytest.raises(UsageError, match="2 weights for 3 --run"):
        load_weights_file(tmp_path / "w.json", runs=["a", "b", "c"])


def test_unfinished_oof_is_refused(tmp_path):
    df = _runs(1, 10, 0)["run0"]
    df.loc[3, "winner_tie"] = np.nan
    df.to_csv(tmp_path / "oof_predictions.csv", index=False)
    with pytest.raises(UsageError, match="1 rows without a prediction"):
        fit_runs([tmp_path])
    with pytest.raises(UsageError, match="no out-of-fold predictions"):
        fit_runs([tmp_path / "missing"])


def test_oof_rows_without_a_tie_are_refused_in_one_line():
    """The repro: 58 OOF rows without a tie gave weights [0, 1, 0] and T = 0.05, and the
    submission's mean P(tie) was 0.0002 (~13.8 nats per real tie)."""
    frames = _runs(3, 58, seed=2)
    for df in frames.values():
        df["label"] = df["label"].where(df["label"] != 2, 0)
    with pytest.raises(UsageError) as e:
        fit_weights(align(frames))
    msg = str(e.value)
    assert "\n" not in msg and "run0" in msg and "no tie rows" in msg and "58 OOF rows" in msg


def test_zero_weight_runs_are_not_loaded(monkeypatch):
    """predict_runs skips a run of weight 0 entirely (it cannot change the mixture)."""
    from types import SimpleNamespace
    from src.pref.inference import ensemble as ens
    loaded = []

    def fake_load(path, **kw):
        loaded.append(str(path))
        return SimpleNamespace(prior=np.full(3, 1 / 3), prior_source="test")

    def fake_predict(run, records, **kw):
        p = np.tile([0.5, 0.3, 0.2], (len(records), 1))
        return SimpleNamespace(probs=p, stats={"rows": len(records), "seconds_tokenize": 0.0, "seconds_model": 0.0,
                                               "rows_per_s": 1.0, "model_rows_per_s": 1.0, "pad_fraction": 0.0,
                                               "devices": ["cpu"], "precision": "fp32", "tta": False})

    monkeypatch.setattr(ens, "load_run", fake_load)
    monkeypatch.setattr(ens, "predict_records", fake_predict)
    lines = []
    probs, _, stats = ens.predict_runs(["a", "b", "c"], [object(), object()], weights=[0.0, 1.0, 0.0], log=lines.append)
    assert loaded == ["b"] and len(stats) == 1
    assert np.allclose(probs, [[0.5, 0.3, 0.2]] * 2)
    assert any("weight 0, not computed: a, c" in line for line in lines)
