"""The one error type for usage and data errors raised by library code.

Library code raises `UsageError` (or a subclass) with a one-line message that
names the file, row, flag or field at fault; it never calls `sys.exit`. Only
the CLIs turn it into `error: <message>` on stderr and exit code 2, through
`run_cli`, so a sweep or a test that calls the library sees an exception it
can catch, not a dead process.
"""
from __future__ import annotations

import sys
from typing import Callable


class UsageError(ValueError):
    """Bad input from the user: a flag, a config field, a file, a run dir."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving checkpoint/last. A KeyboardInterrupt, so code
    that already treats Ctrl-C as "stop" (the sweep's trial bookkeeping) keeps doing so; the
    CLIs print its one-line message, which stages complete with their resume command."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step

    def __str__(self) -> str:
        return str(self.args[0])


def run_cli(main: Callable[[], object]) -> int:
    """Run a CLI body; a UsageError (or FileNotFoundError) becomes one line and exit 2, a
    training run stopped by Ctrl-C/SIGTERM with its checkpoint saved one line and exit 130."""
    try:
        main()
    except (UsageError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if not isinstance(e, TrainingInterrupted):  # a second Ctrl-C: stop at once, as Python does
            raise
        print(f"[stopped] {e}", file=sys.stderr)
        return 130  # 128 + SIGINT, what a shell reports for a Ctrl-C'd command
    return 0
