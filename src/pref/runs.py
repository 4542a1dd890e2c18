"""A table of classifier runs: what a user opens five JSON files for, on one screen.

    python -m src.runs runs/                 # every run under runs/ (fold dirs of a CV run fold into one row)
    python -m src.runs runs/a runs/b --csv runs.csv --best

One row per run dir (a K-fold run dir is one row; its fold<k>/ runs are read
for the pooled figures): model, data, folds, calibrated and uncalibrated
validation log loss (a CV run: pooled over its out-of-fold rows), accuracy,
rows scored, training minutes, peak memory, and how its config differs from
the first run's. Only reads; a dir that holds no finished run is listed with
its state (`unfinished`, `no metrics`) instead of being skipped.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..config import load_yaml
from ..engine.rundir import CONFIG, METRICS, RunDir
from ..errors import UsageError

IGNORED_IN_DIFF = {"out", "resume", "stop_after_steps", "fold"}  # where/how a run was started, not what it is


def find_runs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Run dirs named, or found one level below a folder of runs (runs/), in name order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise UsageError(f"{p}: no such run dir")
        if (p / CONFIG).exists():
            out.append(p)
            continue
        found = sorted(d for d in p.iterdir() if d.is_dir() and (d / CONFIG).exists())
        if not found:
            raise UsageError(f"{p}: holds no run (no {CONFIG} in it or in its sub-folders)")
        out += found
    return out


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config sections (train:, lora:) as dotted keys: a flat and a sectioned config compare."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, ""))  # section names are not part of a field's identity
        else:
            out[prefix + k] = v
    return out


def config_diff(base: dict, cfg: dict) -> str:
    """'lr 2e-05->0.0001, max_len 128->256': the fields that differ, in the run's field order."""
    a, b = _flat(base), _flat(cfg)
    keys = [k for k in list(b) + [k for k in a if k not in b] if k not in IGNORED_IN_DIFF]
    return ", ".join(f"{k} {a.get(k)}->{b.get(k)}" for k in dict.fromkeys(keys) if a.get(k) != b.get(k))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pooled(folds: list[dict], key: str) -> float | None:
    """A fold-weighted mean: log loss and accuracy are means over rows, so weighting each
    fold's figure by its row count gives exactly the figure over all out-of-fold rows."""
    pairs = [(m.get(key), m.get("n_val")) for m in folds]
    if not pairs or any(v is None or not n for v, n in pairs):
        return None
    return sum(v * n for v, n in pairs) / sum(n for _, n in pairs)


def describe(run: Path) -> dict[str, Any]:
    """One row of the table for one run dir."""
    cfg = load_yaml(run / CONFIG)
    flat = _flat(cfg)
    row: dict[str, Any] = {"run": str(run), "model": flat.get("model"), "data": Path(str(flat.get("data") or "synthetic")).name,
                           "arch": flat.get("arch"), "folds": None, "val_log_loss": None,
                           "val_log_loss_uncalibrated": None, "val_accuracy": None, "rows": None, "minutes": None,
                           "peak_gib": None, "state": "done"}
    fold_dirs = sorted((d for d in run.glob("fold*") if d.is_dir()), key=lambda d: (len(d.name), d.name))
    metrics = _read_json(run / METRICS)
    if fold_dirs:
        folds = [m for m in (_read_json(d / METRICS) for d in fold_dirs) if m is not None]
        k = flat.get("folds") or len(fold_dirs)
        row["folds"] = f"{len(folds)}/{k}"
        if folds:
            row["val_log_loss"] = (metrics or {}).get("cv_log_loss", _pooled(folds, "val_log_loss"))
            row["val_log_loss_uncalibrated"] = _pooled(folds, "val_log_loss_uncalibrated")
            row["val_accuracy"] = (metrics or {}).get("cv_accuracy", _pooled(folds, "val_accuracy"))
            row["rows"] = sum(m.get("n_val", 0) for m in folds)
            row["minutes"] = sum(m.get("train_seconds", 0.0) for m in folds) / 60
            row["peak_gib"] = max(m.get("peak_rss_mb", 0.0) for m in folds) / 1024
        if metrics is None:
            row["state"] = f"unfinished ({len(folds)} of {k} folds)"
        return row
    if flat.get("folds") and flat.get("fold") is not None and flat.get("fold", -1) >= 0:
        row["folds"] = f"fold {flat['fold']}/{flat['folds']}"
    if metrics is None:
        row["state"] = "unfinished" if RunDir(run).checkpoint.exists() else "no metrics"
        return row
    row.update(val_log_loss=metrics.get("val_log_loss"), val_log_loss_uncalibrated=metrics.get("val_log_loss_uncalibrated"),
               val_accuracy=metrics.get("val_accuracy"), rows=metrics.get("n_val"),
               minutes=(metrics["train_seconds"] / 60) if "train_seconds" in metrics else None,
               peak_gib=(metrics["peak_rss_mb"] / 1024) if "peak_rss_mb" in metrics else None)
    return row


def runs_table(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    runs = find_runs(paths)
    rows = [describe(r) for r in runs]
    base = load_yaml(runs[0] / CONFIG)
    for r, row in zip(runs, rows):
        row["differs_from_first"] = config_diff(base, load_yaml(r / CONFIG)) if r != runs[0] else "(first)"
    return pd.DataFrame(rows)


def best_run(table: pd.DataFrame, metric: str = "val_log_loss") -> str | None:
    """The finished run with the lowest calibrated validation log loss (None when none finished).
    Figures on different rows are not comparable: callers say so when `rows` differ."""
    done = table[table["state"].eq("done") & table[metric].notna()]
    if done.empty:
        return None
    return str(done.loc[done[metric].idxmin(), "run"])


def format_table(table: pd.DataFrame) -> str:
    def num(v, fmt):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)
    shown = table.assign(**{
        "val_log_loss": [num(v, ".4f") for v in table["val_log_loss"]],
        "val_log_loss_uncalibrated": [num(v, ".4f") for v in table["val_log_loss_uncalibrated"]],
        "val_accuracy": [num(v, ".3f") for v in table["val_accuracy"]],
        "minutes": [num(v, ".1f") for v in table["minutes"]],
        "peak_gib": [num(v, ".2f") for v in table["peak_gib"]],
        "rows": [num(v, ".0f") for v in table["rows"]],
    }).rename(columns={"val_log_loss": "logloss", "val_log_loss_uncalibrated": "uncal", "val_accuracy": "acc"})
    return shown.fillna("").to_string(index=False)
