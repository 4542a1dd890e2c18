"""The classifier's one inference path: encoded pairs -> logits and token counts.

    out = predict_logits(model, enc, device="cpu", max_tokens=16384)   # out.ab, out.ba, out.real_tokens, ...
    pred = predict_records(run, records, device="auto", precision="auto")  # probabilities + stats

Training's evaluation, `src.predict` and the Kaggle notebook all come through
`predict_logits`: batches from `collate.inference_batches` (sorted by length,
filled to a token budget, no padding to a fixed length), pooled with
`PrefModel.encode` and scored with `PrefModel.head_logits`, under
`torch.inference_mode`. `predict_records` adds what a file needs: the run's
own encoding settings, the device(s) and precision (policy in `src.device`),
a replica per GPU, a fp32 re-run of rows that overflow, calibration.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.records import PairRecord
from ..device import casts_weights, choose_precision, inference_autocast, pick_device, torch_dtype
from .calibration import average_probs
from .collate import inference_batches
from .config import PrefConfig
from .encode import PairEncoding, encode_pairs
from .registry import check_max_len


@dataclass
class Logits:
    ab: np.ndarray  # (n, 3) the A-B order
    ba: np.ndarray | None  # (n, 3) the B-A order, None without both_orders
    real_tokens: int = 0
    padded_tokens: int = 0


@torch.inference_mode()
def predict_logits(model, enc: PairEncoding, *, device: torch.device | str, max_tokens: int = 16384,
                   both_orders: bool = True, rows: np.ndarray | list[int] | None = None,
                   progress: bool = False, head_chunk: int = 4096) -> Logits:
    """Logits of `rows` (default all) and the real/padded tokens of the batches that made them."""
    from tqdm.auto import tqdm
    net = getattr(model, "module", model)  # a DDP-wrapped model: its encode/head_logits
    rows = np.arange(len(enc)) if rows is None else np.asarray(rows, dtype=np.int64)
    n = len(rows)
    out = Logits(np.zeros((n, 3), dtype=np.float32), np.zeros((n, 3), dtype=np.float32) if both_orders else None)
    style = torch.from_numpy(enc.style[rows])
    pooled: torch.Tensor | None = None
    for batch in tqdm(inference_batches(enc, rows, max_tokens=max_tokens, both_orders=both_orders),
                      desc="predict", unit="batch", disable=not progress, mininterval=1.0):
        out.real_tokens += batch.real_tokens
        out.padded_tokens += batch.padded_tokens
        h = net.encode(batch.input_ids.to(device), batch.attention_mask.to(device))
        if enc.arch == "siamese":  # sides pooled on their own; the head runs once all are in
            if pooled is None:
                pooled = torch.empty((2 * n, h.shape[-1]), dtype=h.dtype, device=h.device)
            pooled[torch.as_tensor(batch.positions, device=h.device)] = h
            continue
        k = len(batch.positions)
        ab, ba = net.head_logits(h[:k], h[k:] if both_orders else None, style[batch.positions].to(device),
                                 both_orders)
        out.ab[batch.positions] = ab.cpu().numpy()
        if both_orders:
            out.ba[batch.positions] = ba.cpu().numpy()
    if pooled is not None:
        for s in range(0, n, head_chunk):
            e = min(n, s + head_chunk)
            ab, ba = net.head_logits(pooled[s:e], pooled[n + s:n + e], style[s:e].to(device), both_orders)
            out.ab[s:e] = ab.cpu().numpy()
            if both_orders:
                out.ba[s:e] = ba.cpu().numpy()
    return out


# --- devices ----------------------------------------------------------------------

def resolve_devices(device: str = "auto", data_parallel: bool = True) -> list[str]:
    """Concrete devices to predict on: every visible GPU with data_parallel."""
    if ":" in device:  # an explicit index, e.g. cuda:1
        return [device]
    dev = pick_device(device)
    if dev == "cuda" and data_parallel and torch.cuda.device_count() > 1:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [dev]


def replica(model: torch.nn.Module, device: str, precision: str, *, copy_model: bool) -> torch.nn.Module:
    """The model on `device` in `precision`; a copy when the caller's model must stay as it is."""
    cast = casts_weights(precision)
    m = copy.deepcopy(model) if (copy_model or cast) else model
    return m.to(device=device, dtype=torch_dtype(precision)) if cast else m.to(device)


