"""Predict a Kaggle test file with one or more trained runs, and check submissions.

    predict_file(runs, "test.csv", "submission.csv")   # every input id, in input order
    check_submission("submission.csv", "test.csv")     # -> list of one-line problems

How a row gets its probabilities:
  * rows `read_pairs` parses are encoded with each run's own settings
    (arch, max_len, prompt budget, keep policy), sorted by length and batched up
    to a token budget (no padding to a fixed length), predicted under
    `torch.inference_mode` and the device's autocast, in both A/B orders unless
    `tta=False`, swap-averaged and temperature-scaled (`infer.average_probs`);
  * runs are averaged with optional weights (fold ensemble);
  * rows that cannot be parsed (quarantined) and rows whose logits are not
    finite even in fp32 get the class prior, and the report lists them:
    Kaggle rejects a submission with a missing id, so every id gets a row.

The prior of a run is its `prior.json` (written by the export) or else the
label counts in the run's `data_report.json` (the labelled rows it was trained
and validated on), add-one smoothed; uniform when neither exists.

Row order: `read_pairs` gives every data row exactly one slot, in `records` or
in `quarantine` (with its 1-based row number), so the input order is rebuilt
by giving the row numbers not quarantined to the records, in order.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import atomic_write_text
from ..data.arena import ReadResult, read_pairs
from ..data.records import LABEL_NAMES, PairRecord
from ..device import pick_device, pick_precision, torch_dtype
from ..engine.batching import inference_batches
from .checkpoint import best_folder, load_pref_checkpoint
from .config import PrefConfig
from .infer import PairEncoding, average_probs, encode_pairs, log_loss, predict_logits

SUBMISSION_HEADER = ("id",) + LABEL_NAMES
SUM_TOLERANCE = 1e-6
UNIFORM = np.full(3, 1.0 / 3.0)


# --- input rows ------------------------------------------------------------------

@dataclass
class InputRow:
    row: int  # 1-based data row, as in the quarantine report
    id: str | None
    record: int | None  # index into ReadResult.records; None when quarantined
    reason: str = ""
    detail: str = ""


def input_rows(result: ReadResult) -> list[InputRow]:
    """Every data row of the file in input order, parsed or not."""
    quarantined = {q.row: q for q in result.quarantine}
    out, next_record = [], 0
    for row in range(1, result.rows + 1):
        q = quarantined.get(row)
        if q is not None:
            rid = q.id.strip() if isinstance(q.id, str) and q.id.strip() else None
            out.append(InputRow(row, rid, None, q.reason, q.detail))
        else:
            out.append(InputRow(row, result.records[next_record].id, next_record))
            next_record += 1
    assert next_record == len(result.records), "quarantine row numbers do not match the records"
    return out


def expected_ids(result: ReadResult) -> list[str]:
    """The ids a submission must hold: each id of the input once, first occurrence order."""
    seen: dict[str, None] = {}
    for r in input_rows(result):
        if r.id is not None:
            seen.setdefault(r.id, None)
    return list(seen)


# --- runs ------------------------------------------------------------------------

def expand_runs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Run dirs, checkpoint folders, or a K-fold run dir (its fold*/ runs, in order)."""
    out: list[Path] = []
    for p in map(Path, paths):
        try:
            best_folder(p)
            out.append(p)
            continue
        except FileNotFoundError:
            pass
        folds = sorted((d for d in p.glob("fold*") if d.is_dir()), key=lambda d: (len(d.name), d.name))
        folds = [d for d in folds if (d / "checkpoint" / "best" / "model.safetensors").exists()]
        if not folds:
            raise FileNotFoundError(f"{p}: no trained classifier here (expected checkpoint/best/model.safetensors "
                                    "or fold*/checkpoint/best/)")
        out += folds
    return out


