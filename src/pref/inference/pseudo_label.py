"""Pseudo-labels: an ensemble's probabilities written as a training file.

The output is in the training schema (id, prompt, response_a, response_b,
winner_model_a, winner_model_b, winner_tie, plus model_a/model_b when known)
with the winner columns holding the ensemble + swap-TTA probabilities, so
`read_pairs` reads every row back as a soft target (`data.targets`). The
producing runs are named in a `pseudo_label_runs` column and in the side
report (`<out stem>_report.json`), with the rows kept and dropped by
`--min-confidence` (top probability below it) counted.

Probabilities are clipped to [1e-6, 1] and renormalised before writing: a
rounded 0.9999997 would otherwise be written as 1, 0, 0 and read back as a
hard human label.

Runs trained with `--task binary` write A/B renormalised and a tie column of
exactly 0 (`data.tasks.binary_probs`): their tie output was never trained on a
tie (ties are dropped or split 0.5/0.5), so its mass is no opinion about ties
and must not teach a student, arena3 or binary, to predict them. An arena3
student reading such rows learns A/B only from them; `--min-confidence` then
applies to max(P(A), P(B)). The report says the task and the mean tie mass removed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ...data.records import LABEL_NAMES, PairRecord
from ...errors import UsageError

FLOOR = 1e-5  # with 6 decimals the rounding error (<= 1e-6) cannot push a class to 0 or below
DECIMALS = 6


def soft_columns(probs: np.ndarray, task: str = "arena3") -> np.ndarray:
    """Probabilities safe to write with DECIMALS digits and read back as soft; for
    task binary, P(A) and P(B) renormalised without the tie, which is written as 0."""
    if task == "binary":
        from ...data.tasks import binary_probs
        ab = np.clip(binary_probs(probs), FLOOR, 1.0)
        a = np.round(ab[:, 0] / ab.sum(1), DECIMALS)
        return np.stack([a, np.round(1.0 - a, DECIMALS), np.zeros_like(a)], axis=1)
    p = np.clip(np.asarray(probs, dtype=np.float64), FLOOR, 1.0)
    p = p / p.sum(1, keepdims=True)
    p = np.round(p, DECIMALS)
    p[:, 2] = np.round(1.0 - p[:, 0] - p[:, 1], DECIMALS)  # the written row sums to 1 exactly
    return p


def report_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.stem + "_report.json")


def pseudo_label_frame(records: Sequence[PairRecord], probs: np.ndarray, runs: Sequence[str], *,
                       min_confidence: float = 0.0, task: str = "arena3") -> tuple[pd.DataFrame, dict]:
    from ...data.tasks import binary_probs, check_task
    check_task(task)
    if not 0.0 <= min_confidence <= 1.0:
        raise UsageError(f"--min-confidence must be in [0, 1], got {min_confidence}")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(records), 3):
        raise ValueError(f"{probs.shape} probabilities for {len(records)} rows")
    finite = np.isfinite(probs).all(1)
    safe = np.where(finite[:, None], probs, 1.0)  # non-finite rows are dropped below; no NaN warnings on the way
    scored = binary_probs(safe) if task == "binary" else safe  # confidence in what is written
    confident = finite & (scored.max(1) >= min_confidence)
    keep = np.flatnonzero(confident)
    p = soft_columns(probs[keep], task) if len(keep) else np.zeros((0, 3))
    rows = []
    for j, i in enumerate(keep):
        r = records[i]
        row = {"id": r.id, "model_a": r.model_a or "", "model_b": r.model_b or "",
               "prompt": json.dumps(r.prompt, ensure_ascii=False),
               "response_a": json.dumps(r.response_a, ensure_ascii=False),
               "response_b": json.dumps(r.response_b, ensure_ascii=False)}
        row.update({name: p[j, k] for k, name in enumerate(LABEL_NAMES)})
        rows.append(row)
    columns = ["id", "model_a", "model_b", "prompt", "response_a", "response_b", *LABEL_NAMES]
    df = pd.DataFrame(rows, columns=columns)
    df["pseudo_label_runs"] = ";".join(map(str, runs))
    top = scored[keep].max(1) if len(keep) else np.zeros(0)
    report = {
        "runs": [str(r) for r in runs], "task": task, "rows_predicted": len(records), "rows_written": int(len(keep)),
        "min_confidence": min_confidence,
        "dropped_below_min_confidence": int((finite & ~confident).sum()),
        "dropped_no_prediction": int((~finite).sum()),
        "mean_top_probability": float(top.mean()) if len(top) else None,
        "mean_probabilities": dict(zip(LABEL_NAMES, map(float, p.mean(0)))) if len(keep) else None,
    }
    if task == "binary":  # what the runs' untrained tie output held before it was dropped
        report["mean_tie_mass_removed"] = float(probs[keep, 2].mean()) if len(keep) else None
    return df, report


def write_pseudo_labels(records: Sequence[PairRecord], probs: np.ndarray, runs: Sequence[str],
                        out: str | os.PathLike, *, min_confidence: float = 0.0, extra_report: dict | None = None,
                        task: str = "arena3") -> dict:
    """Write the soft-label CSV and its report; returns the report."""
    from ...files import atomic_write_text
    df, report = pseudo_label_frame(records, probs, runs, min_confidence=min_confidence, task=task)
    report = {"out": str(out), **report, **(extra_report or {})}
    atomic_write_text(out, df.to_csv(index=False, float_format=f"%.{DECIMALS}f"))
    atomic_write_text(report_path(out), json.dumps(report, indent=2) + "\n")
    return report


def pseudo_label_file(runs: Sequence[str | os.PathLike], data: str | os.PathLike, out: str | os.PathLike, *,
                      min_confidence: float = 0.0, weights: Sequence[float] | None = None, temperature: float = 1.0,
                      log=print, task: str | None = None, **predict_kw) -> dict:
    """Predict `data` with the runs' ensemble (+ swap TTA unless tta=False) and write the
    pseudo-labelled training file; rows the reader quarantines are counted, not written."""
    from ...data.arena import read_pairs
    from ..checkpoint import expand_runs
    from .ensemble import predict_runs
    from .ensemble_weights import temper
    from .submission import runs_task
    run_dirs = expand_runs(runs)
    trained_for = runs_task(run_dirs)  # one task for all runs (refused otherwise), before any data is read
    if task is not None and task != trained_for:  # predict --task, as predict_file refuses it
        raise UsageError(f"--task {task}, but the runs were trained with --task {trained_for}")
    task = trained_for
    result = read_pairs(data)
    probs, _, stats = predict_runs(run_dirs, result.records, weights=weights, log=log or (lambda s: None),
                                   **predict_kw)
    probs = temper(probs, temperature)
    report = write_pseudo_labels(result.records, probs, [str(d) for d in run_dirs], out, min_confidence=min_confidence,
                                 task=task,
                                 extra_report={"data": str(data), "rows_read": result.rows,
                                               "rows_quarantined": len(result.quarantine),
                                               "weights": None if weights is None else list(map(float, weights)),
                                               "ensemble_temperature": temperature,
                                               "tta": predict_kw.get("tta", True),
                                               "seconds_model": sum(s.get("seconds_model", 0) for s in stats)})
    if log:
        log(f"[pseudo-label] wrote {out}: {report['rows_written']} of {result.rows} rows "
            f"({report['dropped_below_min_confidence']} below --min-confidence {min_confidence}, "
            f"{len(result.quarantine)} quarantined) from {len(run_dirs)} run(s); report {report_path(out)}")
    return report
