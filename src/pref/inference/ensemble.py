"""Trained runs for prediction: loading, the class prior, and the weighted ensemble.

    probs, prior, stats = predict_runs(run_dirs, records, weights=[0.6, 0.4])

The prior of a run (what a row predict cannot parse gets) is, in order: the
checkpoint folder's prior.json (an export), the run dir's prior.json (the
class counts of the rows it TRAINED on, written by training), the label
counts of data_report.json (runs trained before prior.json existed: the whole
file), add-one smoothed; uniform when none exists.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ...data.records import PairRecord
from ...engine.rundir import DATA_REPORT, PRIOR
from ..checkpoint import load_pref_checkpoint, locate
from ..config import PrefConfig
from .predict import predict_records

UNIFORM = np.full(3, 1.0 / 3.0)


def _label(path: Path, root: Path | None) -> str:
    """A file's name relative to the run dir it belongs to (no absolute local paths in reports/exports)."""
    if root is not None:
        try:
            return f"{root.name}/{path.relative_to(root).as_posix()}"
        except ValueError:
            pass
    return path.name


def run_prior(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """(class prior, where it came from) for a run dir or checkpoint folder."""
    layout = locate(path)
    pj = layout.find(PRIOR)
    if pj is not None:
        data = json.loads(pj.read_text())
        return np.asarray(data["prior"], dtype=np.float64), f"{_label(pj, layout.root)} ({data.get('source', 'export')})"
    report = layout.find(DATA_REPORT)
    if report is not None:
        labels = json.loads(report.read_text()).get("labels") or {}
        counts = np.array([float(labels.get(str(k), labels.get(k, 0))) for k in range(3)])
        if counts.sum() > 0:
            return ((counts + 1.0) / (counts.sum() + 3.0),
                    f"{_label(report, layout.root)} label counts {counts.astype(int).tolist()} (whole file)")
    return UNIFORM.copy(), "uniform (no prior.json or data_report.json with label counts found)"


@dataclass
class LoadedRun:
    path: Path
    model: torch.nn.Module
    tokenizer: Any
    cfg: PrefConfig
    temperature: float
    prior: np.ndarray
    prior_source: str
    quantization: Any = None  # predict.QuantizedLoad of a 4/8-bit run (its bits, devices, precision)


def load_run(path: str | os.PathLike, *, quantize: str | None = None, device: str = "auto",
             precision: str = "auto", data_parallel: bool = True) -> LoadedRun:
    """A run, ready to predict; `quantize` ("4bit"/"8bit", adapter runs) loads its base
    quantised onto each prediction device (predict.load_quantized)."""
    prior, source = run_prior(path)
    if quantize:
        from .predict import load_quantized
        q = load_quantized(path, quantize, device=device, precision=precision, data_parallel=data_parallel)
        model, tokenizer, cfg, temperature = q.first
        return LoadedRun(Path(path), model, tokenizer, cfg, float(temperature), prior, source, quantization=q)
    model, tokenizer, cfg, temperature = load_pref_checkpoint(path)
    return LoadedRun(Path(path), model, tokenizer, cfg, float(temperature), prior, source)


def ensemble(probs: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of per-run probabilities (n, 3); equal weights by default.
    An ensemble of identical predictions returns them unchanged."""
    if not len(probs):
        raise ValueError("ensemble of no runs")
    stack = np.stack([np.asarray(p, dtype=np.float64) for p in probs])
    w = np.ones(len(probs)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(probs),):
        raise ValueError(f"{len(w)} weights for {len(probs)} runs")
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w.tolist()}")
    return np.tensordot(w, stack, axes=1) / w.sum()


def normalise(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return p / p.sum(-1, keepdims=True)


def predict_runs(run_dirs: Sequence[Path], records: list[PairRecord], *, weights: Sequence[float] | None = None,
                 log: Callable[[str], None] = lambda s: None, **predict_kw) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(ensembled probabilities (n, 3), ensembled prior (3,), per-run stats), one model in memory at a time.
    A LoadedRun in `run_dirs` (a zero-shot judge: inference/zero_shot.py) is used as it is.
    NaN rows where a run's output was not finite even in fp32."""
    if weights is not None and len(weights) != len(run_dirs):
        raise ValueError(f"{len(weights)} weights for {len(run_dirs)} runs ({', '.join(map(str, run_dirs))})")
    if weights is not None and any(w == 0 for w in weights) and any(w != 0 for w in weights):
        # a run with weight 0 changes nothing: not loaded, not run (3 such runs once cost 43 s)
        skipped = [str(p) for p, w in zip(run_dirs, weights) if w == 0]
        log(f"[predict] weight 0, not computed: {', '.join(skipped)}")
        run_dirs, weights = zip(*[(p, w) for p, w in zip(run_dirs, weights) if w != 0])
        run_dirs, weights = list(run_dirs), list(weights)
    per_run, priors, run_stats = [], [], []
    # --tta-budget-minutes: each run's swapped pass gets an equal share of the time still left
    tta_minutes, start = predict_kw.pop("tta_budget_minutes", None), time.monotonic()
    for k, path in enumerate(run_dirs):
        name = path.path if isinstance(path, LoadedRun) else path
        if tta_minutes is not None:
            left = start + 60.0 * tta_minutes - time.monotonic()
            predict_kw["tta_deadline"] = time.monotonic() + max(left, 0.0) / (len(run_dirs) - k)
        if records:
            run = path if isinstance(path, LoadedRun) else load_run(
                           path, quantize=predict_kw.get("quantize"), device=predict_kw.get("device", "auto"),
                           precision=predict_kw.get("precision", "auto"),
                           data_parallel=predict_kw.get("data_parallel", True))
            pred = predict_records(run, records, **predict_kw)
            prior, source = run.prior, run.prior_source
            del run
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            s = pred.stats
            log(f"[predict] run {k + 1}/{len(run_dirs)} {name}: {s['rows']} rows in "
                f"{s['seconds_tokenize'] + s['seconds_model']:.1f}s ({s['rows_per_s']:.1f} rows/s; model "
                f"{s['model_rows_per_s']:.1f} rows/s), pad fraction {s['pad_fraction']:.3f}, "
                f"{','.join(s['devices'])} {s['precision']}, tta {'on' if s['tta'] else 'off'}"
                + (f" (both orders on {s['tta_rows_both_orders']} of {s['rows']} rows, least confident first)"
                   if s.get("tta_gated") else ""))
            per_run.append(pred.probs)
            run_stats.append(pred.stats)
        else:
            prior, source = (path.prior, path.prior_source) if isinstance(path, LoadedRun) else run_prior(path)
            run_stats.append({"run": str(name), "rows": 0})
        priors.append(prior)
        run_stats[-1]["prior"] = np.round(prior, 6).tolist()
        run_stats[-1]["prior_source"] = source
    prior = normalise(ensemble(priors, weights)[None])[0]
    probs = normalise(ensemble(per_run, weights)) if records else np.zeros((0, 3))
    return probs, prior, run_stats
