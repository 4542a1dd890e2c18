"""Ensemble weights (and one temperature) fitted on runs' out-of-fold predictions.

The ensemble is what `predict` computes: the weighted mean of the runs'
probabilities, then one temperature on the mixture, q ~ p ** (1 / T).
`fit_weights` picks non-negative weights (normalised to sum to 1) and T by
minimising the log loss on the OOF rows the runs share. Every run must have
predicted exactly the same rows with the same labels: OOF files of runs
trained on different data or folds are refused, not intersected, since a
partial overlap would fit the weights on a biased slice.

The fit starts from equal weights and T = 1 and keeps the start if the
optimiser does not improve on it, so the fitted weights are never worse on
the OOF rows than equal weights (a property test pins it). That figure is
in-sample; `cross_fitted_log_loss` gives the honest one (weights fitted on
K-1 slices of the OOF rows, scored on the held-out slice).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from ...data.records import LABEL_NAMES
from ...engine.rundir import RunDir
from ...errors import UsageError
from .calibration import CLASS_NAMES, T_MAX, T_MIN, log_loss

T_BOUNDS = (T_MIN, T_MAX)  # the one sane range of a temperature (calibration.py says why)


@dataclass
class SharedOOF:
    names: list[str]
    ids: np.ndarray  # (n,)
    labels: np.ndarray  # (n,) int
    probs: np.ndarray  # (k, n, 3)


@dataclass
class FittedWeights:
    runs: list[str]
    weights: list[float]  # >= 0, sum 1, one per run
    temperature: float
    oof_log_loss: float  # in-sample: fitted on these rows
    equal_weights_log_loss: float
    cross_fitted_log_loss: float | None
    n_rows: int

    def save(self, path: str | os.PathLike) -> None:
        from ...files import atomic_write_text
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")


def load_weights_file(path: str | os.PathLike, runs: Sequence[str] | None = None) -> FittedWeights:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        fw = FittedWeights(**data)
    except FileNotFoundError:
        raise UsageError(f"{p}: no such weights file") from None
    except (json.JSONDecodeError, TypeError) as e:
        raise UsageError(f"{p}: not a weights file written by predict --fit-weights ({e})") from None
    if runs is not None and len(runs) != len(fw.weights):
        raise UsageError(f"{p}: {len(fw.weights)} weights for {len(runs)} --run (fitted on {', '.join(fw.runs)})")
    return fw


def oof_path(run_dir: str | os.PathLike) -> Path:
    candidates = RunDir(run_dir).predictions()  # K-fold run dir, then a hold-out run
    for path in candidates:
        if path.exists():
            return path
    raise UsageError(f"{run_dir}: no out-of-fold predictions ({' or '.join(p.name for p in candidates)}); "
                     "train with --folds K")


def read_oof(run_dir: str | os.PathLike) -> pd.DataFrame:
    path = oof_path(run_dir)
    df = pd.read_csv(path, dtype={"id": str})
    missing = [c for c in ("id", "label", *LABEL_NAMES) if c not in df.columns]
    if missing:
        raise UsageError(f"{path}: missing column(s) {', '.join(missing)}")
    bad = df[list(LABEL_NAMES)].isna().any(axis=1) | df["label"].isna()
    if bad.any():
        raise UsageError(f"{path}: {int(bad.sum())} rows without a prediction or label (an unfinished fold?)")
    return df


def align(frames: Mapping[str, pd.DataFrame]) -> SharedOOF:
    """The runs' OOF rows in one order; refuses runs whose rows or labels differ."""
    names = list(frames)
    if not names:
        raise UsageError("no runs given")
    ref_name, ref = names[0], frames[names[0]]
    if ref["id"].duplicated().any():
        raise UsageError(f"{ref_name}: duplicated ids in its OOF predictions")
    ref_ids = set(ref["id"])
    ordered = []
    for name in names:
        df = frames[name]
        ids = set(df["id"])
        if ids != ref_ids or len(df) != len(ref):
            only_here, only_ref = sorted(ids - ref_ids), sorted(ref_ids - ids)
            raise UsageError(
                f"{name}: OOF rows do not match {ref_name} ({len(only_here)} ids only in {name}, "
                f"{len(only_ref)} only in {ref_name}, e.g. {(only_here or only_ref)[:3]}): "
                "fit weights on runs trained on the same data and folds")
        df = df.set_index("id").loc[ref["id"]]
        if not np.array_equal(df["label"].to_numpy(), ref["label"].to_numpy()):
            n = int((df["label"].to_numpy() != ref["label"].to_numpy()).sum())
            raise UsageError(f"{name}: {n} rows have another label than in {ref_name}")
        ordered.append(df[list(LABEL_NAMES)].to_numpy(dtype=np.float64))
    return SharedOOF(names, ref["id"].to_numpy(), ref["label"].to_numpy(dtype=np.int64), np.stack(ordered))