def run_prior(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """(class prior, where it came from) for a run dir or checkpoint folder."""
    folder = best_folder(path)
    pj = folder / "prior.json"
    if pj.exists():
        data = json.loads(pj.read_text())
        return np.asarray(data["prior"], dtype=np.float64), f"{pj} ({data.get('source', 'export')})"
    # best/ -> checkpoint/ -> run dir -> (K-fold parent): data_report.json is written at the run dir top
    for d in [folder, *list(folder.parents)[:4]]:
        report = d / "data_report.json"
        if report.exists():
            labels = json.loads(report.read_text()).get("labels") or {}
            counts = np.array([float(labels.get(str(k), labels.get(k, 0))) for k in range(3)])
            if counts.sum() > 0:
                return (counts + 1.0) / (counts.sum() + 3.0), f"{report} label counts {counts.astype(int).tolist()}"
    return UNIFORM.copy(), "uniform (no data_report.json with label counts found)"


@dataclass
class LoadedRun:
    path: Path
    model: torch.nn.Module
    tokenizer: Any
    cfg: PrefConfig
    temperature: float
    prior: np.ndarray
    prior_source: str


def load_run(path: str | os.PathLike) -> LoadedRun:
    model, tokenizer, cfg, temperature = load_pref_checkpoint(path)
    prior, source = run_prior(path)
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


# --- device, precision, batched prediction --------------------------------------

def resolve_devices(device: str = "auto", data_parallel: bool = True) -> list[str]:
    """Concrete devices to predict on: every visible GPU with data_parallel."""
    if ":" in device:  # an explicit index, e.g. cuda:1
        return [device]
    dev = pick_device(device)
    if dev == "cuda" and data_parallel and torch.cuda.device_count() > 1:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [dev]


def resolve_precision(device: str, precision: str = "auto", *, model_type: str = "") -> tuple[str, str]:
    """(precision, why). On CUDA, auto means bf16 only where it runs natively
    (compute capability >= 8): torch.cuda.is_bf16_supported() also says yes on a
    T4 (emulated, slow), so fp16 there. DeBERTa-v3 overflows in fp16: auto gives
    fp32 for it instead (an explicit --precision fp16 is honoured; rows whose
    logits come out non-finite are then re-run in fp32)."""
    dev_type = torch.device(device).type
    if precision != "auto":
        return pick_precision(dev_type, precision), "requested"
    if dev_type == "cuda":
        major = torch.cuda.get_device_capability(torch.device(device))[0]
        p = "bf16" if major >= 8 else "fp16"
        if p == "fp16" and model_type.startswith("deberta"):
            return "fp32", "auto: DeBERTa-v3 overflows in fp16 and this GPU has no native bf16"
        return p, f"auto: compute capability {major}.x"
    return pick_precision(dev_type, "auto"), "auto"


def casts_weights(precision: str) -> bool:
    """bf16 runs with the weights cast to bf16 (on CPU autocast is no faster than
    fp32, bf16 weights are ~4x faster with AMX); fp16 runs under autocast, which
    keeps softmax and layer norms in fp32 where fp16's range is too small."""
    return precision == "bf16"


def autocast_context(device: str, precision: str):
    if precision == "fp32" or casts_weights(precision):
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch_dtype(precision))


def replica(model: torch.nn.Module, device: str, precision: str, *, copy_model: bool) -> torch.nn.Module:
    """The model on `device` in `precision`; a copy when the caller's model must stay as it is."""
    cast = casts_weights(precision)
    m = copy.deepcopy(model) if (copy_model or cast) else model
    return m.to(device=device, dtype=torch_dtype(precision)) if cast else m.to(device)


def token_budget(cfg: PrefConfig, *, max_len: int, batch_size: int | None, max_tokens: int | None,
                 both_orders: bool) -> int:
    """Padded tokens per batch. --batch-size B means B rows of full length per batch
    (shorter rows pack more); --max-tokens sets the budget directly."""
    if max_tokens:
        return int(max_tokens)
    if batch_size:
        per_row = 2 if (cfg.arch == "siamese" or both_orders) else 1
        return int(batch_size) * max_len * per_row
    return int(cfg.eval_max_tokens)


