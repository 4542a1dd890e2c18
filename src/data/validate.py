"""Check a pairwise data file: `python -m src.data.validate PATH [--report OUT.json]`.

Prints one JSON object (rows, ok, quarantined, reasons, ...). Exit 0 when the
file could be read, even with quarantined rows; exit 2 with a one-line error
when it cannot be read at all.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import run_cli
from .arena import read_pairs, write_report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path")
    ap.add_argument("--report", help="also write the full report (every quarantined row) to this JSON file")
    ap.add_argument("--max-cell-chars", type=int, default=None, help="quarantine rows with a larger cell")
    args = ap.parse_args(argv)
    kw = {} if args.max_cell_chars is None else {"max_cell_chars": args.max_cell_chars}

    def body() -> None:
        result = read_pairs(args.path, **kw)
        summary = write_report(result, args.report) if args.report else result.report(max_listed=20)
        print(json.dumps(summary))
    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
