"""Checkpoints: safetensors weights, resume state, and the engine's two checkpoint folders
(their names are src/engine/rundir.py's; the crash-safe folder writes are src/files.py's,
re-exported here for the callers that think of them as checkpoint operations).

    RUN/checkpoint/last/   resumable state (`save_resumable`, `latest_complete`)
    RUN/checkpoint/best/   what prediction needs (written by the stage's `save_best`)

Resume state is loaded with `torch.load(weights_only=True)`: it holds only tensors and
plain Python values (RNG states converted to tensors/lists).
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..files import (MARKER, CheckpointWriteError, append_jsonl, atomic_dir, complete_dir,  # noqa: F401 (re-exported)
                     is_complete, recover_dir, shared_atomic_dir, truncate_jsonl)
from ..errors import UsageError
from . import faults
from .rundir import RESUME_STATE, SHARDED_STATE, RunDir  # noqa: F401 (SHARDED_STATE re-exported)


# --- layout -----------------------------------------------------------------------------

def checkpoint_root(run_dir: str | os.PathLike) -> Path:
    return RunDir(run_dir).checkpoint


def last_dir(run_dir: str | os.PathLike) -> Path:
    """Where the resumable state of a run lives (read it through `latest_complete`)."""
    return RunDir(run_dir).last


def best_dir(run_dir: str | os.PathLike) -> Path:
    """Where the stage's `save_best` output lives (read it through `complete_dir`)."""
    return RunDir(run_dir).best


def latest_complete(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete resumable checkpoint of `run_dir`, or None. Finishes or undoes
    an interrupted save first (see src/files.py), so call it from the process that
    owns the run (the trainer), not from a reader running beside it."""
    folder = recover_dir(last_dir(run_dir))
    return folder if folder is not None and has_resume_state(folder) else None


def has_resume_state(folder: Path) -> bool:
    return (Path(folder) / RESUME_STATE).exists()


def save_resumable(run_dir: str | os.PathLike, **state: Any) -> Path:
    """`save_resume_state(**state)` into the run's last checkpoint, replacing it crash-safely."""
    with atomic_dir(last_dir(run_dir)) as tmp:
        save_resume_state(tmp, **state)
    return last_dir(run_dir)


# --- weights and resume state -------------------------------------------------------------

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


def save_resume_state(folder: Path, *, model: torch.nn.Module | None, optimizer, scheduler, progress: dict,
                      scaler=None, extra_save: Callable[[Path], None] | None = None,
                      trainable_only: bool = False) -> None:
    """Everything `--resume` needs, in `folder` (a temp folder of `atomic_dir`: see `save_resumable`);
    `trainable_only` (the task's resume_trainable_only) leaves frozen weights out."""
    if model is not None:  # None: the weights are saved elsewhere (the sharded state of shared_atomic_dir)
        save_weights(model, folder / "model.safetensors", trainable_only=trainable_only)
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": rng_state(), "progress": progress}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    faults.point("ckpt-write")  # the weights are on disk, the training state is not
    torch.save(state, folder / RESUME_STATE)
    if extra_save:
        extra_save(folder)


def load_resume_state(folder: Path) -> dict[str, Any]:
    return torch.load(folder / RESUME_STATE, map_location="cpu", weights_only=True)


# --- checkpoint/last as the training loop uses it -------------------------------------------

class _NoOptimizerState:
    """Stands in for an optimizer whose state is not saved here (sharded: it is in SHARDED_STATE;
    a finished run: only a resume would read it)."""

    def state_dict(self) -> dict:
        return {}


class LastCheckpoint:
    """checkpoint/last of the run being trained: restored once before `accelerator.prepare`
    (weights, optimizer, schedule, RNG, data position), saved at step boundaries. Under
    DeepSpeed/FSDP every rank saves and loads its own shards (accelerate's save_state)."""

    def __init__(self, run_dir: str | os.PathLike, accelerator, *, sharded: bool, trainable_only: bool) -> None:
        self.folder = last_dir(run_dir)
        self.accelerator, self.sharded, self.trainable_only = accelerator, sharded, trainable_only
        self.saved_at = time.monotonic()
        self._load_shards = False

    def restore(self, model: torch.nn.Module, optimizer, scheduler) -> dict | None:
        """Load the saved state into `model`, `optimizer` and `scheduler` (before prepare);
        returns the saved progress, or None when there is nothing to resume."""
        if not has_resume_state(self.folder):
            return None
        state = load_resume_state(self.folder)
        self._load_shards = (self.folder / SHARDED_STATE).is_dir()
        if self._load_shards and not self.sharded:
            raise UsageError(f"{self.folder}: saved under DeepSpeed/FSDP ({SHARDED_STATE}/); resume it with the same "
                             f"accelerate config")
        if not self._load_shards:  # a sharded save holds weights and optimizer in SHARDED_STATE: see restore_shards
            load_weights(model, self.folder / "model.safetensors")
            if state["optimizer"]:  # empty: an older DeepSpeed run, or a finished run saved without it
                optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        return state["progress"]

    def restore_shards(self) -> None:
        """After prepare: every rank reads its own shards (and RNG state)."""
        if self._load_shards:
            self.accelerator.load_state(str(self.folder / SHARDED_STATE))

    def save(self, model: torch.nn.Module, optimizer, scheduler, progress: dict, *, keep_optimizer: bool = True) -> None:
        """Replace checkpoint/last crash-safely (every process must call it). Without
        `keep_optimizer` (a finished run) the Adam moments, twice the weights' size, are left out."""
        acc = self.accelerator
        self.saved_at = time.monotonic()
        acc.wait_for_everyone()
        if self.sharded:
            # ZeRO / FSDP partition the optimizer state (and FSDP the weights) across processes:
            # one process cannot save them, so every rank writes its shards with accelerate's
            # save_state into one shared temp folder; the schedule and data position go beside them.
            with shared_atomic_dir(self.folder, acc) as tmp:
                acc.save_state(str(tmp / SHARDED_STATE))
                if acc.is_main_process:
                    save_resume_state(tmp, model=None, optimizer=_NoOptimizerState(), scheduler=scheduler,
                                      progress=progress)
        elif acc.is_main_process:
            with atomic_dir(self.folder) as tmp:
                save_resume_state(tmp, model=acc.unwrap_model(model),
                                  optimizer=optimizer if keep_optimizer else _NoOptimizerState(),
                                  scheduler=scheduler, progress=progress, trainable_only=self.trainable_only)
        acc.wait_for_everyone()

    def periodic_due(self, step: int, every_steps: int, every_minutes: float) -> bool:
        """--save-every-steps / --save-every-minutes: resumable checkpoints between evals."""
        due = bool(every_steps) and step % every_steps == 0
        if every_minutes and not due:
            due = time.monotonic() - self.saved_at >= 60 * every_minutes
            if self.accelerator.num_processes > 1:  # clocks differ, and all processes must save together: rank 0 decides
                from accelerate.utils import broadcast
                flag = torch.tensor([float(due)], device=self.accelerator.device)
                due = bool(broadcast(flag, from_process=0).item())
        return due