def batch_token_counts(enc: PairEncoding, batches: list[list[int]], both_orders: bool) -> tuple[int, int]:
    """(real tokens, padded tokens) of the batches predict_logits builds."""
    real = padded = 0
    for b in batches:
        if enc.arch == "siamese":
            lens = [len(enc.ids["a"][i]) for i in b] + [len(enc.ids["b"][i]) for i in b]
        else:
            lens = [len(enc.ids["ab"][i]) for i in b] + ([len(enc.ids["ba"][i]) for i in b] if both_orders else [])
        real += sum(lens)
        padded += max(lens) * len(lens)
    return real, padded


def plan(enc: PairEncoding, rows: np.ndarray, budget: int, both_orders: bool) -> list[list[int]]:
    """The same batches predict_logits makes for these rows (indices into `rows`)."""
    per_row = 2 if (enc.arch == "siamese" or both_orders) else 1
    return inference_batches(enc.lengths()[rows], budget // per_row)


@torch.inference_mode()
def predict_siamese_sides(model: torch.nn.Module, enc: PairEncoding, rows: np.ndarray, *, device: str,
                          max_tokens: int, both_orders: bool = True, progress: bool = False,
                          head_chunk: int = 4096) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """Siamese logits with every side sequence batched by its OWN length.

    The siamese encoder pools each side independently, so the A and B sides of a
    pair need not share a batch or a width (predict_logits pads both to the longer
    one). All 2n sides are sorted by length and packed up to `max_tokens`, pooled,
    and the head runs through the model's own forward on the stacked [a; b]
    vectors, so the head logic lives in one place (PrefModel.forward)."""
    from tqdm.auto import tqdm
    n = len(rows)
    seqs = [enc.ids["a"][i] for i in rows] + [enc.ids["b"][i] for i in rows]
    lens = np.array([len(x) for x in seqs])
    # Ties in length are broken by content, not by position: the swapped file then
    # builds bit-identical batches, which makes swap averaging exactly symmetric.
    canon = np.array(sorted(range(2 * n), key=seqs.__getitem__), dtype=np.int64)
    batches = [canon[b].tolist() for b in inference_batches(lens[canon], max_tokens)]
    pooled: torch.Tensor | None = None
    real = padded = 0
    for batch in tqdm(batches, desc="predict", unit="batch", disable=not progress, mininterval=1.0):
        width = int(lens[batch].max())
        ids = torch.full((len(batch), width), enc.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, j in enumerate(batch):
            ids[row, :lens[j]] = torch.tensor(seqs[j], dtype=torch.long)
            mask[row, :lens[j]] = 1
        h = model.encode(ids.to(device), mask.to(device))
        if pooled is None:
            pooled = torch.empty((2 * n, h.shape[-1]), dtype=h.dtype, device=h.device)
        pooled[torch.as_tensor(batch, device=h.device)] = h
        real += int(lens[batch].sum())
        padded += width * len(batch)
    style = torch.from_numpy(enc.style[rows])
    ab = np.zeros((n, 3), dtype=np.float32)
    ba = np.zeros((n, 3), dtype=np.float32) if both_orders else None
    for s in range(0, n, head_chunk):
        e = min(n, s + head_chunk)
        h = torch.cat([pooled[s:e], pooled[n + s:n + e]])
        out_ab, out_ba = _forward_pooled(model, h, style[s:e].to(device), both_orders)
        ab[s:e] = out_ab.float().cpu().numpy()
        if both_orders:
            ba[s:e] = out_ba.float().cpu().numpy()
    return ab, ba, (real, padded)


def _forward_pooled(model: torch.nn.Module, h: torch.Tensor, style: torch.Tensor, both_orders: bool):
    """PrefModel.forward on already pooled vectors: its `encode` step is replaced,
    for this call only, by the vectors (this replica is used by one thread)."""
    model.encode = lambda input_ids, attention_mask: h
    try:
        return model(None, None, style, both_orders=both_orders)
    finally:
        del model.encode


def predict_encoded(model: torch.nn.Module, enc: PairEncoding, *, devices: list[str], precision: str,
                    budget: int, both_orders: bool = True, rows: np.ndarray | None = None,
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Logits for `rows` (default all) on one or several devices (a replica of the
    model per device, rows dealt out by length so every device gets a similar load).
    Returns (ab, ba, stats with real/padded tokens)."""
    rows = np.arange(len(enc)) if rows is None else np.asarray(rows)
    order = rows[np.argsort(-enc.lengths()[rows], kind="stable")]
    shards = [np.sort(order[k::len(devices)]) for k in range(len(devices))]
    # Copies for the other devices first, then (unless it is cast) the model itself moves.
    others = [replica(model, dev, precision, copy_model=True) for dev in devices[1:]]
    replicas = [replica(model, devices[0], precision, copy_model=False)] + others
    ab = np.zeros((len(enc), 3), dtype=np.float32)
    ba = np.zeros((len(enc), 3), dtype=np.float32) if both_orders else None
    real = padded = 0
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        nonlocal real, padded
        try:
            shard, dev = shards[k], devices[k]
            if not len(shard):
                return
            m = replicas[k]
            # One autocast region around the whole pass (fp16): weight casts are cached for it.
            with autocast_context(dev, precision):
                if enc.arch == "siamese":
                    a, b, (r, p) = predict_siamese_sides(m, enc, shard, device=dev, max_tokens=budget,
                                                         both_orders=both_orders, progress=progress and k == 0)
                else:
                    a, b = predict_logits(m, enc, device=dev, max_tokens=budget, both_orders=both_orders,
                                          indices=shard.tolist(), progress=progress and k == 0)
                    r, p = batch_token_counts(enc, [shard[i].tolist() for i in plan(enc, shard, budget, both_orders)],
                                              both_orders)
            with lock:
                ab[shard] = a
                if ba is not None:
                    ba[shard] = b
                real += r
                padded += p
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)

    if len(devices) == 1:
        work(0)
    else:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(len(devices))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    out_ab, out_ba = ab[rows], None if ba is None else ba[rows]
    return out_ab, out_ba, {"real_tokens": real, "padded_tokens": padded}


@dataclass
class RunPrediction:
    probs: np.ndarray  # (n, 3) swap-averaged, temperature-scaled; NaN rows where even fp32 failed
    stats: dict = field(default_factory=dict)


def predict_records(run: LoadedRun, records: list[PairRecord], *, device: str = "auto", precision: str = "auto",
                    tta: bool = True, max_len: int | None = None, batch_size: int | None = None,
                    max_tokens: int | None = None, data_parallel: bool = True,
                    progress: bool = False) -> RunPrediction:
    cfg, model = run.cfg, run.model
    max_len = int(max_len or cfg.max_len)
    enc_cfg = model.encoder.config
    if getattr(enc_cfg, "position_embedding_type", "absolute") == "absolute" and \
            getattr(enc_cfg, "max_position_embeddings", 0) and not enc_cfg.model_type.startswith("deberta") \
            and max_len > enc_cfg.max_position_embeddings:
        raise ValueError(f"--max-len {max_len} is longer than the encoder's {enc_cfg.max_position_embeddings} positions")
    devices = resolve_devices(device, data_parallel)
    prec, why = resolve_precision(devices[0], precision, model_type=enc_cfg.model_type)
    stats: dict[str, Any] = {"run": str(run.path), "rows": len(records), "devices": devices, "precision": prec,
                             "precision_reason": why, "tta": tta, "max_len": max_len,
                             "temperature": run.temperature}
    if not records:
        return RunPrediction(np.zeros((0, 3)), stats)
    t0 = time.perf_counter()
    enc = encode_pairs(records, run.tokenizer, arch=cfg.arch, max_len=max_len, prompt_budget=cfg.prompt_budget,
                       keep=cfg.keep, both_orders=tta)
    t1 = time.perf_counter()
    budget = token_budget(cfg, max_len=max_len, batch_size=batch_size, max_tokens=max_tokens, both_orders=tta)
    ab, ba, tok = predict_encoded(model, enc, devices=devices, precision=prec, budget=budget, both_orders=tta,
                                  progress=progress)
    bad = ~np.isfinite(ab).all(1) if ba is None else ~(np.isfinite(ab).all(1) & np.isfinite(ba).all(1))
    stats["nonfinite_rows"] = int(bad.sum())
    if bad.any() and prec != "fp32":  # e.g. fp16 overflow: those rows again in fp32
        rows = np.flatnonzero(bad)
        ab2, ba2, _ = predict_encoded(model, enc, devices=devices[:1], precision="fp32", budget=budget,
                                      both_orders=tta, rows=rows)
        ab[rows] = ab2
        if ba is not None:
            ba[rows] = ba2
        stats["rerun_fp32_rows"] = len(rows)
    t2 = time.perf_counter()
    probs = average_probs(ab, ba, run.temperature)
    probs[~np.isfinite(probs).all(1)] = np.nan
    stats.update({
        "token_budget": budget, "seconds_tokenize": t1 - t0, "seconds_model": t2 - t1,
        "rows_per_s": len(records) / max(t2 - t0, 1e-9), "model_rows_per_s": len(records) / max(t2 - t1, 1e-9),
        "real_tokens": tok["real_tokens"], "padded_tokens": tok["padded_tokens"],
        "pad_fraction": 1.0 - tok["real_tokens"] / max(tok["padded_tokens"], 1),
    })
    return RunPrediction(probs, stats)


# --- the whole file ----------------------------------------------------------------

def _normalise(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return p / p.sum(1, keepdims=True)


def format_submission(ids: Sequence[str], probs: np.ndarray) -> str:
    """CSV text; %.10g keeps each row's sum within ~1e-10 of 1."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUBMISSION_HEADER)
    for rid, p in zip(ids, probs):
        w.writerow([rid, f"{p[0]:.10g}", f"{p[1]:.10g}", f"{p[2]:.10g}"])
    return buf.getvalue()


def predict_file(runs: Sequence[str | os.PathLike], data: str | os.PathLike, out: str | os.PathLike, *,
                 weights: Sequence[float] | None = None, tta: bool = True, device: str = "auto",
                 precision: str = "auto", max_len: int | None = None, batch_size: int | None = None,
                 max_tokens: int | None = None, data_parallel: bool = True, report_path: str | os.PathLike | None = None,
                 progress: bool = False, log: Callable[[str], None] | None = print) -> dict:
    """Write `out` (id + three probabilities for every id of `data`, in input order)
    and a JSON report next to it; returns the report."""
    log = log or (lambda s: None)
    t_start = time.perf_counter()
    result = read_pairs(data)
    rows = input_rows(result)
    run_dirs = expand_runs(runs)
    if weights is not None and len(weights) != len(run_dirs):
        raise ValueError(f"{len(weights)} weights for {len(run_dirs)} runs ({', '.join(map(str, run_dirs))})")
    records = result.records
    per_run, priors, run_stats = [], [], []
    for k, path in enumerate(run_dirs):
        if records:
            run = load_run(path)
            pred = predict_records(run, records, device=device, precision=precision, tta=tta, max_len=max_len,
                                   batch_size=batch_size, max_tokens=max_tokens, data_parallel=data_parallel,
                                   progress=progress)
            prior, source = run.prior, run.prior_source
            del run  # one model in memory at a time
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            s = pred.stats
            log(f"[predict] run {k + 1}/{len(run_dirs)} {path}: {s['rows']} rows in "
                f"{s['seconds_tokenize'] + s['seconds_model']:.1f}s ({s['rows_per_s']:.1f} rows/s; model "
                f"{s['model_rows_per_s']:.1f} rows/s), pad fraction {s['pad_fraction']:.3f}, "
                f"{','.join(s['devices'])} {s['precision']}, tta {'on' if tta else 'off'}")
            per_run.append(pred.probs)
            run_stats.append(pred.stats)
        else:
            prior, source = run_prior(path)
            run_stats.append({"run": str(path), "rows": 0})
        priors.append(prior)
        run_stats[-1]["prior"] = np.round(prior, 6).tolist()
        run_stats[-1]["prior_source"] = source
    prior = _normalise(ensemble(priors, weights)[None])[0]
    probs = _normalise(ensemble(per_run, weights)) if records else np.zeros((0, 3))
    failed = ~np.isfinite(probs).all(1)

    # Every input id gets exactly one row: its first parsed prediction, else the prior.
    chosen: dict[str, np.ndarray] = {}
    fallback: dict[str, dict] = {}
    no_id, duplicates = [], []
    for r in rows:
        if r.id is None:
            no_id.append({"row": r.row, "reason": r.reason, "detail": r.detail})
            continue
        have_real = r.id in chosen and r.id not in fallback
        if r.id in chosen:
            duplicates.append({"row": r.row, "id": r.id})
        if r.record is not None and not failed[r.record]:
            if not have_real:
                chosen[r.id] = probs[r.record]
                fallback.pop(r.id, None)
        elif r.id not in chosen:
            chosen[r.id] = prior
            fallback[r.id] = {"row": r.row, "id": r.id,
                              "reason": r.reason or "nonfinite_logits",
                              "detail": r.detail or "model output was not finite, even in fp32"}
    ids = list(chosen)
    matrix = np.array([chosen[i] for i in ids]).reshape(-1, 3)
    atomic_write_text(out, format_submission(ids, matrix))

    report: dict[str, Any] = {
        "data": str(data), "out": str(out), "rows_read": result.rows, "rows_parsed": len(records),
        "ids_written": len(ids), "predicted": len(ids) - len(fallback), "prior_rows": len(fallback),
        "prior": np.round(prior, 6).tolist(), "prior_rows_list": list(fallback.values()),
        "rows_without_id": no_id, "duplicate_id_rows": duplicates,
        "runs": run_stats, "weights": None if weights is None else list(map(float, weights)),
        "tta": tta, "seconds": time.perf_counter() - t_start,
    }
    if records and run_stats:
        real = sum(s.get("real_tokens", 0) for s in run_stats)
        padded = sum(s.get("padded_tokens", 0) for s in run_stats)
        secs = sum(s.get("seconds_tokenize", 0) + s.get("seconds_model", 0) for s in run_stats)
        report["rows_per_s"] = len(records) / max(secs, 1e-9)  # all runs, tokenising included
        report["pad_fraction"] = 1.0 - real / max(padded, 1)
    if result.has_labels:
        y = np.array([r.label for r in records])
        ok = ~failed
        report["metrics"] = {"rows": int(ok.sum()), "log_loss": log_loss(probs[ok], y[ok]),
                             "accuracy": float((probs[ok].argmax(1) == y[ok]).mean()),
                             "log_loss_prior": log_loss(np.tile(prior, (int(ok.sum()), 1)), y[ok])}
    report_path = Path(report_path) if report_path else default_report_path(out)
    atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    report["report"] = str(report_path)

    log(f"[predict] wrote {out}: {len(ids)} ids ({report['predicted']} predicted, {len(fallback)} given the "
        f"class prior {np.round(prior, 4).tolist()}); report {report_path}")
    for q in list(fallback.values())[:20]:
        log(f"[predict]   prior for id {q['id']} (row {q['row']}): {q['reason']} {q['detail']}".rstrip())
    if len(fallback) > 20:
        log(f"[predict]   ... and {len(fallback) - 20} more (see the report)")
    for q in no_id[:20]:
        log(f"[predict]   row {q['row']} has no id and cannot be in the submission: {q['reason']} {q['detail']}".rstrip())
    if duplicates:
        log(f"[predict]   {len(duplicates)} rows repeat an earlier id (written once): "
            + ", ".join(f"row {d['row']} id {d['id']}" for d in duplicates[:10]))
    if "metrics" in report:
        m = report["metrics"]
        log(f"[predict] labels found: log loss {m['log_loss']:.4f} (class prior {m['log_loss_prior']:.4f}), "
            f"accuracy {m['accuracy']:.3f} on {m['rows']} parsed rows")
    return report


def default_report_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.stem + "_report.json")


# --- checking a submission -----------------------------------------------------------

def check_submission(path: str | os.PathLike, data: str | os.PathLike, *, max_per_kind: int = 20,
                     tolerance: float = SUM_TOLERANCE) -> list[str]:
    """One line per problem (empty list = valid): header, every id of `data`
    exactly once, probabilities numeric, finite, in [0, 1], rows summing to 1.
    At most `max_per_kind` lines per kind of problem, then a count of the rest."""
    expected = expected_ids(read_pairs(data))
    problems: dict[str, list[str]] = {}

    def add(kind: str, msg: str) -> None:
        problems.setdefault(kind, []).append(msg)

    p = Path(path)
    if not p.is_file():
        return [f"{path}: no such file"]
    with open(p, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return [f"{path}: file is empty"]
        except csv.Error as e:
            return [f"{path}: header is not valid CSV ({e})"]
        header = [h.strip() for h in header]
        if header != list(SUBMISSION_HEADER):
            add("header", f"header is {','.join(header)!r}, expected {','.join(SUBMISSION_HEADER)!r}")
            if any(c not in header for c in SUBMISSION_HEADER):
                missing = [c for c in SUBMISSION_HEADER if c not in header]
                return [*problems["header"], f"cannot check rows: column(s) {', '.join(missing)} missing"]
        col = {c: header.index(c) for c in SUBMISSION_HEADER}
        wanted = set(expected)
        first_row: dict[str, int] = {}
        line = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                line += 1
                add("csv", f"row {line}: not valid CSV ({e})")
                continue
            line += 1
            if not cells:
                line -= 1
                continue
            if len(cells) != len(header):
                add("shape", f"row {line}: {len(cells)} cells, header has {len(header)}")
                continue
            rid = cells[col["id"]].strip()
            if not rid:
                add("id", f"row {line}: empty id")
            elif rid in first_row:
                add("duplicate", f"row {line}: duplicate id {rid} (first at row {first_row[rid]})")
            else:
                first_row[rid] = line
                if rid not in wanted:
                    add("unknown", f"row {line}: id {rid} is not in {data}")
            values = []
            for name in LABEL_NAMES:
                raw = cells[col[name]].strip()
                try:
                    v = float(raw)
                except ValueError:
                    add("number", f"row {line} (id {rid}): {name}={raw!r} is not a number")
                    values = None
                    break
                values.append(v)
            if values is None:
                continue
            bad = [n for n, v in zip(LABEL_NAMES, values) if not math.isfinite(v)]
            if bad:
                add("finite", f"row {line} (id {rid}): {', '.join(bad)} not finite "
                              f"({', '.join(cells[col[n]].strip() for n in bad)})")
                continue
            out_of_range = [f"{n}={v}" for n, v in zip(LABEL_NAMES, values) if not 0.0 <= v <= 1.0]
            if out_of_range:
                add("range", f"row {line} (id {rid}): outside [0, 1]: {', '.join(out_of_range)}")
            s = math.fsum(values)
            if abs(s - 1.0) > tolerance:
                add("sum", f"row {line} (id {rid}): probabilities sum to {s:.9g}, not 1 (tolerance {tolerance:g})")
    for rid in expected:
        if rid not in first_row:
            add("missing", f"id {rid} from {data} is missing")
    lines: list[str] = []
    for kind, msgs in problems.items():
        lines += msgs[:max_per_kind]
        if len(msgs) > max_per_kind:
            lines.append(f"... and {len(msgs) - max_per_kind} more {kind} problems")
    return lines