def predict_on_devices(model: torch.nn.Module, enc: PairEncoding, *, devices: list[str], precision: str,
                       budget: int, both_orders: bool = True, rows: np.ndarray | None = None,
                       progress: bool = False) -> Logits:
    """`predict_logits` with a replica of the model per device, rows dealt out by
    length so every device gets a similar load (one thread per device)."""
    rows = np.arange(len(enc)) if rows is None else np.asarray(rows)
    order = rows[np.argsort(-enc.lengths()[rows], kind="stable")]
    shards = [np.sort(order[k::len(devices)]) for k in range(len(devices))]
    # Copies for the other devices first, then (unless it is cast) the model itself moves.
    others = [replica(model, dev, precision, copy_model=True) for dev in devices[1:]]
    replicas = [replica(model, devices[0], precision, copy_model=False)] + others
    parts: dict[int, Logits] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            if len(shards[k]):
                # One autocast region around the whole pass (fp16): weight casts are cached for it.
                with inference_autocast(devices[k], precision):
                    parts[k] = predict_logits(replicas[k], enc, device=devices[k], max_tokens=budget,
                                              both_orders=both_orders, rows=shards[k], progress=progress and k == 0)
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
    pos = {int(r): i for i, r in enumerate(rows)}
    out = Logits(np.zeros((len(rows), 3), dtype=np.float32),
                 np.zeros((len(rows), 3), dtype=np.float32) if both_orders else None)
    for k, part in parts.items():
        at = [pos[int(r)] for r in shards[k]]
        out.ab[at] = part.ab
        if both_orders:
            out.ba[at] = part.ba
        out.real_tokens += part.real_tokens
        out.padded_tokens += part.padded_tokens
    return out


# --- a run on records ----------------------------------------------------------------

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


@dataclass
class RunPrediction:
    probs: np.ndarray  # (n, 3) swap-averaged, temperature-scaled; NaN rows where even fp32 failed
    stats: dict = field(default_factory=dict)


def predict_records(run, records: list[PairRecord], *, device: str = "auto", precision: str = "auto",
                    tta: bool = True, max_len: int | None = None, batch_size: int | None = None,
                    max_tokens: int | None = None, data_parallel: bool = True,
                    progress: bool = False) -> RunPrediction:
    """Probabilities of one loaded run (`ensemble.LoadedRun`) for `records`, and how they were made."""
    cfg, model = run.cfg, run.model
    max_len = int(max_len or cfg.max_len)
    enc_cfg = model.encoder.config
    check_max_len(enc_cfg, max_len, what=str(run.path))
    devices = resolve_devices(device, data_parallel)
    prec, why = choose_precision(devices[0], precision, model=enc_cfg.model_type)
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
    out = predict_on_devices(model, enc, devices=devices, precision=prec, budget=budget, both_orders=tta,
                             progress=progress)
    ab, ba = out.ab, out.ba
    bad = ~np.isfinite(ab).all(1) if ba is None else ~(np.isfinite(ab).all(1) & np.isfinite(ba).all(1))
    stats["nonfinite_rows"] = int(bad.sum())
    if bad.any() and prec != "fp32":  # e.g. fp16 overflow: those rows again in fp32
        rows = np.flatnonzero(bad)
        again = predict_on_devices(model, enc, devices=devices[:1], precision="fp32", budget=budget,
                                   both_orders=tta, rows=rows)
        ab[rows] = again.ab
        if ba is not None:
            ba[rows] = again.ba
        stats["rerun_fp32_rows"] = len(rows)
    t2 = time.perf_counter()
    probs = average_probs(ab, ba, run.temperature)
    probs[~np.isfinite(probs).all(1)] = np.nan
    stats.update({
        "token_budget": budget, "seconds_tokenize": t1 - t0, "seconds_model": t2 - t1,
        "rows_per_s": len(records) / max(t2 - t0, 1e-9), "model_rows_per_s": len(records) / max(t2 - t1, 1e-9),
        "real_tokens": out.real_tokens, "padded_tokens": out.padded_tokens,
        "pad_fraction": 1.0 - out.real_tokens / max(out.padded_tokens, 1),
    })
    return RunPrediction(probs, stats)
