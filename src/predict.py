"""Predict a Kaggle test file into submission.csv, or check a submission.

    python -m src.predict --run runs/minilm-x --data test.csv --out submission.csv
    python -m src.predict --run runs/f0 --run runs/f1 --weights 0.6,0.4 --data test.csv --out sub.csv
    python -m src.predict --run runs/cv5 --data val.csv --out val_pred.csv      # a K-fold run dir: all folds
    python -m src.predict --check submission.csv --data test.csv
    python -m src.predict --check submission.csv --data test.csv --task binary   # WSDM: id,winner
    python -m src.predict --run runs/cv5 --data pool.csv --pseudo-label pool_pl.csv --min-confidence 0.5
    python -m src.predict --fit-weights --run runs/a --run runs/b --out weights.json
    python -m src.predict --average-folds runs/cv5-avg --run runs/cv5      # K fold runs -> one model
    python -m src.predict --run runs/a --run runs/b --weights weights.json --data test.csv --out sub.csv
    python -m src.predict --run runs/gemma-lora --load-in-8bit --data test.csv --out sub.csv   # 2xT4: 8-bit base
    python -m src.predict --zero-shot --model smollm2-135m-instruct --calibrate-on labelled.csv --data test.csv --out sub.csv

Every id of --data gets a row, in input order: rows that cannot be parsed get
the class prior and are listed in the report (<out stem>_report.json). With
labels in --data (a validation CSV) it also prints log loss and accuracy.
--check prints one line per problem and exits 1 if there is any.
"""
from __future__ import annotations

import argparse
import sys


def _weights(text: str) -> list[float] | str:
    """Comma-separated numbers, or a weights.json written by --fit-weights (read later, checked against --run)."""
    if text.endswith(".json"):
        return text
    try:
        return [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"weights must be comma-separated numbers or a weights.json, got {text!r}") from None