def combine(probs: np.ndarray, weights: Sequence[float], temperature: float = 1.0) -> np.ndarray:
    """Weighted mean of (k, n, 3) probabilities (ensemble.ensemble, what predict computes),
    then q ~ p ** (1 / T), rows normalised."""
    from .ensemble import ensemble
    try:
        p = ensemble(list(probs), weights)
    except ValueError as e:
        raise UsageError(f"weights must be {probs.shape[0]} finite numbers >= 0, not all 0: {e}") from None
    return temper(p / p.sum(-1, keepdims=True), temperature)


def temper(p: np.ndarray, temperature: float) -> np.ndarray:
    """q ~ p ** (1 / T), the ensemble temperature of a weights file (NaN rows stay NaN)."""
    if temperature == 1.0:
        return p
    z = np.log(np.clip(np.asarray(p, dtype=np.float64), 1e-15, 1.0)) / temperature
    q = np.exp(z - z.max(-1, keepdims=True))
    return q / q.sum(-1, keepdims=True)


def _fit(probs: np.ndarray, labels: np.ndarray, fit_temperature: bool) -> tuple[np.ndarray, float, float]:
    k = probs.shape[0]
    start = np.concatenate([np.full(k, 1.0 / k), [0.0]])  # weights, log T

    def objective(x: np.ndarray) -> float:
        w = np.clip(x[:k], 0.0, None)
        if w.sum() <= 1e-12:
            return 1e9
        return log_loss(combine(probs, w, float(np.exp(x[k])) if fit_temperature else 1.0), labels)

    bounds = [(0.0, 1.0)] * k + ([tuple(np.log(T_BOUNDS))] if fit_temperature else [(0.0, 0.0)])
    best_x, best = start, objective(start)
    if k > 1 or fit_temperature:
        res = minimize(objective, start, method="L-BFGS-B", bounds=bounds)
        if res.fun < best:  # never return something worse than the start (equal weights, T = 1)
            best_x, best = res.x, float(res.fun)
    w = np.clip(best_x[:k], 0.0, None)
    return w / w.sum(), float(np.exp(best_x[k])) if fit_temperature else 1.0, best


def cross_fitted_log_loss(probs: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0,
                          fit_temperature: bool = True) -> float | None:
    """Weights fitted on K-1 random slices of the OOF rows, scored on the slice left out."""
    n = probs.shape[1]
    if n < 2 * folds:
        return None
    order = np.random.default_rng(seed).permutation(n)
    out = np.zeros((n, 3))
    for part in np.array_split(order, folds):
        rest = np.setdiff1d(order, part)
        w, t, _ = _fit(probs[:, rest], labels[rest], fit_temperature)
        out[part] = combine(probs[:, part], w, t)
    return log_loss(out, labels)


def check_every_class(shared: SharedOOF) -> None:
    """Weights and a temperature fitted on OOF rows without a class sharpen away from it:
    fitted on 58 rows without a tie they gave weights [0, 1, 0] and T = 0.05, and the
    submission's mean P(tie) was 0.0002, so each real tie cost ~13.8 nats. Refused."""
    counts = np.bincount(shared.labels, minlength=3)
    missing = [CLASS_NAMES[k] for k in range(3) if counts[k] == 0]
    if missing:
        raise UsageError(f"{shared.names[0]}: its {len(shared.labels)} OOF rows (label counts {counts.tolist()}) hold no "
                         f"{' / '.join(missing)} rows: weights fitted there would sharpen away from that class; "
                         "fit on OOF rows of every class (a K-fold run, --folds K, on more rows)")


def fit_weights(shared: SharedOOF, *, fit_temperature: bool = True, cross_fit_folds: int = 5,
                seed: int = 0) -> FittedWeights:
    check_every_class(shared)
    w, t, loss = _fit(shared.probs, shared.labels, fit_temperature)
    k = shared.probs.shape[0]
    return FittedWeights(
        runs=shared.names, weights=[float(x) for x in w], temperature=t, oof_log_loss=loss,
        equal_weights_log_loss=log_loss(combine(shared.probs, np.ones(k)), shared.labels),
        cross_fitted_log_loss=cross_fitted_log_loss(shared.probs, shared.labels, folds=cross_fit_folds,
                                                    seed=seed, fit_temperature=fit_temperature),
        n_rows=int(shared.probs.shape[1]))


def fit_runs(run_dirs: Sequence[str | os.PathLike], **kw) -> FittedWeights:
    return fit_weights(align({str(d): read_oof(d) for d in run_dirs}), **kw)
