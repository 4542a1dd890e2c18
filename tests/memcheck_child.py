"""Child process of test_memplan: peak RSS growth of one fwd+bwd step of a tiny decoder.

Run with MALLOC_MMAP_THRESHOLD_=65536 so glibc maps every tensor-sized block and
returns it on free: RSS then follows live memory instead of the allocator's cache.
Argument: a JSON list of [name, lora, ckpt, sequences, max_len]; prints one JSON line,
a list of {"measured": bytes, "attn": ...} (one process for all: imports dominate).
"""
from __future__ import annotations

import gc
import json
import sys

import torch

from src.pref.modeling.backbone import LoraSpec, hidden_states, load_backbone, pool


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))


def measure(name: str, lora: bool, ckpt: bool, sequences: int, max_len: int) -> dict:
    torch.manual_seed(0)
    b = load_backbone(name, lora=LoraSpec(r=8) if lora else None, gradient_checkpointing=ckpt, log=None)
    b.model.train()
    ids = torch.randint(5, 300, (sequences, max_len))
    mask = torch.ones_like(ids)

    def step():
        pool(hidden_states(b.model, ids, mask, True), mask, "last").sum().backward()
    step()
    step()  # gradients exist from here on: the measured step only adds activations and transients
    gc.collect()
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark
    step()
    out = {"measured": _status("VmHWM") - base, "attn": b.info["attn"]}
    del b
    gc.collect()
    return out


if __name__ == "__main__":
    print(json.dumps([measure(*args) for args in json.loads(sys.argv[1])]))