def add_quantization_args(ap: argparse.ArgumentParser) -> None:
    """--load-in-8bit / --load-in-4bit for adapter runs (shared by every predicting entry point)."""
    q = ap.add_mutually_exclusive_group()
    q.add_argument("--load-in-8bit", action="store_true",
                   help="adapter (LoRA) runs: load the base in int8 (bitsandbytes LLM.int8; CUDA or an x86-64 CPU), one copy per GPU")
    q.add_argument("--load-in-4bit", action="store_true",
                   help="adapter (LoRA) runs: load the base in nf4 with double quantisation (bitsandbytes; CUDA or an x86-64 CPU)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m src.predict", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--run", action="append", default=[], metavar="DIR",
                    help="run dir, its checkpoint/best folder, or a K-fold run dir (repeat for an ensemble)")
    ap.add_argument("--data", help="Kaggle test CSV (id, prompt, response_a, response_b) or pairwise JSONL")
    ap.add_argument("--out", help="submission CSV to write (with --fit-weights: the weights.json)")
    ap.add_argument("--pseudo-label", metavar="OUT_CSV",
                    help="write --data as a TRAINING file whose winner columns are the ensemble + swap-TTA "
                         "probabilities (soft labels), the runs named in a column and in OUT_CSV's _report.json")
    ap.add_argument("--min-confidence", type=float, default=0.0,
                    help="with --pseudo-label: keep rows whose top probability is at least this [default: 0]")
    ap.add_argument("--fit-weights", action="store_true",
                    help="fit non-negative ensemble weights + one temperature on the runs' out-of-fold "
                         "predictions (rows must match) and write them to --out (weights.json)")
    ap.add_argument("--average-folds", metavar="OUT_DIR",
                    help="average the --run fold runs (a K-fold run dir, or several runs of one config) into one "
                         "model written as the run dir OUT_DIR; predict with --run OUT_DIR (src/pref/modeling/average.py)")
    ap.add_argument("--check", metavar="SUBMISSION", help="validate this submission against --data instead of predicting")
    ap.add_argument("--task", choices=["arena3", "binary"],
                    help="with --check: the submission schema to check (binary: WSDM id,winner) [default: arena3]; "
                         "predicting takes the task from the runs' config (a --task that differs is refused)")
    ap.add_argument("--weights", type=_weights, help="comma-separated ensemble weights, one per run (default equal), "
                                                    "or a weights.json from --fit-weights (weights + temperature)")
    ap.add_argument("--uncalibrated", action="store_true",
                    help="each run at T = 1 instead of its saved temperature (a run whose metrics.json says "
                         "the calibrated figure is worse: calibration_hurt)")
    ap.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                    help="average with the A/B-swapped pass [default: on]")
    ap.add_argument("--tta-budget-minutes", type=float, metavar="M",
                    help="gated swap TTA: every row in the A-first order, then the B-first order on the least "
                         "confident rows (|P(A)-P(B)| smallest) until M minutes from the start are spent (shared "
                         "among the runs); the report says how many rows got both orders [default: full TTA]")
    ap.add_argument("--batch-size", type=int, help="rows of full length per batch (shorter rows pack more) "
                                                   "[default: the run's eval_max_tokens token budget]")
    ap.add_argument("--max-tokens", type=int, help="padded tokens per batch (overrides --batch-size)")
    ap.add_argument("--max-len", type=int, help="token budget per sequence [default: the run's max_len]")
    ap.add_argument("--device", default="auto", help="auto | cuda | cuda:N | xpu | mps | cpu [default: auto]")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                    help="autocast precision [default: auto = bf16 where native, fp16 on older GPUs, fp32 otherwise]")
    ap.add_argument("--data-parallel", action=argparse.BooleanOptionalAction, default=True,
                    help="with --device auto/cuda, use every visible GPU [default: on]")
    add_quantization_args(ap)
    ap.add_argument("--zero-shot", action="store_true",
                    help="no trained run: the base decoder --model judges with its LM head (answer tokens A/B/tie "
                         "after the judge prompt, both orders averaged)")
    ap.add_argument("--model", help="with --zero-shot: the base decoder (alias, hub id or folder)")
    ap.add_argument("--calibrate-on", metavar="CSV",
                    help="with --zero-shot: labelled rows to fit one temperature on; they must share no id or "
                         "prompt with --data [default: none, T = 1]")
    ap.add_argument("--report", help="JSON report path [default: <out stem>_report.json]")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar [default: when stderr is a terminal]")
    args = ap.parse_args(argv)
    if args.average_folds:
        if not args.run or args.data or args.out or args.check or args.fit_weights:
            ap.error("--average-folds OUT_DIR needs --run (the fold runs) and nothing else")
    elif args.fit_weights:
        if not args.run or not args.out:
            ap.error("--fit-weights needs --run DIR (two or more) and --out weights.json")
    elif args.zero_shot:
        if args.run or args.pseudo_label or not args.model or not args.data or not args.out:
            ap.error("--zero-shot needs --model NAME, --data FILE and --out FILE (no --run, no --pseudo-label)")
    elif args.check is None:
        if not args.run:
            ap.error("--run DIR is required (or --check SUBMISSION)")
        if not args.data:
            ap.error("--data FILE is required")
        if not args.out and not args.pseudo_label:
            ap.error("--out FILE (or --pseudo-label OUT_CSV) is required (or --check SUBMISSION)")
    elif not args.data:
        ap.error("--check needs --data FILE")
    elif args.run or args.out:
        ap.error("--check validates an existing file: leave out --run and --out")
    if (args.load_in_4bit or args.load_in_8bit) and (args.check is not None or args.fit_weights):
        ap.error("--load-in-4bit/--load-in-8bit are for predicting with adapter runs, not --check or --fit-weights")
    if args.tta_budget_minutes is not None and (args.tta_budget_minutes < 0 or not args.tta):
        ap.error("--tta-budget-minutes must be >= 0, with --tta (the default)")
    for name in ("batch_size", "max_tokens", "max_len"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            ap.error(f"--{name.replace('_', '-')} must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .errors import UsageError, run_cli
    from .pref.inference.submission import check_submission, predict_file
    found: list[str] = []

    def check() -> None:
        found.extend(check_submission(args.check, args.data, task=args.task or "arena3"))
        for line in found:
            print(line)
        if not found:
            print(f"{args.check}: ok")

    def weights() -> tuple[list[float] | None, float]:
        if isinstance(args.weights, str):
            from .pref.checkpoint import expand_runs
            from .pref.inference.ensemble_weights import load_weights_file
            fw = load_weights_file(args.weights, runs=args.run)
            # one weight per --run; a K-fold run dir shares its weight equally among its folds
            per_fold = [w / len(expand_runs([r])) for r, w in zip(args.run, fw.weights)
                        for _ in range(len(expand_runs([r])))]
            return per_fold, fw.temperature
        return args.weights, 1.0

    def predict() -> None:
        from .pref.inference.predict import check_quantized_runs
        # before any data or weights: where bitsandbytes cannot run, without it, or on a full-weight run
        quantize = check_quantized_runs(args.run, load_in_4bit=args.load_in_4bit, load_in_8bit=args.load_in_8bit,
                                        device=args.device)
        progress = sys.stderr.isatty() if args.progress is None else args.progress
        w, t = weights()
        kw = dict(tta=args.tta, device=args.device, precision=args.precision, max_len=args.max_len,
                  batch_size=args.batch_size, max_tokens=args.max_tokens, data_parallel=args.data_parallel,
                  progress=progress, quantize=quantize, uncalibrated=args.uncalibrated)
        if args.pseudo_label:
            from .pref.inference.pseudo_label import pseudo_label_file
            pseudo_label_file(args.run, args.data, args.pseudo_label, min_confidence=args.min_confidence,
                              weights=w, temperature=t, task=args.task, **kw)
        runs = [zero_shot()] if args.zero_shot else args.run
        if args.out:
            predict_file(runs, args.data, args.out, weights=w, report_path=args.report,
                         ensemble_temperature=t, task=args.task, tta_budget_minutes=args.tta_budget_minutes, **kw)

    def zero_shot():
        from .data.arena import read_pairs
        from .pref.inference.zero_shot import DEFAULT_MAX_LEN, zero_shot_run
        cal = read_pairs(args.calibrate_on).records if args.calibrate_on else None
        return zero_shot_run(args.model, calibrate=cal, scored=read_pairs(args.data).records,
                             max_len=args.max_len or DEFAULT_MAX_LEN, device=args.device, precision=args.precision)

    def fit() -> None:
        from .pref.inference.ensemble_weights import fit_runs
        fw = fit_runs(args.run)
        fw.save(args.out)
        cf = "n/a" if fw.cross_fitted_log_loss is None else f"{fw.cross_fitted_log_loss:.4f}"
        print(f"[weights] {args.out}: weights {[round(w, 4) for w in fw.weights]}, temperature {fw.temperature:.3f} "
              f"on {fw.n_rows} shared OOF rows: log loss {fw.oof_log_loss:.4f} in-sample (fitted on these rows), "
              f"{cf} cross-fitted, {fw.equal_weights_log_loss:.4f} with equal weights")

    def average() -> None:
        from .pref.modeling.average import average_runs
        summary = average_runs(args.run, args.average_folds)
        print(f"[average] {args.average_folds}: {len(summary['averaged_from'])} runs averaged "
              f"(temperature {summary['temperature']:.3f}, the mean of the folds'); {summary['note']}")

    def body() -> None:
        try:
            (average if args.average_folds else check if args.check is not None
             else fit if args.fit_weights else predict)()
        except ValueError as e:  # a data file the reader refuses, weights that do not match the runs
            raise e if isinstance(e, UsageError) else UsageError(str(e)) from e

    rc = run_cli(body)
    return rc or (1 if found else 0)


if __name__ == "__main__":
    sys.exit(main())
