"""Compare two sets of runs on the validation rows they share: per fold and paired.

Two CV results a few thousandths apart on 753 rows per fold are usually noise;
the paired per-row difference (same rows, same labels) has a far smaller
standard error than either figure alone, so it is what decides "better".
Reads each run's metrics.json (calibrated and uncalibrated figures) and
val_predictions.csv (the calibrated probabilities, one row per validation id).
A K-fold run's folder (`--folds K`, all folds) stands for its folds, in order.

The class prior is a baseline of its own (`paired_vs_prior`): each run's prior.json,
the label shares of the rows it trained on, predicted for every validation row. "Does
the model beat knowing only how often A, B and ties win?" is the first question on a
few hundred rows, and the per-fold prior differs with the fold's training rows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...data.records import LABEL_NAMES
from ...engine.rundir import RunDir
from ...errors import UsageError
from .calibration import PROB_FLOOR, row_log_losses

@dataclass
class Paired:
    n: int
    mean_a: float
    mean_b: float
    diff: float  # mean over rows of loss_b - loss_a (negative: b is better)
    se: float    # standard error of that mean


def row_losses(frame: pd.DataFrame) -> np.ndarray:
    """Per-row log loss, clipped at the floor every written file already carries."""
    return row_log_losses(frame[list(LABEL_NAMES)].to_numpy(float), frame["label"].to_numpy(int), eps=PROB_FLOOR)


def _val_predictions(run: str | Path) -> pd.DataFrame:
    path = RunDir(run).val_predictions
    if not path.is_file():
        raise UsageError(f"{run}: no {path.name} (not a finished single-split or fold run)")
    return pd.read_csv(path)


def expand_folds(runs: list[str | Path]) -> list[Path]:
    """Each run as given, except a K-fold run's folder, which becomes its fold folders in order."""
    out = []
    for run in runs:
        rd = RunDir(run)
        folds = rd.folds()
        out += [f.root for f in folds] if folds and not rd.val_predictions.is_file() else [Path(run)]
    return out


def prior_predictions(run: str | Path) -> pd.DataFrame:
    """The run's validation rows with its class prior (prior.json) as every row's prediction."""
    frame, path = _val_predictions(run), RunDir(run).prior
    if not path.is_file():  # ensemble.run_prior falls back to other sources; a baseline must be this exact one
        raise UsageError(f"{run}: no {path.name} (a run trained before the prior was recorded)")
    prior = np.asarray(json.loads(path.read_text(encoding="utf-8"))["prior"], dtype=np.float64)
    frame[list(LABEL_NAMES)] = np.tile(prior / prior.sum(), (len(frame), 1))
    return frame


def paired(runs_a: list[str | Path], runs_b: list[str | Path]) -> Paired:
    """Per-row calibrated log loss of B minus A over all folds; fold i of A pairs with fold i of B."""
    runs_a, runs_b = expand_folds(runs_a), expand_folds(runs_b)
    return _paired_frames([(str(a), _val_predictions(a)) for a in runs_a],
                          [(str(b), _val_predictions(b)) for b in runs_b])


def paired_vs_prior(runs: list[str | Path]) -> Paired:
    """Per-row calibrated log loss of the runs minus that of each run's own class prior."""
    runs = expand_folds(runs)
    return _paired_frames([(f"{r} prior", prior_predictions(r)) for r in runs],
                          [(str(r), _val_predictions(r)) for r in runs])


@dataclass
class PriorSplit:
    """A run's gain over its class prior in two parts that sum to it (per-row means, 1 s.e.):
    `tie`: the prior -> the run's own P(tie) per row with the rest split evenly between A and B
    (what knowing which rows tie earns); `ab`: the rest (what telling A from B earns)."""
    n: int
    tie: float
    tie_se: float
    ab: float
    ab_se: float


def split_vs_prior(runs: list[str | Path]) -> PriorSplit:
    """On a few hundred pairs whose ties cluster by source, a model can beat the prior by learning
    which rows never tie without judging A against B at all; this says which of the two it did."""
    runs = expand_folds(runs)
    tie_parts, ab_parts = [], []
    for r in runs:
        model, prior = _val_predictions(r), prior_predictions(r)
        even = model.copy()
        p_tie = model[LABEL_NAMES[2]].to_numpy(float)
        even[LABEL_NAMES[0]] = even[LABEL_NAMES[1]] = (1.0 - p_tie) / 2
        tie_parts.append(row_losses(even) - row_losses(prior))
        ab_parts.append(row_losses(model) - row_losses(even))
    t, a = np.concatenate(tie_parts), np.concatenate(ab_parts)
    return PriorSplit(n=len(t), tie=float(t.mean()), tie_se=standard_error(t),
                      ab=float(a.mean()), ab_se=standard_error(a))


def standard_error(d: np.ndarray) -> float:
    """Standard error of the mean of per-row differences (nan for one row)."""
    return float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


def _paired_frames(frames_a: list[tuple[str, pd.DataFrame]], frames_b: list[tuple[str, pd.DataFrame]]) -> Paired:
    if len(frames_a) != len(frames_b) or not frames_a:
        raise UsageError(f"compare: {len(frames_a)} runs against {len(frames_b)}: give one B run per A run "
                         "(fold by fold)")
    la, lb = [], []
    for (a, fa), (b, fb) in zip(frames_a, frames_b):
        if sorted(fa["id"].astype(str)) != sorted(fb["id"].astype(str)):
            raise UsageError(f"compare: {a} and {b} were scored on different validation rows (not the same fold)")
        fb = fb.set_index(fb["id"].astype(str)).loc[fa["id"].astype(str)].reset_index(drop=True)
        if not np.array_equal(fa["label"].to_numpy(), fb["label"].to_numpy()):
            raise UsageError(f"compare: {a} and {b} disagree on labels of the same ids")
        la.append(row_losses(fa))
        lb.append(row_losses(fb))
    a, b = np.concatenate(la), np.concatenate(lb)
    d = b - a
    return Paired(n=len(d), mean_a=float(a.mean()), mean_b=float(b.mean()), diff=float(d.mean()),
                  se=standard_error(d))


def fold_figures(run: str | Path) -> dict:
    """The figures metrics.json names (calibrated, uncalibrated, accuracy, rows, seconds)."""
    m = json.loads(RunDir(run).metrics.read_text(encoding="utf-8"))
    keys = ["val_log_loss", "val_log_loss_uncalibrated", "val_accuracy", "n_train", "n_val", "train_seconds"]
    return {k: m.get(k) for k in keys}
