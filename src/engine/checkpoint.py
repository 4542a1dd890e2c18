"""Checkpoints: safetensors weights, resume state, crash-safe checkpoint folders, and the
run logs that resume rewinds.

Layout (the one owner: stages call these instead of spelling paths):
    RUN/checkpoint/last/   resumable state (`save_resumable`, `latest_complete`)
    RUN/checkpoint/best/   what prediction needs (written by the stage's `save_best`)

Crash safety of a checkpoint folder (`atomic_dir`), for `kill -9` at any instruction:
a new folder is written as `.NAME.tmp-*`, its files fsynced, then a completeness marker
(`.complete`, listing file sizes) is written last; only then is the old folder renamed
to `.NAME.old-*` and the new one renamed into place (and the marker, needed no more, removed). A POSIX directory cannot be renamed
over a non-empty one, so NAME is briefly absent between the two renames, but a complete
copy is on disk at every instant, and the order is fixed: a marked temp folder is newer
than NAME, NAME is newer than an `.old-*`. `recover_dir` (run by the writer before each
save and on resume) applies that order: it promotes the newest complete folder to NAME
and removes every leftover (unmarked temp folders of an interrupted save, old ones), so
leftovers never pile up and resume always starts from the newest complete state.
Readers that must not modify a run (prediction while training runs) use `complete_dir`.

Resume state is loaded with `torch.load(weights_only=True)`: it holds only tensors and
plain Python values (RNG states converted to tensors/lists).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import UsageError
from . import faults

MARKER = ".complete"
# under DeepSpeed/FSDP: accelerate save_state output (every rank's weight and optimizer shards) in last/
SHARDED_STATE = "sharded"


class CheckpointWriteError(UsageError):
    """A checkpoint could not be written (disk full, quota, read-only disk). The previous
    checkpoint is left as it was; the message is one line, so CLIs print it as such."""


# --- layout -----------------------------------------------------------------------------

def checkpoint_root(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoint"


def last_dir(run_dir: str | os.PathLike) -> Path:
    """Where the resumable state of a run lives (read it through `latest_complete`)."""
    return checkpoint_root(run_dir) / "last"


def best_dir(run_dir: str | os.PathLike) -> Path:
    """Where the stage's `save_best` output lives (read it through `complete_dir`)."""
    return checkpoint_root(run_dir) / "best"


