"""The pipeline's one log loss (Kaggle's multi-class metric), below every stage so that
data/ (the synthetic generator's best possible figure), pref/ (training, calibration,
ensemble weights, run comparison) and scripts all score the same way. There were four,
clipping at 1e-15, at the floor, or not at all."""
from __future__ import annotations

import numpy as np


def row_log_losses(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-15) -> np.ndarray:
    """Each row's -log p(label), probabilities clipped to [eps, 1] and renormalised
    (Kaggle clips at 1e-15)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0)
    p = p / p.sum(-1, keepdims=True)
    labels = np.asarray(labels, dtype=np.int64)
    return -np.log(p[np.arange(len(labels)), labels])


def log_loss(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-15) -> float:
    """Kaggle's multi-class log loss: the mean of `row_log_losses`."""
    return float(np.mean(row_log_losses(probs, labels, eps)))


PROB_FLOOR = 1e-6  # what a written probability is never below (a confident miss costs <= 13.8 nats)


def floor_probs(probs: np.ndarray, floor: float = PROB_FLOOR) -> np.ndarray:
    """Every probability >= floor, rows summing to 1; NaN rows stay NaN.
    floor + (1 - k floor) p (k classes) keeps the order of the classes and moves
    a probability by at most k * floor."""
    p = np.asarray(probs, dtype=np.float64)
    p = np.clip(p, 0.0, None)
    p = p / p.sum(-1, keepdims=True)
    return floor + (1.0 - p.shape[-1] * floor) * p
