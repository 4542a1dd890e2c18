"""Compare two sets of runs on the validation rows they share: per fold and paired.

Two CV results a few thousandths apart on 753 rows per fold are usually noise;
the paired per-row difference (same rows, same labels) has a far smaller
standard error than either figure alone, so it is what decides "better".
Reads each run's metrics.json (calibrated and uncalibrated figures) and
val_predictions.csv (the calibrated probabilities, one row per validation id).
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


def paired(runs_a: list[str | Path], runs_b: list[str | Path]) -> Paired:
    """Per-row calibrated log loss of B minus A over all folds; fold i of A pairs with fold i of B."""
    if len(runs_a) != len(runs_b) or not runs_a:
        raise UsageError(f"compare: {len(runs_a)} runs against {len(runs_b)}: give one B run per A run (fold by fold)")
    la, lb = [], []
    for a, b in zip(runs_a, runs_b):
        fa, fb = _val_predictions(a), _val_predictions(b)
        if sorted(fa["id"].astype(str)) != sorted(fb["id"].astype(str)):
            raise UsageError(f"compare: {a} and {b} were scored on different validation rows (not the same fold)")
        fb = fb.set_index(fb["id"].astype(str)).loc[fa["id"].astype(str)].reset_index(drop=True)
        if not np.array_equal(fa["label"].to_numpy(), fb["label"].to_numpy()):
            raise UsageError(f"compare: {a} and {b} disagree on labels of the same ids")
        la.append(row_losses(fa))
        lb.append(row_losses(fb))
    a, b = np.concatenate(la), np.concatenate(lb)
    d = b - a
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return Paired(n=len(d), mean_a=float(a.mean()), mean_b=float(b.mean()), diff=float(d.mean()), se=se)


def fold_figures(run: str | Path) -> dict:
    """The figures metrics.json names (calibrated, uncalibrated, accuracy, rows, seconds)."""
    m = json.loads(RunDir(run).metrics.read_text(encoding="utf-8"))
    keys = ["val_log_loss", "val_log_loss_uncalibrated", "val_accuracy", "n_train", "n_val", "train_seconds"]
    return {k: m.get(k) for k in keys}
