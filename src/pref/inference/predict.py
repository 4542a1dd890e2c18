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

Quantised prediction (`--load-in-8bit` / `--load-in-4bit`, adapter runs, wherever
bitsandbytes runs: CUDA, x86-64 CPUs): `check_quantized_runs` refuses it in one line
before any work elsewhere (modeling/quantize.py asks bitsandbytes);
`load_quantized` loads the base through bitsandbytes (quantize.quantized_load_kwargs,
the same config training uses) once PER device, each copy onto its own device (a
quantised model is not deep-copied nor cast), computing in the prediction precision
(fp16 on a T4; fp32 for a family that overflows fp16: then 4-bit dequantises to
fp32, while LLM.int8 still multiplies its int8 weights with fp16 activations inside
bitsandbytes). Rows that come out non-finite cannot be re-run in fp32 there (the
weights are fixed at their load dtype): they get the class prior, counted in the stats.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...data.records import PairRecord
from ...device import casts_weights, choose_precision, inference_autocast, pick_device, torch_dtype
from ...errors import UsageError
from .calibration import average_probs
from ..inputs.collate import inference_batches
from ..config import PrefConfig
from ..inputs.encode import PairEncoding, encode_pairs
from ..registry import check_max_len


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
                       progress: bool = False, replicas: list[torch.nn.Module] | None = None) -> Logits:
    """`predict_logits` with a replica of the model per device, rows dealt out by
    length so every device gets a similar load (one thread per device). `replicas`:
    models already on `devices` (quantised copies), used as they are."""
    rows = np.arange(len(enc)) if rows is None else np.asarray(rows)
    order = rows[np.argsort(-enc.lengths()[rows], kind="stable")]
    shards = [np.sort(order[k::len(devices)]) for k in range(len(devices))]
    # Copies for the other devices first, then (unless it is cast) the model itself moves.
    if replicas is None:
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


# --- quantised adapter runs --------------------------------------------------------

def check_quantized_runs(runs, *, load_in_4bit: bool, load_in_8bit: bool, device: str = "auto") -> str | None:
    """'4bit' | '8bit' | None; a one-line UsageError, before any data or weights are read, on a
    device bitsandbytes cannot run on, without it, or for a run that holds full weights (not an adapter)."""
    from ..modeling.adapters import read_meta
    from ..modeling.backbone import check_quantization
    from ..checkpoint import best_folder, expand_runs
    dev = device if ":" in device else pick_device(device)
    bits = check_quantization(load_in_4bit, load_in_8bit, dev)
    if bits:
        for run in expand_runs(runs):
            if not (read_meta(best_folder(run)) or {}).get("lora"):
                raise UsageError(f"--load-in-{bits}: {run} is not an adapter (LoRA) run: its checkpoint holds the "
                                 "full weights, which load as saved; drop the flag for it")
    return bits


@dataclass
class QuantizedLoad:
    bits: str
    devices: list[str]
    precision: str
    precision_reason: str
    first: tuple  # (model, tokenizer, cfg, temperature) on devices[0]
    more: list = field(default_factory=list)  # the models on devices[1:]

    @property
    def models(self) -> list:
        return [self.first[0]] + self.more


def _quantized_copy(path, bits: str, device: str, precision: str):
    from ..checkpoint import load_pref_checkpoint
    dtype = torch_dtype(precision)
    loaded = load_pref_checkpoint(path, load_in_4bit=bits == "4bit", load_in_8bit=bits == "8bit", device=device,
                                  compute_dtype=dtype)
    model = loaded[0]
    for name, child in model.named_children():  # our head (not bitsandbytes'): on the device, in the compute dtype
        if name != "encoder":
            child.to(device=device, dtype=dtype)
    model.style_mean, model.style_std = model.style_mean.to(device), model.style_std.to(device)
    return loaded


