"""Ctrl-C and SIGTERM (preemption) during training: stop at the next step boundary with
checkpoint/last saved, instead of a traceback and the progress since the last eval lost.

The first SIGINT/SIGTERM only sets a flag (the loop checks it after each optimizer step,
saves and raises `TrainingInterrupted`); the handlers are then put back, so a second
Ctrl-C interrupts at once (KeyboardInterrupt), whatever the loop is doing.
"""
from __future__ import annotations

import signal
import threading

from ..errors import TrainingInterrupted  # noqa: F401 (raised by the loop, re-exported)


class StopRequests:
    """Context manager: while open, the first SIGINT/SIGTERM sets `requested` (see module doc)."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name
        self._restore()  # the next one acts at once
        print(f"\n[{self.signal_name}] stopping at the end of this step with checkpoint/last saved "
              "(again to stop at once)", flush=True)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> "StopRequests":
        # signal handlers can only be set from the main thread (a notebook or sweep worker thread: no-op)
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                signum = getattr(signal, name, None)
                if signum is not None:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()
