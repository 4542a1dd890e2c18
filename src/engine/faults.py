"""Named crash points for fault-injection tests: `PREFPIPE_FAULT=ckpt-swap:3` makes the
process SIGKILL itself the 3rd time it reaches the point `ckpt-swap`, so a test can kill
a run exactly where a crash hurts most (mid checkpoint write, between two renames, mid
metrics line) instead of hoping a timer lands there. Several points: `a:2,b:1`.

Points (see POINTS): the checkpoint writer's (`atomic_dir`, every checkpoint folder),
the metrics appender's and the engine loop's step. Unset (the normal case) each point
is one dict lookup.
"""
from __future__ import annotations

import os
import signal
import sys

ENV = "PREFPIPE_FAULT"
POINTS = {
    "ckpt-write": "a checkpoint's files are half written (weights on disk, training state not)",
    "ckpt-marked": "a new checkpoint is complete in its temp folder, the old one still in place",
    "ckpt-swap": "between the two renames: the old checkpoint moved aside, the new one not yet in place",
    "ckpt-swapped": "the new checkpoint in place, the old one not yet removed",
    "metrics-append": "half of a metrics.jsonl line written (a torn last line)",
    "step": "right after an optimizer step",
}
COUNT_ONLY = "step:0"  # never fires, but counts every pass (see `passes`)
_seen: dict[str, int] = {}


def _armed() -> dict[str, int]:
    spec = os.environ.get(ENV, "")
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, n = part.partition(":")
        if name not in POINTS:
            raise ValueError(f"{ENV}={spec!r}: unknown fault point {name!r} (known: {', '.join(POINTS)})")
        out[name] = int(n or 1)
    return out


def due(name: str) -> bool:
    """Count one pass through `name`; True on the pass the environment asks to die at."""
    if not os.environ.get(ENV):
        return False
    _seen[name] = _seen.get(name, 0) + 1
    return _armed().get(name) == _seen[name]


def die() -> None:
    """What `kill -9` does: no cleanup, no finally blocks, no flushing of Python buffers."""
    sys.stderr.flush()
    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)  # Windows: no SIGKILL


def point(name: str) -> None:
    if due(name):
        die()


def passes() -> dict[str, int]:
    """How often each point was passed in this process (counted only while the variable is set)."""
    return dict(_seen)


def reset() -> None:
    """Forget the counts (a forked child starts a fresh run)."""
    _seen.clear()
