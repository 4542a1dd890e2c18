"""What a pairwise row's label columns mean: a hard label, a soft target, a teacher.

Winner columns (`winner_model_a, winner_model_b, winner_tie`, in that order):

* one-hot (exactly one 1, two 0s) -> a hard label (class index), as before;
* probabilities, each in [0, 1] and summing to 1 within 1e-3 -> a soft target
  (pseudo-labels, ensembles, a judge's probabilities), renormalised to sum 1;
* anything else -> the row is quarantined (`label_not_a_distribution`).

Teacher columns (`teacher_a, teacher_b, teacher_tie`, optional, for
distillation) follow the same probability rule; all three empty means "no
teacher for this row".

A record holds `label` (int) for a hard row, `target` (3 floats) for a soft
one, never both; `target_of` gives every row's distribution.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .rows import RowError

SUM_TOLERANCE = 1e-3
TEACHER_NAMES = ("teacher_a", "teacher_b", "teacher_tie")


def _floats(names: Sequence[str], raw: Sequence[str], reason: str) -> list[float]:
    values = []
    for name, cell in zip(names, raw):
        text = (cell or "").strip()
        try:
            v = float(text)
        except ValueError:
            raise RowError(reason, f"{name}={text!r} is not a number") from None
        if not math.isfinite(v):
            raise RowError(reason, f"{name}={text!r} is not finite")
        values.append(v)
    return values


def _distribution(names: Sequence[str], values: list[float], reason: str) -> tuple[float, float, float]:
    if any(v < 0.0 or v > 1.0 for v in values):
        raise RowError(reason, f"{', '.join(names)} are {values}: each must be in [0, 1]")
    total = sum(values)
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise RowError(reason, f"{', '.join(names)} sum to {total:.6g}, expected 1 (within {SUM_TOLERANCE})")
    return tuple(v / total for v in values)  # type: ignore[return-value]


_ONE_HOT = {("1", "0", "0"): 0, ("0", "1", "0"): 1, ("0", "0", "1"): 2}  # as almost every row spells it


def parse_winner(names: Sequence[str], raw: Sequence[str]) -> tuple[int | None, tuple[float, float, float] | None]:
    """(label, None) for a one-hot row, (None, target) for a soft one; RowError otherwise."""
    hot = _ONE_HOT.get(tuple(raw))  # a dict look-up instead of three float parses per row
    if hot is not None:
        return hot, None
    values = _floats(names, raw, "label_not_a_distribution")
    if sorted(values) == [0.0, 0.0, 1.0]:
        return values.index(1.0), None
    return None, _distribution(names, values, "label_not_a_distribution")


def parse_teacher(raw: Sequence[str]) -> tuple[float, float, float] | None:
    """Teacher probabilities, or None when all three cells are empty."""
    if all(not (c or "").strip() for c in raw):
        return None
    return _distribution(TEACHER_NAMES, _floats(TEACHER_NAMES, raw, "bad_teacher"), "bad_teacher")


def target_of(record) -> np.ndarray:
    """(3,) distribution of one record: one-hot of its label, or its soft target."""
    if record.target is not None:
        return np.asarray(record.target, dtype=np.float64)
    if record.label is None:
        raise ValueError(f"row {record.id} has neither a label nor a soft target")
    return np.eye(3)[record.label]


def targets_matrix(records) -> np.ndarray:
    """(n, 3) target distributions."""
    return np.stack([target_of(r) for r in records]) if records else np.zeros((0, 3))


def teachers_matrix(records) -> np.ndarray:
    """(n, 3) teacher probabilities, NaN rows where a record has no teacher."""
    out = np.full((len(records), 3), np.nan)
    for i, r in enumerate(records):
        if r.teacher is not None:
            out[i] = r.teacher
    return out


def label_kinds(records) -> dict[str, int]:
    """How many rows are hard, soft, unlabelled, and how many carry a teacher."""
    hard = sum(1 for r in records if r.label is not None)
    soft = sum(1 for r in records if r.label is None and r.target is not None)
    return {"hard": hard, "soft": soft, "unlabelled": len(records) - hard - soft,
            "with_teacher": sum(1 for r in records if r.teacher is not None)}
