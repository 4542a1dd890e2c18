"""Logits -> probabilities: swap averaging, temperature, the probability floor, log loss.

`log_loss` / `row_log_losses` (src/metrics.py, re-exported here) are the pipeline's one
log loss. `choose_temperature` decides whether a fitted temperature
replaces T = 1 at all: only when the rows have every class and the temperature,
cross-fitted over prompt groups, beats T = 1 by KEEP_T1_MARGIN; `fit_temperature` is
the bounded fit it builds on.

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

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ...data.records import swap_probs
from ...metrics import PROB_FLOOR, floor_probs, log_loss, row_log_losses  # noqa: F401  (re-exported: the one log loss, the one floor)

# The range a temperature may take. Beyond 5 a 3-class softmax is nearly the uniform
# guess (a T of 7.49 fitted on a 29-row slice made a 0.706 model score 0.948); below
# 0.1 it is nearly an argmax. Either end is a symptom of a slice too small or unlike
# the rest, not a calibration.
T_MIN, T_MAX = 0.1, 5.0
# A fitted temperature replaces T = 1 only when, cross-fitted on the slice (fitted on
# some of its prompt groups, scored on the others), it beats T = 1 by this many nats
# per row: a smaller gain is within what choosing T on the same rows buys by chance.
KEEP_T1_MARGIN = 1e-3
CLASS_NAMES = ("A wins", "B wins", "tie")


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


@dataclass
class TemperatureChoice:
    """The temperature a run keeps and why; `reason` is None when the fitted one is kept.
    Figures are on the rows it was chosen on (`n` rows, `label_counts`)."""
    temperature: float
    fitted: float  # what the bounded fit found on all the rows (kept or not)
    reason: str | None
    n: int
    label_counts: list[int]
    log_loss_t1: float
    log_loss_fitted: float  # in-sample, at `fitted`
    cross_fitted_log_loss: float | None  # each prompt group scored at a T fitted without it
    cross_fitted_log_loss_t1: float | None

    def describe(self) -> str:
        if self.reason is None:
            return f"T = {self.temperature:.3g}"
        return f"T = 1 kept ({self.reason})"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def choose_temperature(ab: np.ndarray, ba: np.ndarray | None, labels: np.ndarray, groups=None, *,
                       folds: int = 5, margin: float = KEEP_T1_MARGIN, seed: int = 0) -> TemperatureChoice:
    """T = 1 unless a temperature fitted on these rows holds up on rows it was not fitted
    on. Kept at 1 when the rows lack a class (a slice without ties would also scale the
    tie logit: its T says nothing about ties), when too few rows per class are left to
    cross-fit, or when the cross-fitted loss (T fitted on the other folds of prompt
    `groups`, stratified by label) is not below T = 1's by `margin`. So the kept T is
    never worse than T = 1 in-sample, by construction, and beat it out of sample."""
    y = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(y, minlength=3)
    t1 = log_loss(average_probs(ab, ba), y)
    fitted = fit_temperature(ab, ba, y) if len(y) else 1.0
    base = dict(fitted=fitted, n=int(len(y)), label_counts=counts.tolist(), log_loss_t1=t1,
                log_loss_fitted=log_loss(average_probs(ab, ba, fitted), y))

    def keep_t1(reason: str, cf=None, cf1=None) -> TemperatureChoice:
        return TemperatureChoice(1.0, reason=reason, cross_fitted_log_loss=cf, cross_fitted_log_loss_t1=cf1, **base)

    missing = [CLASS_NAMES[k] for k in range(3) if counts[k] == 0]
    if missing:
        return keep_t1(f"its {len(y)} rows have no {' / '.join(missing)} rows")
    if fitted == 1.0:
        return keep_t1(f"the fit on its {len(y)} rows does not beat T = 1")
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    k = min(folds, int(counts.min()), len(np.unique(groups)))
    if k < 2:
        return keep_t1(f"{int(counts.min())} {CLASS_NAMES[int(counts.argmin())]} rows are too few to cross-fit")
    held = _cross_fitted_probs(ab, ba, y, groups, k, seed)
    cf, cf1 = log_loss(held, y), t1
    if not cf < cf1 - margin:
        return keep_t1(f"cross-fitted on its {len(y)} rows T gives {cf:.4f} against {cf1:.4f} at T = 1", cf, cf1)
    return TemperatureChoice(fitted, reason=None, cross_fitted_log_loss=cf, cross_fitted_log_loss_t1=cf1, **base)


def _cross_fitted_probs(ab, ba, y, groups, k: int, seed: int) -> np.ndarray:
    """Probabilities of each row at a temperature fitted on the folds without it."""
    import warnings
    from sklearn.model_selection import StratifiedGroupKFold
    out = np.zeros((len(y), 3))
    with warnings.catch_warnings():  # "least populated class has N members": k <= the smallest class already
        warnings.simplefilter("ignore", UserWarning)
        splits = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(
            np.zeros((len(y), 1)), y, groups))
    for fit_rows, score_rows in splits:
        sub_ba = None if ba is None else ba[fit_rows]
        t = fit_temperature(ab[fit_rows], sub_ba, y[fit_rows])
        out[score_rows] = average_probs(ab[score_rows], None if ba is None else ba[score_rows], t)
    return out