def load_quantized(path, bits: str, *, device: str = "auto", precision: str = "auto",
                   data_parallel: bool = True) -> QuantizedLoad:
    """A quantised copy of an adapter run on every prediction GPU (each loaded onto its own)."""
    import json
    from pathlib import Path

    from ..checkpoint import best_folder
    devices = resolve_devices(device, data_parallel)
    enc_cfg = best_folder(path) / "encoder" / "config.json"
    model_type = json.loads(Path(enc_cfg).read_text()).get("model_type", "") if Path(enc_cfg).exists() else ""
    prec, why = choose_precision(devices[0], precision, model=f"{model_type} {path}")
    first = _quantized_copy(path, bits, devices[0], prec)
    more = [_quantized_copy(path, bits, dev, prec)[0] for dev in devices[1:]]
    return QuantizedLoad(bits, devices, prec, why, first, more)


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
                    progress: bool = False, quantize: str | None = None,
                    tta_deadline: float | None = None, uncalibrated: bool = False) -> RunPrediction:
    """Probabilities of one loaded run (`ensemble.LoadedRun`) for `records`, and how they were made.
    `uncalibrated`: at T = 1, not the run's saved temperature (predict --uncalibrated).
    A run loaded quantised (`run.quantization`, from `quantize`) predicts on the devices and
    in the precision it was loaded for."""
    cfg, model = run.cfg, run.model
    max_len = int(max_len or cfg.max_len)
    enc_cfg = model.encoder.config
    check_max_len(enc_cfg, max_len, what=str(run.path))
    quant = getattr(run, "quantization", None)
    if quant is not None:
        devices, prec, why = quant.devices, quant.precision, quant.precision_reason
    else:
        devices = resolve_devices(device, data_parallel)
        prec, why = choose_precision(devices[0], precision, model=enc_cfg.model_type)
    stats: dict[str, Any] = {"run": str(run.path), "rows": len(records), "devices": devices, "precision": prec,
                             "precision_reason": why, "tta": tta, "max_len": max_len,
                             "temperature": 1.0 if uncalibrated else run.temperature,
                             "run_temperature": run.temperature, "quantization": quant.bits if quant else None}
    if not records:
        return RunPrediction(np.zeros((0, 3)), stats)
    if tta and tta_deadline is not None:  # time-budgeted, confidence-gated swap (inference/tta.py)
        budget = token_budget(cfg, max_len=max_len, batch_size=batch_size, max_tokens=max_tokens, both_orders=False)
        return predict_gated(run, records, stats, devices=devices, precision=prec, max_len=max_len, budget=budget,
                             deadline=tta_deadline, progress=progress, quant=quant)
    t0 = time.perf_counter()
    enc = encode_pairs(records, run.tokenizer, arch=cfg.arch, max_len=max_len, prompt_budget=cfg.prompt_budget,
                       keep=cfg.keep, both_orders=tta, judge=getattr(cfg, "head", "mlp") == "lm",
                       privileged=cfg.privileged)
    t1 = time.perf_counter()
    budget = token_budget(cfg, max_len=max_len, batch_size=batch_size, max_tokens=max_tokens, both_orders=tta)
    out = predict_on_devices(model, enc, devices=devices, precision=prec, budget=budget, both_orders=tta,
                             progress=progress, replicas=quant.models if quant else None)
    ab, ba = out.ab, out.ba
    bad = ~np.isfinite(ab).all(1) if ba is None else ~(np.isfinite(ab).all(1) & np.isfinite(ba).all(1))
    stats["nonfinite_rows"] = int(bad.sum())
    if bad.any() and prec != "fp32" and quant is None:  # e.g. fp16 overflow: those rows again in fp32
        rows = np.flatnonzero(bad)
        again = predict_on_devices(model, enc, devices=devices[:1], precision="fp32", budget=budget,
                                   both_orders=tta, rows=rows)
        ab[rows] = again.ab
        if ba is not None:
            ba[rows] = again.ba
        stats["rerun_fp32_rows"] = len(rows)
    t2 = time.perf_counter()
    probs = average_probs(ab, ba, stats["temperature"])
    probs[~np.isfinite(probs).all(1)] = np.nan
    stats.update({
        "token_budget": budget, "seconds_tokenize": t1 - t0, "seconds_model": t2 - t1,
        "rows_per_s": len(records) / max(t2 - t0, 1e-9), "model_rows_per_s": len(records) / max(t2 - t1, 1e-9),
        "real_tokens": out.real_tokens, "padded_tokens": out.padded_tokens,
        "pad_fraction": 1.0 - out.real_tokens / max(out.padded_tokens, 1),
    })
    return RunPrediction(probs, stats)


def predict_gated(run, records, stats: dict, *, devices: list[str], precision: str, max_len: int, budget: int,
                  deadline: float, progress: bool = False, quant=None):
    """`predict_records` for a gated budget: the A-first pass over every row, then `gated_swap`
    with the swapped records' own encoding (`records.swap` of each: the exact mirror the
    both-orders pass would build). Returns its RunPrediction."""
    from ...data.records import swap
    from .tta import combine, gated_swap
    cfg, model = run.cfg, run.model
    t0 = time.perf_counter()
    kw = dict(arch=cfg.arch, max_len=max_len, prompt_budget=cfg.prompt_budget, keep=cfg.keep, both_orders=False,
              judge=getattr(cfg, "head", "mlp") == "lm", privileged=cfg.privileged)
    enc = encode_pairs(records, run.tokenizer, **kw)
    enc_swapped = encode_pairs([swap(r) for r in records], run.tokenizer, **kw)
    t1 = time.perf_counter()
    # replicas once: the swapped pass calls the model chunk by chunk, and must not copy it per chunk
    reps = quant.models if quant else [replica(model, d, precision, copy_model=k > 0) for k, d in enumerate(devices)]
    first = predict_on_devices(model, enc, devices=devices, precision=precision, budget=budget, both_orders=False,
                               progress=progress, replicas=reps)
    tokens = [first.real_tokens, first.padded_tokens]

    def swapped(rows):
        out = predict_on_devices(model, enc_swapped, devices=devices, precision=precision, budget=budget,
                                 both_orders=False, rows=rows, replicas=reps)
        tokens[0] += out.real_tokens
        tokens[1] += out.padded_tokens
        return out.ab
    temperature = stats["temperature"]  # the run's, or 1 with predict --uncalibrated (predict_records sets it)
    gated = gated_swap(first.ab, swapped, deadline=deadline, temperature=temperature)
    probs = combine(first.ab, gated, temperature)
    probs[~np.isfinite(probs).all(1)] = np.nan  # no fp32 re-run here: such rows get the class prior
    t2 = time.perf_counter()
    stats.update({
        "tta_gated": True, "tta_rows_both_orders": int(gated.swapped.sum()),
        "seconds_swapped_pass": gated.seconds, "nonfinite_rows": int(np.isnan(probs).any(1).sum()),
        "token_budget": budget, "seconds_tokenize": t1 - t0, "seconds_model": t2 - t1,
        "rows_per_s": len(records) / max(t2 - t0, 1e-9), "model_rows_per_s": len(records) / max(t2 - t1, 1e-9),
        "real_tokens": tokens[0], "padded_tokens": tokens[1], "pad_fraction": 1.0 - tokens[0] / max(tokens[1], 1),
    })
    return RunPrediction(probs, stats)
