"""Trading compute for memory only when memory is short: activation recomputation
on or off from the memory plan, and attention without dropout.

Why: recomputing activations costs about a third more compute per step, and on CPU
SDPA an attention dropout above 0 forces the math kernel, which materialises the
attention probabilities (the MiniLM default job: 5.9 GiB peak without recomputation,
2.0 GiB with attention dropout 0 and no recomputation, 1.2 GiB with both; 130 -> 217
-> 342 useful tokens/s, measured side by side on this repo's 2-core CPU box).
"""
from __future__ import annotations

import ctypes
import os
import resource
import sys
from typing import Any, Callable

import torch

HEADROOM = {"cpu": 0.5, "cuda": 0.85, "xpu": 0.85}  # share of the device's FREE memory a run may plan to use
# (CPU: the data, the tokenizer and other processes share the RAM; GPU: allocator fragmentation)
PLAN_MARGIN = 1.5  # the plan is an estimate: SmolLM2-135M LoRA, 16 pairs x 256 tokens, bf16 autocast on CPU,
# was planned at 8.7 GiB without recomputation and passed 13 GiB before it was stopped


def device_memory_gib(device: str) -> float | None:
    """Memory free on the device the run trains on now (None when it cannot be told): free, not
    total, because a shared box (a second run, a sweep worker) has less than it was sold with."""
    kind = torch.device(device).type
    try:
        if kind == "cuda":
            return torch.cuda.mem_get_info(torch.device(device))[0] / 2**30
        if kind == "xpu":
            return torch.xpu.get_device_properties(torch.device(device)).total_memory / 2**30
        if kind == "cpu":
            with open("/proc/meminfo") as f:  # Linux: MemAvailable counts reclaimable cache as free
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) / 2**20
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") / 2**30
    except (AttributeError, ValueError, OSError, RuntimeError):
        return None
    return None


def decide_recompute(requested: bool | None, planned_gib: Callable[[], float | None], device: str) -> tuple[bool, str]:
    """(recompute?, why). `requested` True/False is the user's word; None (auto) asks the
    memory plan for the run's peak WITHOUT recomputation and recomputes only when that
    would not fit the device's budget (or when there is no plan to ask)."""
    if requested is not None:
        return requested, "as configured"
    try:
        need = planned_gib()
    except Exception as e:  # a plan is an estimate for known shapes: no plan is no reason to fail the run
        need, why = None, f"{type(e).__name__}"
    else:
        why = "no plan for this model"
    total = device_memory_gib(device)
    if need is None or total is None:
        return True, f"auto: on ({why}; recomputing is the safe side)"
    budget = HEADROOM.get(torch.device(device).type, 0.5) * total
    if need * PLAN_MARGIN <= budget:
        return False, (f"auto: off (planned peak {need:.1f} GiB without it, x{PLAN_MARGIN:g} margin, fits the "
                       f"{budget:.1f} GiB budget of {total:.1f} GiB free)")
    return True, (f"auto: on (planned peak {need:.1f} GiB without it, x{PLAN_MARGIN:g} margin, exceeds the "
                  f"{budget:.1f} GiB budget of {total:.1f} GiB free)")


def set_attention_dropout(model: Any, p: float) -> int:
    """Attention-probability dropout of every attention module to `p` (hidden-state dropout
    is left alone). p = 0 lets SDPA pick a fused kernel that does not keep the probability
    matrix. Returns how many places were set (0: the model has no attention dropout)."""
    n = 0
    for name, m in model.named_modules():
        if "attention" not in type(m).__name__.lower():
            continue
        for attr in ("attention_dropout", "attn_dropout", "dropout_p"):  # decoders: a float used in the call
            if isinstance(getattr(m, attr, None), float):
                setattr(m, attr, p)
                n += 1
        drop = getattr(m, "dropout", None)  # BERT-style self-attention: nn.Dropout on the probabilities
        if isinstance(drop, torch.nn.Dropout) and type(m).__name__.lower().endswith(("selfattention", "sdpaselfattention")):
            drop.p = p
            n += 1
    config = getattr(model, "config", None)
    for key in ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop"):
        if isinstance(getattr(config, key, None), float):
            setattr(config, key, p)  # so a save/reload agrees with what trained
    return n


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB; Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


HEAP_GROWTH = 0.10  # trim once RSS after a step exceeds the first step's by this share


def resident_mib() -> float | None:
    """This process's resident memory now (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def heap_releaser(device: str, growth: float = HEAP_GROWTH) -> Callable[..., bool] | None:
    """A call for after each optimizer step that hands freed heap pages back to the OS (glibc
    `malloc_trim`) once the process has grown `growth` past its size after the first step, for
    a CPU run on Linux; None where it does not apply (a GPU run, another C library). The call
    says whether it trimmed.

    Why: PyTorch's CPU tensors come from malloc, and glibc keeps what a step frees inside
    its heaps, where the next step's differently sized batch cannot always reuse it. The
    MiniLM default job's RSS climbed from 1.4 to 2.7 GiB over 40 steps with the live tensors
    constant at 263 MiB (counted through gc), and a SmolLM2 LoRA run (no recomputation) from
    11 to 14 GiB over 30 steps. Trimming after every step kept MiniLM at 1.5 GiB, but every
    trimmed page is faulted in again by the next step (1 GiB/s on this repo's CPU box), so
    the cost grows with the activations; trimming only on growth pays it rarely. A fixed low
    mmap threshold did less at a higher cost (2.19 GiB, 50% slower)."""
    if torch.device(device).type != "cpu" or resident_mib() is None:
        return None
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    settled: list[float] = []

    def release(force: bool = False) -> bool:
        """force: trim now (training is over; what follows allocates differently)."""
        rss = resident_mib() or 0.0
        if not settled and not force:
            settled.append(rss)  # the working set: model, optimizer state, one step's reusable heap
            return False
        if not force and rss <= settled[0] * (1 + growth):
            return False
        trim(0)
        return True
    return release
