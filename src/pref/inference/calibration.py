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

That guard is against SHARPENING a model into the floor. Rows that are at the
floor already at T = 1 (logit spread above ln(1 / floor)) are left out of it:
whatever a T <= 1 does to them, their written probabilities stay at the floor,
and letting one of them veto every temperature below its own limit lets one
outlier decide the calibration of all rows. So the lower end is never above 1,
T = 1 (the model as trained) is always a candidate, and the fit is never worse
than T = 1 on the rows it is fitted on. (It once was: a tiny-llama LoRA run had
one validation row with a logit spread of 45, whose bound T >= 45 / ln(1e6) =
3.26 shut out T = 1 and the sharpening the other rows needed, so the "fitted"
temperature softened every row and scored 0.8728 against 0.6968 at T = 1 on the
very rows it was fitted on.)
"""
from __future__ import annotations

import math

import numpy as np

from ...data.records import swap_probs

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
    every row that is above the floor at T = 1 at or above `floor` / 3 before the
    floor is applied: a softmax with logit spread s gives its smallest class at
    least exp(-s / T) / 3, so T >= s / ln(1 / floor) <= 1 for those rows. Rows with
    a larger spread are at the floor already at T = 1 and do not count; when every
    row is, no sharpening at all (lowest = 1)."""
    limit = math.log(1.0 / floor)
    spreads = np.concatenate([np.ptp(np.asarray(x, dtype=np.float64), axis=-1).ravel()
                              for x in (ab, ba) if x is not None and len(x)] or [np.zeros(0)])
    inside = spreads[spreads <= limit]
    if len(spreads) and not len(inside):
        return 1.0, T_MAX
    spread = float(inside.max()) if len(inside) else 0.0
    return max(T_MIN, spread / limit), T_MAX


def fit_temperature(ab: np.ndarray, ba: np.ndarray | None, labels: np.ndarray) -> float:
    """Temperature minimising the log loss of the swap-averaged probabilities,
    within `temperature_bounds` (so it cannot drive a probability to zero).
    Never worse than T = 1 on these rows: the swap average of two softmaxes is not
    convex in 1/T, so Brent's bounded search can stop in a worse local minimum;
    T = 1 is then kept."""
    from scipy.optimize import minimize_scalar
    low, high = temperature_bounds(ab, ba)

    def loss(t: float) -> float:
        return log_loss(average_probs(ab, ba, t), labels)

    res = minimize_scalar(loss, bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    return float(res.x) if loss(float(res.x)) < loss(1.0) else 1.0
