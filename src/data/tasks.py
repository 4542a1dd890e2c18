"""Competition task formats: the one owner of what `--task arena3|binary` changes.

* `arena3` (LMSYS 2024, today's default): A wins / B wins / tie, scored by log loss;
  submission `id,winner_model_a,winner_model_b,winner_tie`.
* `binary` (WSDM Cup 2025 "Multilingual Chatbot Arena", reward-model benchmarks):
  A or B, scored by accuracy (log loss reported beside it); submission `id,winner`
  with `model_a` / `model_b`.

The model keeps its three outputs in both tasks (a checkpoint of either task can
warm-start the other); binary probabilities are P(A) and P(B) renormalised
without the tie class (`binary_probs`). Why not a 2-way head: the 1st-place
WSDM student trained on pseudo-labels of older LMSYS rows *with* ties, so the
tie logit is worth keeping; what binary changes is which rows train (ties
dropped or split 0.5/0.5, `--ties`) and what is scored and written.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Sequence

import numpy as np

from .records import TIE, PairRecord

TASKS = ("arena3", "binary")
TIE_MODES = ("drop", "soft")
BINARY_HEADER = ("id", "winner")
BINARY_WINNERS = ("model_a", "model_b")
# Soft binary target of a tie: half to each side and nothing to the tie class, so
# the binary task's model is never taught to put mass where no row is scored.
SOFT_TIE = (0.5, 0.5, 0.0)
EPS = 1e-15
# What a sweep minimises when its YAML names no `study: metric` (src/tune/space.py). binary:
# the binary log loss, not the competition's error rate (1 - accuracy): on the few hundred
# validation rows a sweep trial affords, the error moves in steps of 1/n, so trials tie and
# the median pruner compares noise; the log loss is smooth and still ranks A-vs-B confidence.
# Set `study: {metric: val_binary_error}` to select on the leaderboard's figure itself.
SWEEP_METRICS = {"arena3": "val_log_loss", "binary": "val_binary_log_loss"}


def check_task(task: str) -> str:
    from ..errors import UsageError
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    return task


def is_tie(record: PairRecord) -> bool:
    """A hard tie label, or a soft target whose largest class is the tie."""
    if record.label is not None:
        return record.label == TIE
    return record.target is not None and int(np.argmax(record.target)) == TIE


def training_records(records: Sequence[PairRecord], task: str, ties: str) -> tuple[list[PairRecord], dict]:
    """The rows a `task` run trains and validates on, and the count for data_report.json.

    arena3 keeps every row. binary with `ties="drop"` drops hard ties (WSDM's training
    data has none); `ties="soft"` turns them into the soft target SOFT_TIE, which
    trains but is never scored (validation scores hard rows only). A soft row whose
    target has tie mass is renormalised onto A/B (dropped when it is all tie)."""
    check_task(task)
    if ties not in TIE_MODES:
        from ..errors import UsageError
        raise UsageError(f"unknown ties mode {ties!r}: expected one of {', '.join(TIE_MODES)}")
    if task == "arena3":
        return list(records), {"task": task, "rows": len(records)}
    out: list[PairRecord] = []
    counts = Counter()
    for r in records:
        if r.label is not None and r.label != TIE:
            out.append(r)
        elif r.label == TIE:
            counts["ties_dropped" if ties == "drop" else "ties_softened"] += 1
            if ties == "soft":
                out.append(dataclasses.replace(r, label=None, target=SOFT_TIE))
        elif r.target is not None:
            a, b, _ = r.target
            if a + b <= EPS:
                counts["soft_all_tie_dropped"] += 1
                continue
            counts["soft_tie_mass_moved"] += int(r.target[TIE] > 0)
            out.append(dataclasses.replace(r, target=(a / (a + b), b / (a + b), 0.0)))
        else:
            out.append(r)  # unlabelled: the caller refuses these with its own message
    return out, {"task": task, "ties": ties, "rows_in": len(records), "rows_kept": len(out),
                 **{k: counts[k] for k in ("ties_dropped", "ties_softened", "soft_all_tie_dropped",
                                           "soft_tie_mass_moved")}}


def binary_probs(probs: np.ndarray) -> np.ndarray:
    """(n, 2) P(A), P(B) renormalised without the tie class (NaN rows stay NaN)."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1, 3)[:, :2]
    return p / np.clip(p.sum(1, keepdims=True), EPS, None)


def binary_metrics(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy and binary log loss on rows whose label is A or B (ties and -1 skipped).
    A row with P(A) == P(B) counts as a miss half the time would be arbitrary: argmax
    picks A, as the submission does."""
    y = np.asarray(labels)
    keep = (y == 0) | (y == 1)
    if not keep.any():
        return {"rows": 0, "accuracy": None, "log_loss": None}
    p = binary_probs(probs)[keep]
    yk = y[keep]
    picked = np.clip(p[np.arange(len(yk)), yk], EPS, 1.0)
    return {"rows": int(keep.sum()), "accuracy": float((p.argmax(1) == yk).mean()),
            "log_loss": float(-np.log(picked).mean())}


def task_metrics(task: str, probs: np.ndarray, labels: np.ndarray) -> dict:
    """The task's own figures: 3-class log loss/accuracy for arena3, binary ones for binary."""
    from ..metrics import floor_probs, log_loss
    y = np.asarray(labels)
    ok = (y >= 0) & np.isfinite(np.asarray(probs)).all(1)
    if task == "binary":
        return binary_metrics(np.asarray(probs)[ok], y[ok])
    if not ok.any():
        return {"rows": 0, "accuracy": None, "log_loss": None}
    p = np.asarray(probs)[ok]
    return {"rows": int(ok.sum()), "accuracy": float((p.argmax(1) == y[ok]).mean()),
            "log_loss": log_loss(floor_probs(p), y[ok])}


def per_language(task: str, records: Sequence[PairRecord], probs: np.ndarray, labels: np.ndarray) -> dict:
    """{language: task metrics} over the rows that carry a language (empty when none does);
    rows without one are grouped under "unknown" only when some other row has one."""
    langs = [r.language for r in records]
    if not any(langs):
        return {}
    out = {}
    names = np.array([lang or "unknown" for lang in langs])
    for lang in sorted(set(names)):
        m = names == lang
        out[lang] = task_metrics(task, np.asarray(probs)[m], np.asarray(labels)[m])
    return out


def binary_winners(probs: np.ndarray) -> list[str]:
    """The binary submission's `winner` cell per row: model_a unless P(B) > P(A)."""
    p = binary_probs(probs)
    return [BINARY_WINNERS[int(p[i, 1] > p[i, 0])] for i in range(len(p))]
