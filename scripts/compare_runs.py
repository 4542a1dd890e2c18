"""Per-fold figures of two sets of runs and their paired per-row difference.

    python scripts/compare_runs.py --a runs/plain_f0 runs/plain_f1 --b runs/student_f0 runs/student_f1
    python scripts/compare_runs.py --prior --b runs/smol-cv     # each fold against its own class prior

Fold i of --a pairs with fold i of --b (the same validation rows). A K-fold run's folder
(`--folds K` with all folds) stands for its folds. --prior takes each --b run's class
prior (prior.json, the label shares of its training rows) as the A side, and splits the
gain into what the run's P(tie) per row earns and what telling A from B earns.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.errors import run_cli  # noqa: E402
from src.pref.inference.compare import expand_folds, fold_figures, paired, paired_vs_prior, split_vs_prior  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    base = ap.add_mutually_exclusive_group(required=True)
    base.add_argument("--a", nargs="+", help="baseline runs, one per fold")
    base.add_argument("--prior", action="store_true", help="baseline: each --b run's own class prior")
    ap.add_argument("--b", nargs="+", required=True, help="runs to compare, same folds in the same order")
    args = ap.parse_args(argv)

    def body():
        # both refuse mismatched folds before anything is printed
        p = paired_vs_prior(args.b) if args.prior else paired(args.a, args.b)
        print(f"{'run':40s} {'cal':>7s} {'uncal':>7s} {'acc':>6s} {'train':>6s} {'val':>5s} {'sec':>6s}")
        for run in expand_folds([*(args.a or []), *args.b]):
            f = fold_figures(run)
            print(f"{str(run)[-40:]:40s} {f['val_log_loss']:7.4f} {f['val_log_loss_uncalibrated']:7.4f} "
                  f"{f['val_accuracy']:6.3f} {f['n_train']:6d} {f['n_val']:5d} {f['train_seconds']:6.0f}")
        a = "class prior" if args.prior else "A"
        print(f"paired over {p.n} rows (calibrated): {a} {p.mean_a:.4f}  B {p.mean_b:.4f}  "
              f"B - A {p.diff:+.4f} +/- {p.se:.4f} (1 s.e.)")
        if args.prior:
            s = split_vs_prior(args.b)
            print(f"  of which P(tie) per row (A/B split evenly) {s.tie:+.4f} +/- {s.tie_se:.4f}, "
                  f"telling A from B {s.ab:+.4f} +/- {s.ab_se:.4f}")

    sys.exit(run_cli(body))


if __name__ == "__main__":
    main()
