"""A table of classifier runs (see src/pref/runs.py).

    python -m src.runs                        # every run under runs/
    python -m src.runs runs/a runs/cv5 --csv runs.csv --best
"""
from __future__ import annotations

import argparse
import sys

from .files import atomic_write_text
from .errors import UsageError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m src.runs", description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", default=["runs"], help="run dirs, or folders of run dirs (default: runs/)")
    ap.add_argument("--csv", help="also write the table as CSV here")
    ap.add_argument("--best", action="store_true", help="print the path of the finished run with the lowest val log loss")
    args = ap.parse_args(argv)
    from .pref.runs import best_run, format_table, runs_table
    try:
        table = runs_table(args.runs)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(table))
    if args.csv:
        atomic_write_text(args.csv, table.to_csv(index=False))
    if args.best:
        best = best_run(table)
        if best is None:
            print("best: no finished run", file=sys.stderr)
            return 1
        scored = table.loc[table["state"].eq("done"), "rows"].dropna().unique()
        note = "" if len(scored) <= 1 else "  (runs scored on different numbers of rows: compare with care)"
        print(f"best: {best}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