def latest_complete(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete resumable checkpoint of `run_dir`, or None. Finishes or undoes
    an interrupted save first (see the module doc), so call it from the process that
    owns the run (the trainer), not from a reader running beside it."""
    folder = recover_dir(last_dir(run_dir))
    return folder if folder is not None and (folder / "training_state.pt").exists() else None


def save_resumable(run_dir: str | os.PathLike, **state: Any) -> Path:
    """`save_resume_state(**state)` into the run's last checkpoint, replacing it crash-safely."""
    with atomic_dir(last_dir(run_dir)) as tmp:
        save_resume_state(tmp, **state)
    return last_dir(run_dir)


# --- crash-safe folders -----------------------------------------------------------------

def _durable() -> bool:
    """fsync guards against a power cut, not a killed process (the OS still holds its
    writes); crash tests that only kill processes set PREFPIPE_FSYNC=0 to run faster."""
    return os.environ.get("PREFPIPE_FSYNC", "1") != "0"


def _fsync_dir(path: Path) -> None:
    if not _durable():
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its renames are journaled anyway
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _files(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER}


def _mark_complete(folder: Path) -> None:
    """fsync every file, then write the marker last: a folder with a marker is whole,
    on a crash of the process and of the machine alike."""
    for p in sorted(folder.rglob("*")) if _durable() else ():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    for d in sorted({p.parent for p in folder.rglob("*")} | {folder}, key=lambda d: -len(d.parts)):
        _fsync_dir(d)
    body = json.dumps({"time_ns": time.time_ns(), "files": _files(folder)})
    with open(folder / MARKER, "w", encoding="utf-8") as f:
        f.write(body)
        f.flush()
        if _durable():
            os.fsync(f.fileno())
    _fsync_dir(folder)


def _marker(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(folder: str | os.PathLike) -> bool:
    """True when the temp folder `folder` holds a marker and every file it lists, at the
    listed size (a folder in place under its final name is whole by construction)."""
    folder = Path(folder)
    mark = _marker(folder)
    if not isinstance(mark, dict) or not isinstance(mark.get("files"), dict):
        return False
    return all((folder / name).is_file() and (folder / name).stat().st_size == size
               for name, size in mark["files"].items())


def _age_key(folder: Path) -> tuple[int, float]:
    mark = _marker(folder) or {}
    try:
        mtime = folder.stat().st_mtime
    except OSError:
        mtime = 0.0
    return int(mark.get("time_ns", 0)), mtime


def _siblings(final: Path, kind: str) -> list[Path]:
    if not final.parent.is_dir():
        return []
    return sorted((p for p in final.parent.glob(f".{final.name}.{kind}-*") if p.is_dir()), key=_age_key)


def _rename(src: Path, dst: Path) -> None:
    src.rename(dst)
    _fsync_dir(dst.parent)


def recover_dir(final: str | os.PathLike) -> Path | None:
    """Put the newest complete version of `final` in place and remove the leftovers of
    interrupted saves; returns `final`, or None when no complete version exists.
    Newest first: a marked `.tmp-*` (its save was cut before the swap), then `final`,
    then an `.old-*` (the swap was cut between its renames). Safe to interrupt: each
    rename keeps that order, so running it again finishes the job."""
    final = Path(final)
    temps = _siblings(final, "tmp")
    complete = [t for t in temps if is_complete(t)]
    for t in temps:
        if t not in complete:
            shutil.rmtree(t, ignore_errors=True)  # an interrupted save: never whole
    if complete:
        if final.exists():
            _rename(final, final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        _rename(complete[-1], final)
        (final / MARKER).unlink(missing_ok=True)
        for t in complete[:-1]:
            shutil.rmtree(t, ignore_errors=True)
    olds = _siblings(final, "old")
    if olds and not final.exists():
        _rename(olds.pop(), final)
    for o in olds:
        shutil.rmtree(o, ignore_errors=True)
    return final if final.exists() else None


def complete_dir(final: str | os.PathLike) -> Path | None:
    """Read-only twin of `recover_dir` for readers beside a running writer: `final` when it
    is in place, else the complete copy a save cut between its renames left, else None."""
    final = Path(final)
    if final.exists():
        return final
    cands = [*reversed([t for t in _siblings(final, "tmp") if is_complete(t)]), *reversed(_siblings(final, "old"))]
    return cands[0] if cands else None


def _disk_trouble(e: BaseException) -> str | None:
    """A reason to tell the user when `e` means the disk refused the write."""
    codes = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
             errno.EFBIG: "file too large"}
    if hasattr(errno, "EDQUOT"):
        codes[errno.EDQUOT] = "disk quota exceeded"
    if isinstance(e, OSError) and e.errno in codes:
        return codes[e.errno]
    text = str(e)
    # safetensors (Rust) and torch's zip writer report ENOSPC in their own words
    if "No space left on device" in text or "os error 28" in text or "file write failed" in text:
        return "no space left on device"
    return None


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, token: str | None = None) -> Iterator[Path]:
    """Yield a temp folder next to `final`; when the block ends, mark it complete and swap
    it into place (crash-safe: see the module doc). On an error the temp folder is removed
    and `final` stays as it was; a full or read-only disk becomes a CheckpointWriteError.
    `token` names the temp folder (shared_atomic_dir: every process must know it)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(final)  # finish or clean up an earlier interrupted save first
    tmp = _tmp_path(final, token or uuid.uuid4().hex[:8])
    tmp.mkdir()
    try:
        yield tmp
        _mark_complete(tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = _disk_trouble(e)
        if reason:
            kept = "the previous checkpoint is kept" if final.exists() else "nothing was kept"
            raise CheckpointWriteError(f"{final}: could not write a checkpoint ({reason}); {kept}; "
                                       f"free some space (or write the run elsewhere) and rerun with --resume") from e
        raise
    faults.point("ckpt-marked")
    old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
    if final.exists():
        _rename(final, old)
    faults.point("ckpt-swap")
    _rename(tmp, final)
    faults.point("ckpt-swapped")
    shutil.rmtree(old, ignore_errors=True)
    # In place, a folder is whole by construction; the marker only ranks temp folders, so
    # drop it: a checkpoint (or an export uploaded as a dataset) keeps exactly its own files.
    (final / MARKER).unlink(missing_ok=True)


def _tmp_path(final: Path, token: str) -> Path:
    return final.parent / f".{final.name}.tmp-{token}"


@contextlib.contextmanager
def shared_atomic_dir(final: str | os.PathLike, accelerator) -> Iterator[Path]:
    """`atomic_dir` written by every process (sharded state under DeepSpeed/FSDP): all ranks
    get the same temp folder (the main process picks its name), and the main process marks
    and swaps it only after a barrier, so the folder is whole when it lands. Every rank must
    enter it. An error on the main process removes the temp folder as atomic_dir does (the
    other ranks then wait at the barrier until the process group times out, as with any
    collective a rank has left)."""
    from accelerate.utils import broadcast_object_list
    final = Path(final)
    token = broadcast_object_list([uuid.uuid4().hex[:8]], from_process=0)[0]
    if accelerator.is_main_process:
        with atomic_dir(final, token) as tmp:
            accelerator.wait_for_everyone()  # the temp folder exists
            yield tmp
            accelerator.wait_for_everyone()  # every rank has written its shards
    else:
        accelerator.wait_for_everyone()
        yield _tmp_path(final, token)
        accelerator.wait_for_everyone()


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
    torch.save(state, folder / "training_state.pt")
    if extra_save:
        extra_save(folder)


def load_resume_state(folder: Path) -> dict[str, Any]:
    return torch.load(folder / "training_state.pt", map_location="cpu", weights_only=True)


# --- run logs that resume rewinds -----------------------------------------------------------

def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """One JSON line appended in one write: a crash leaves at most a torn last line,
    which `truncate_jsonl` drops on resume."""
    line = json.dumps(record) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        if faults.due("metrics-append"):
            f.write(line[:len(line) // 2])
            f.flush()
            faults.die()
        f.write(line)


def truncate_jsonl(path: str | os.PathLike, step: int) -> str | None:
    """On resume from step `step`: drop the lines logged after it (they are logged again),
    and a torn last line (a crash mid-append). Returns a note for the log when a torn line
    was dropped. A damaged line that is not the last is no crash artefact: UsageError."""
    from ..config import atomic_write_text
    path = Path(path)
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    keep, note = [], None
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    for i, ln in enumerate(lines):
        if not ln.strip():
            continue
        try:
            record = json.loads(ln)
        except ValueError as e:
            if i == last:
                note = (f"{path}: dropped a torn last line ({len(ln.encode())} bytes of an interrupted "
                        f"write: {ln[:40]!r})")
                continue
            raise UsageError(f"{path}: line {i + 1} is not JSON ({e}); only a torn last line is "
                             f"expected after a crash: fix or remove that line") from None
        if not (isinstance(record, dict) and isinstance(record.get("step"), (int, float))
                and record["step"] > step):
            keep.append(ln)
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))
    return note
