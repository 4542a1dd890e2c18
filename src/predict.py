"""Predict a Kaggle test file into submission.csv, or check a submission.

    python -m src.predict --run runs/minilm-x --data test.csv --out submission.csv
    python -m src.predict --run runs/f0 --run runs/f1 --weights 0.6,0.4 --data test.csv --out sub.csv
    python -m src.predict --run runs/cv5 --data val.csv --out val_pred.csv      # a K-fold run dir: all folds
    python -m src.predict --check submission.csv --data test.csv

Every id of --data gets a row, in input order: rows that cannot be parsed get
the class prior and are listed in the report (<out stem>_report.json). With
labels in --data (a validation CSV) it also prints log loss and accuracy.
--check prints one line per problem and exits 1 if there is any.
"""
from __future__ import annotations

import argparse
import sys


def _weights(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"weights must be comma-separated numbers, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m src.predict", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--run", action="append", default=[], metavar="DIR",
                    help="run dir, its checkpoint/best folder, or a K-fold run dir (repeat for an ensemble)")
    ap.add_argument("--data", required=True, help="Kaggle test CSV (id, prompt, response_a, response_b) or pairwise JSONL")
    ap.add_argument("--out", help="submission CSV to write")
    ap.add_argument("--check", metavar="SUBMISSION", help="validate this submission against --data instead of predicting")
    ap.add_argument("--weights", type=_weights, help="comma-separated ensemble weights, one per run (default equal)")
    ap.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                    help="average with the A/B-swapped pass [default: on]")
    ap.add_argument("--batch-size", type=int, help="rows of full length per batch (shorter rows pack more) "
                                                   "[default: the run's eval_max_tokens token budget]")
    ap.add_argument("--max-tokens", type=int, help="padded tokens per batch (overrides --batch-size)")
    ap.add_argument("--max-len", type=int, help="token budget per sequence [default: the run's max_len]")
    ap.add_argument("--device", default="auto", help="auto | cuda | cuda:N | xpu | mps | cpu [default: auto]")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                    help="autocast precision [default: auto = bf16 where native, fp16 on older GPUs, fp32 otherwise]")
    ap.add_argument("--data-parallel", action=argparse.BooleanOptionalAction, default=True,
                    help="with --device auto/cuda, use every visible GPU [default: on]")
    ap.add_argument("--report", help="JSON report path [default: <out stem>_report.json]")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar [default: when stderr is a terminal]")
    args = ap.parse_args(argv)
    if args.check is None:
        if not args.run:
            ap.error("--run DIR is required (or --check SUBMISSION)")
        if not args.out:
            ap.error("--out FILE is required (or --check SUBMISSION)")
    elif args.run or args.out:
        ap.error("--check validates an existing file: leave out --run and --out")
    for name in ("batch_size", "max_tokens", "max_len"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            ap.error(f"--{name.replace('_', '-')} must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .errors import UsageError, run_cli
    from .pref.submission import check_submission, predict_file
    found: list[str] = []

    def check() -> None:
        found.extend(check_submission(args.check, args.data))
        for line in found:
            print(line)
        if not found:
            print(f"{args.check}: ok")

    def predict() -> None:
        progress = sys.stderr.isatty() if args.progress is None else args.progress
        predict_file(args.run, args.data, args.out, weights=args.weights, tta=args.tta, device=args.device,
                     precision=args.precision, max_len=args.max_len, batch_size=args.batch_size,
                     max_tokens=args.max_tokens, data_parallel=args.data_parallel, report_path=args.report,
                     progress=progress)

    def body() -> None:
        try:
            (check if args.check is not None else predict)()
        except ValueError as e:  # a data file the reader refuses, weights that do not match the runs
            raise e if isinstance(e, UsageError) else UsageError(str(e)) from e

    rc = run_cli(body)
    return rc or (1 if found else 0)


if __name__ == "__main__":
    sys.exit(main())
