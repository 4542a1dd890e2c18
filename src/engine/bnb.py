"""bitsandbytes for every stage: imported quietly, asked whether it runs on a device, its 8-bit AdamW.

* `bnb_unsupported(device_type)`: None when bitsandbytes runs a 4-bit (nf4) and an 8-bit
  linear layer on that device type with outputs close to the fp32 product, else why not
  (one line). Asked of bitsandbytes itself rather than assumed from the device name:
  >= 0.50 runs nf4, LLM.int8 and the 8-bit optimizers on x86-64 CPUs (its native CPU
  library) as well as CUDA/XPU, and what an install serves depends on its binaries and the
  machine. Cached per device type (one ~0.1 s probe per process).
* Logs. On CPUs with AVX512-BF16, importing bitsandbytes tries the optional hub kernel
  kernels-community/quantization-bitsandbytes and logs "Failed to load CPU gemm_4bit_forward"
  (and the `kernels` package "Skipping publisher trust check" offline). Noise here: that
  kernel would only replace bitsandbytes' own native gemv_4bit CPU kernel (the fallback, same
  library) in Linear4bit's repacked bf16 inference layout, which our models never take
  (pref/modeling/quantize.keep_one_4bit_layout). Those records are dropped. LLM.int8
  inference logs "MatMul8bitLt: inputs will be cast ... to float16" on every layer call
  (thousands of lines per eval): true (int8 inference quantises fp16-cast activations;
  CPU training dequantises the weights instead), so said once. The filters are installed
  when this module is imported, before anything imports bitsandbytes (peft and
  transformers do, and it logs on import).
* `adamw8bit(groups, lr)`: bitsandbytes AdamW8bit (block-wise 8-bit moments; tensors under
  4096 elements keep 32-bit state, bitsandbytes' min_8bit_size) for `--optim adamw8bit`.
"""
from __future__ import annotations

import functools
import logging

import torch

from ..errors import UsageError

_HUB_KERNEL = "kernels-community/quantization-bitsandbytes"  # its log records are dropped (see above)


def _drop_hub_kernel_note(record: logging.LogRecord) -> bool:
    return _HUB_KERNEL not in record.getMessage()


class _OncePerMessage(logging.Filter):
    """Each distinct message once (the per-call LLM.int8 cast warning, see above)."""
    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg in self.seen:
            return False
        self.seen.add(msg)
        return True


def quiet_bitsandbytes_logs() -> None:
    """Filters on bitsandbytes' loggers (see above); idempotent."""
    for name in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub"):
        logger = logging.getLogger(name)
        if _drop_hub_kernel_note not in logger.filters:
            logger.addFilter(_drop_hub_kernel_note)
    int8 = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _OncePerMessage) for f in int8.filters):
        int8.addFilter(_OncePerMessage())


quiet_bitsandbytes_logs()


def import_bitsandbytes():
    quiet_bitsandbytes_logs()
    import bitsandbytes
    return bitsandbytes


@functools.lru_cache(maxsize=None)
def bnb_unsupported(device_type: str) -> str | None:
    """None when bitsandbytes runs a 4-bit (nf4) and an 8-bit linear layer on `device_type`
    with outputs close to fp32; otherwise why not (one line)."""
    try:
        bnb = import_bitsandbytes()
    except Exception as e:  # a broken install raises at import (missing native library, ...)
        return f"importing bitsandbytes failed: {str(e).strip().splitlines()[0][:160]}"
    devices = getattr(bnb, "supported_torch_devices", {"cuda"})
    if device_type not in devices:
        return f"bitsandbytes {bnb.__version__} supports {', '.join(sorted(devices))}"
    try:
        gen = torch.Generator().manual_seed(0)
        x, w = torch.randn(4, 64, generator=gen), torch.randn(64, 64, generator=gen)
        want = x @ w.T
        layers = {"nf4": bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4"),
                  "int8": bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False)}
        for name, layer in layers.items():
            layer.weight.data.copy_(w)  # still full precision: quantised by the move below
            layer = layer.to(device_type)
            for training in (True, False):  # training and inference take different kernels
                with torch.no_grad():
                    got = layer.train(training)(x.to(device_type)).float().cpu()
                err = float((got - want).norm() / want.norm())
                if not err < 0.2:  # nf4 measures ~0.1, int8 ~0.01; NaN or garbage fails
                    return f"its {name} layer gives wrong results on {device_type} (relative error {err:.3g})"
    except Exception as e:  # no kernel for this device, a missing native library, an old CPU
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
    return None


def check_adamw8bit(device: str) -> None:
    why = bnb_unsupported(torch.device(device).type)
    if why:
        raise UsageError(f"--optim adamw8bit: bitsandbytes cannot run on this run's device {device} ({why}); "
                         "use --optim adamw")


def adamw8bit(groups: list[dict], lr: float, device: str):
    """bitsandbytes AdamW8bit over the engine's parameter groups; one line where it cannot run."""
    check_adamw8bit(device)
    return import_bitsandbytes().optim.AdamW8bit(groups, lr=lr)
