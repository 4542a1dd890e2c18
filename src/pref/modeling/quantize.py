"""Quantised bases through bitsandbytes: whether the device can run them, the recipe, where they load.

One owner for `--load-in-4bit` / `--load-in-8bit` (training, predict, the Kaggle notebook):

* Support is asked of bitsandbytes itself, not assumed from the device name. bitsandbytes
  >= 0.50 runs nf4, LLM.int8 and the 8-bit optimizers on x86-64 CPUs (its native CPU
  library) as well as on CUDA/XPU; which devices a given install serves depends on the
  binaries it ships and what the machine has. So `engine.bnb.bnb_unsupported(device_type)`
  runs one tiny Linear4bit and one Linear8bitLt there against the fp32 product (cached per
  device type). A device where that fails is a one-line UsageError before any data or
  weights are read, never a silent fp32 run.
* Device map per device: `{"": "cpu"}` on a CPU. An integer in a device map means an
  *accelerator* index to accelerate/transformers, so the old `{"": 0}` failed on a CPU
  box with "Cannot access accelerator device"; on CUDA it is this DDP rank's GPU
  (LOCAL_RANK) unless the device names one, so each rank loads its own quantised copy.
* Compute dtype = the run's precision. bitsandbytes dequantises to the compute dtype and
  multiplies there; left at bf16 on a CPU without native bf16 math that runs ~10x slower
  than fp32 while the run's log says fp32. The unquantised weights (embeddings, norms)
  load in the same dtype.
* One 4-bit layout for training and evaluation (`keep_one_4bit_layout`). On a CPU with
  AVX512-BF16, bitsandbytes' Linear4bit repacks its weights on the first no-grad eval-mode
  forward into a CPU inference layout and from then on multiplies through its fused
  `gemv_4bit` kernel, which computes in bf16 whatever the compute dtype, and the layout
  stays after model.train(): the training steps after the first eval then backprop through
  `gemv_4bit`, an op with no autograd kernel (torch warns "may lead to silently incorrect
  behavior"). Turned off on every Linear4bit we load: evals, final metrics and prediction
  compute exactly as training does (dequantise + matmul in the compute dtype).
* Logs: engine/bnb.py imports bitsandbytes without its offline hub-kernel warnings (noise:
  that kernel only serves the repacked inference layout above) and says the per-call
  LLM.int8 cast warning once.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any

import torch

from ...engine.bnb import bnb_unsupported, import_bitsandbytes
from ...errors import UsageError

def keep_one_4bit_layout(model: Any) -> int:
    """Stop every bitsandbytes Linear4bit of `model` from repacking itself into the CPU bf16
    inference layout (module docstring); returns how many layers it set."""
    n = 0
    for mod in model.modules():
        if hasattr(mod, "support_avx512bf16_for_cpu"):
            mod.support_avx512bf16_for_cpu = False
            n += 1
    return n


def check_quantization(load_in_4bit: bool, load_in_8bit: bool, device: str) -> str | None:
    """'4bit' | '8bit' | None, or a one-line UsageError where bitsandbytes cannot run."""
    if load_in_4bit and load_in_8bit:
        raise UsageError("--load-in-4bit and --load-in-8bit are exclusive: pick one")
    bits = "4bit" if load_in_4bit else "8bit" if load_in_8bit else None
    if bits is None:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UsageError(f"--load-in-{bits} needs bitsandbytes: pip install bitsandbytes "
                         "(>= 0.50 runs on CUDA and on x86-64 CPUs with AVX2)")
    why = bnb_unsupported(torch.device(device).type)
    if why:
        raise UsageError(f"--load-in-{bits}: bitsandbytes cannot run on this run's device {device} ({why}); "
                         "drop the flag (full-precision LoRA) or use a device it supports")
    return bits


def quantization_config(bits: str, compute_dtype: torch.dtype = torch.bfloat16):
    """QLoRA's recipe: nf4 with double quantisation, or LLM.int8(); compute in `compute_dtype`."""
    from transformers import BitsAndBytesConfig
    if bits == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def device_map(device: str) -> dict[str, Any]:
    """The whole model on one device: "cpu", or a GPU (this DDP rank's unless `device` names one)."""
    d = torch.device(device)
    if d.type == "cpu":
        return {"": "cpu"}  # an integer would mean accelerator N ("Cannot access accelerator device")
    index = local_rank() if d.index is None else d.index
    return {"": index} if d.type == "cuda" else {"": f"{d.type}:{index}"}


def quantized_load_kwargs(bits: str, device: str, compute_dtype: torch.dtype = torch.bfloat16) -> dict:
    """from_pretrained kwargs for a quantised copy on `device` ("cuda" = this rank's GPU,
    "cuda:1" = that one, "cpu"): unquantised weights in compute_dtype."""
    import_bitsandbytes()  # before transformers imports it: keeps the offline hub-kernel note out of the log
    return {"quantization_config": quantization_config(bits, compute_dtype), "device_map": device_map(device),
            "dtype": compute_dtype}


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))
