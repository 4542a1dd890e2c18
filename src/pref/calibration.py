"""Logits -> probabilities: swap averaging, temperature, the probability floor, log loss.

PROB_FLOOR: every probability the pipeline writes (submission.csv,
val_predictions.csv, oof_predictions.csv) is at least 1e-6, renormalised
(`floor_probs`). A model that is sure and wrong then costs at most
-log(1e-6) = 13.8 nats on that row instead of Kaggle's clip at 1e-15 (34.5),
and no written row holds a 4e-16 that a downstream reader may round to 0.
The change to the score of a sensible model is below 1e-5.

The temperature is fitted in a bounded range whose lower end keeps the most
confident validation row above the floor (`temperature_bounds`): on a tiny or
separable validation split the unbounded optimum runs to T -> 0, which turns
every logit gap into probabilities of 0 and 1 for the test rows.
"""
from __future__ import annotations

import math

import numpy as np

from ..data.records import swap_probs

PROB_FLOOR = 1e-6
T_MIN, T_MAX = 0.05, 20.0


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def average_probs(ab: np.ndarray, ba: np.ndarray | None, temperature: float = 1.0) -> np.ndarray:
    """P(A wins | A, B) averaged with P(A wins) read off the swapped pass: the
    result is exactly symmetric under swapping the inputs."""
    p = softmax(ab, temperature)
    if ba is None:
        return p
    return 0.5 * (p + swap_probs(softmax(ba, temperature)))


def floor_probs(probs: np.ndarray, floor: float = PROB_FLOOR) -> np.ndarray:
    """Every probability >= floor, rows summing to 1; NaN rows stay NaN.
    floor + (1 - k floor) p (k classes) keeps the order of the classes and moves
    a probability by at most k * floor."""
    p = np.asarray(probs, dtype=np.float64)
    p = np.clip(p, 0.0, None)
    p = p / p.sum(-1, keepdims=True)
    return floor + (1.0 - p.shape[-1] * floor) * p


def log_loss(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-15) -> float:
    """Kaggle's multi-class log loss (probabilities clipped and renormalised)."""
    p = np.clip(probs, eps, 1 - eps)
    p = p / p.sum(1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(labels)), labels])))


def temperature_bounds(ab: np.ndarray, ba: np.ndarray | None, floor: float = PROB_FLOOR) -> tuple[float, float]:
    """(lowest, highest) temperature to search. The lowest keeps every class of
    every validation row at or above `floor` / 3 before the floor is applied: a
    softmax with logit spread s gives its smallest class at least
    exp(-s / T) / 3, so T >= s / ln(1 / floor)."""
    spreads = [np.ptp(x, axis=-1).max() for x in (ab, ba) if x is not None and len(x)]
    spread = float(max(spreads, default=0.0))
    low = min(max(T_MIN, spread / math.log(1.0 / floor)), T_MAX)
    return low, T_MAX


def fit_temperature(ab: np.ndarray, ba: np.ndarray | None, labels: np.ndarray) -> float:
    """Temperature minimising the log loss of the swap-averaged probabilities,
    within `temperature_bounds` (so it cannot drive a probability to zero)."""
    from scipy.optimize import minimize_scalar
    low, high = temperature_bounds(ab, ba)
    if low >= high:
        return float(high)
    res = minimize_scalar(lambda t: log_loss(average_probs(ab, ba, t), labels), bounds=(low, high),
                          method="bounded", options={"xatol": 1e-4})
    return float(res.x)
