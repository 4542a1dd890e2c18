"""Checkpoints: safetensors weights, resume state, atomic directory writes.

A checkpoint folder is written under a temporary name and renamed into place,
so a crash mid-save leaves the previous checkpoint intact, never a half one.
Resume state is loaded with `torch.load(weights_only=True)`: it holds only
tensors and plain Python values (RNG states converted to tensors/lists).
"""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder next to `final`; on success swap it into place."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_weights(model: torch.nn.Module, path: str | os.PathLike, trainable_only: bool = False) -> None:
    """All of `model.state_dict()`; with `trainable_only`, frozen parameters are left out
    (a LoRA base: it is loaded from the base model again, and would make every resume
    checkpoint as large as the base)."""
    state = model.state_dict()
    if trainable_only:
        frozen = {n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}
        state = {k: v for k, v in state.items() if k not in frozen}
    # contiguous + clone: safetensors refuses shared/non-contiguous storage (tied embeddings).
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    save_file(state, str(path), metadata={"format": "pt", "trainable_only": str(int(trainable_only))})


def load_weights(model: torch.nn.Module, path: str | os.PathLike, strict: bool = True) -> None:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        trainable_only = (f.metadata() or {}).get("trainable_only") == "1"
    state = load_file(str(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # tied weights (e.g. lm_head = wte) are stored once; anything else missing is an error
    missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if trainable_only:  # frozen parameters were left out on purpose
        frozen = {n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}
        missing = [k for k in missing if k not in frozen]
    if strict and (missing or unexpected):
        raise RuntimeError(f"{path}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        state["xpu"] = torch.xpu.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state((npy[0], npy[1].numpy().astype(np.uint32), *npy[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "xpu" in state and hasattr(torch, "xpu") and torch.xpu.is_available():
        torch.xpu.set_rng_state_all(state["xpu"])


def save_resume_state(folder: Path, *, model: torch.nn.Module, optimizer, scheduler, progress: dict,
                      scaler=None, extra_save: Callable[[Path], None] | None = None) -> None:
    """Everything `--resume` needs, in `folder` (written atomically by the caller)."""
    save_weights(model, folder / "model.safetensors", trainable_only=getattr(model, "resume_trainable_only", False))
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": rng_state(), "progress": progress}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    torch.save(state, folder / "training_state.pt")
    if extra_save:
        extra_save(folder)


def load_resume_state(folder: Path) -> dict[str, Any]:
    return torch.load(folder / "training_state.pt", map_location="cpu", weights_only=True)
