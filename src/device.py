"""Pick the compute device and the precision to train/infer in: the one owner
of the precision policy.

Order: cuda > xpu > mps > cpu. Precision: bf16 where the device does bf16
matrix math (Ampere+ CUDA, XPU, CPUs with AVX512-BF16/AMX), fp16 + a grad
scaler on CUDA GPUs without bf16 (T4, V100), fp32 otherwise. Both are
overridable (`--device`, `--precision` on every CLI).

Model families known to overflow fp16's range (max 65504), `fp16_overflow_family`:
  * DeBERTa-v3 (its disentangled attention scores);
  * Gemma-2 and Gemma-3 (trained in bf16; the embedding output is scaled by
    sqrt(hidden) and the post-norm weights are large, so the residual stream leaves
    fp16's range: transformers#36822 "Gemma 3 is broken with fp16" and PR #37226;
    unsloth forces fp32 for a Gemma-3 fp16 request). Gemma-2 has the same embedding
    scaling and sandwich norms; the LMSYS T4 notebooks that ran it in fp16 did so with
    4-bit weights and no guarantee, so we treat it like Gemma-3.
Training refuses fp16 for them (`check_precision`, one line before any work).
Prediction's auto choice on a GPU without native bf16 (T4, V100) gives fp32 instead
of fp16 (`choose_precision` says so in its reason); an explicit --precision fp16 is
honoured, and rows whose logits come out non-finite are re-run in fp32 by the caller
(full-precision runs; a quantised run cannot re-run in fp32 and gives those rows the
prior, listed in the report).

`python -m src.device` prints what was found as one JSON line.
"""
from __future__ import annotations

import json
import platform
import re
import contextlib
from dataclasses import dataclass
from functools import lru_cache

import torch

from .errors import UsageError

DEVICES = ("auto", "cuda", "xpu", "mps", "cpu")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def xpu_available() -> bool:
    # Native torch.xpu (PyTorch >= 2.6). IPEX is never imported here: it is a
    # retired optional extra.
    return hasattr(torch, "xpu") and torch.xpu.is_available()


def mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return platform.machine() == "arm64"  # Apple M2+ and Graviton3 have bf16
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def _cuda_native_bf16() -> bool:
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch without the argument
        return torch.cuda.get_device_capability()[0] >= 8


def pick_device(prefer: str = "auto") -> str:
    if prefer not in DEVICES:
        raise ValueError(f"unknown device '{prefer}' (choose from {', '.join(DEVICES)})")
    if prefer != "auto":
        return prefer
    if torch.cuda.is_available():
        return "cuda"
    if xpu_available():
        return "xpu"
    if mps_available():
        return "mps"
    return "cpu"


def pick_precision(device: str, prefer: str = "auto") -> str:
    if prefer not in PRECISIONS:
        raise ValueError(f"unknown precision '{prefer}' (choose from {', '.join(PRECISIONS)})")
    if prefer != "auto":
        return prefer
    if device == "cuda":
        # including_emulation=False: a T4 "supports" bf16 only by slow emulation; fp16 + scaler there
        return "bf16" if _cuda_native_bf16() else "fp16"
    if device == "xpu":
        return "bf16"
    if device == "cpu":
        return "bf16" if cpu_has_bf16() else "fp32"
    return "fp32"


# gemma2, gemma3, gemma3_text (model types), google/gemma-2-9b-it, tiny-gemma2 (names);
# not Gemma-1 ("gemma-7b") nor Gemma-4, which unsloth measured within fp16's range.
_GEMMA_2_3 = re.compile(r"gemma[-_]?[23](?![0-9])")


def fp16_overflow_family(*models: str) -> str | None:
    """The family name when any of `models` (names, paths, model_types) is known to overflow fp16."""
    for m in models:
        text = str(m or "").lower()
        if "deberta" in text:
            return "DeBERTa-v3"
        if _GEMMA_2_3.search(text):
            return "Gemma-2/3"
    return None


def overflows_in_fp16(*models: str) -> bool:
    """Models whose activations overflow fp16's range (a model name, path or model_type)."""
    return fp16_overflow_family(*models) is not None


def check_precision(precision: str, *models: str) -> None:
    """Refuse a training precision the model cannot run in (one line, before any work)."""
    family = fp16_overflow_family(*models) if precision == "fp16" else None
    if family:
        raise UsageError(f"{family} overflows in fp16 (activations pass 65504 and turn inf/NaN): "
                         "use --precision bf16 (Ampere+ GPUs) or --precision fp32")


def choose_precision(device: str, prefer: str = "auto", *, model: str = "") -> tuple[str, str]:
    """(precision, why) for inference on `device` (e.g. "cuda:1").

    On CUDA, auto means bf16 only where it runs natively (compute capability
    >= 8, read for THIS device): torch.cuda.is_bf16_supported() also says yes on
    a T4 (emulated, slow), so fp16 there, and fp32 for a model that overflows
    in fp16."""
    dev_type = torch.device(device).type
    if prefer != "auto":
        return pick_precision(dev_type, prefer), "requested"
    if dev_type == "cuda":
        major = torch.cuda.get_device_capability(torch.device(device))[0]
        p = "bf16" if major >= 8 else "fp16"
        family = fp16_overflow_family(model) if p == "fp16" else None
        if family:
            return "fp32", f"auto: {family} overflows in fp16 and this GPU has no native bf16: fp32"
        return p, f"auto: compute capability {major}.x"
    return pick_precision(dev_type, "auto"), "auto"


def casts_weights(precision: str) -> bool:
    """Inference in bf16 casts the weights (on CPU, autocast is no faster than
    fp32 while bf16 weights are ~4x faster with AMX); fp16 runs under autocast,
    which keeps softmax and layer norms in fp32 where fp16's range is too small."""
    return precision == "bf16"


def inference_autocast(device: str, precision: str):
    """The autocast region for inference in `precision` (none for fp32 and cast bf16 weights)."""
    if precision == "fp32" or casts_weights(precision):
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch_dtype(precision))


def to_accelerate_precision(precision: str) -> str:
    """Map our names onto accelerate's `mixed_precision` values."""
    return {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[precision]


def torch_dtype(precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


@dataclass(frozen=True)
class DeviceChoice:
    device: str
    precision: str

    @classmethod
    def resolve(cls, device: str = "auto", precision: str = "auto") -> "DeviceChoice":
        dev = pick_device(device)
        return cls(dev, pick_precision(dev, precision))


def describe() -> dict:
    choice = DeviceChoice.resolve()
    info = {"device": choice.device, "precision": choice.precision, "torch": torch.__version__}
    if choice.device == "cuda":
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    elif choice.device == "xpu":
        info["gpus"] = [torch.xpu.get_device_name(i) for i in range(torch.xpu.device_count())]
    else:
        info["cpu_threads"] = torch.get_num_threads()
    return info


if __name__ == "__main__":
    print(json.dumps(describe()))
