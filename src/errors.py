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


def run_cli(main: Callable[[], object]) -> int:
    """Run a CLI body; a UsageError (or FileNotFoundError) becomes one line and exit 2."""
    try:
        main()
    except (UsageError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
