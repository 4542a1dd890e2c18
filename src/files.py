"""The one owner of writing files so that a crash never leaves half of one: atomic text
writes, YAML, JSONL appends (and the torn-last-line repair resume needs), and crash-safe
folders. Everything that writes a run file, a dataset, a checkpoint or an export goes
through here; it imports no stage (data/ and engine/ use it too).

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
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import yaml

from .engine import faults
from .errors import UsageError

MARKER = ".complete"


class CheckpointWriteError(UsageError):
    """A checkpoint could not be written (disk full, quota, read-only disk). The previous
    checkpoint is left as it was; the message is one line, so CLIs print it as such."""



# --- files --------------------------------------------------------------------------------

def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write to a temp file in the same folder, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Indented JSON, atomically (metrics, reports, meta files)."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def write_yaml(data: dict, path: str | os.PathLike, header: str = "") -> None:
    """A plain mapping as YAML, atomically; `header` (a comment line) goes first."""
    atomic_write_text(path, (header + "\n" if header else "") + yaml.safe_dump(data, sort_keys=False))


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


# --- JSONL logs (append; resume rewinds them) -----------------------------------------------------------

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

