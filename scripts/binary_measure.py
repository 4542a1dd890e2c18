"""Gated swap TTA budgets and fold averaging vs the fold ensemble, for a binary K-fold run.

    python scripts/binary_measure.py runs/bin-cv3 heldout.csv --budgets 0 0.1 0.2 inf

On `heldout.csv` (labelled rows that no fold trained on): each fold alone, the K-fold
ensemble (mean of the folds' probabilities) and the fold-averaged model
(`--average-folds`, written to RUN-avg unless it exists), calibrated (each run's
temperature; the averaged model: the folds' mean) and uncalibrated (T = 1); then fold 0
with --tta-budget-minutes at each budget: rows that got both orders, seconds, and
accuracy / log loss against no TTA and full TTA. Binary figures (ties not scored).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from src.data.arena import read_pairs  # noqa: E402
from src.data.tasks import binary_metrics  # noqa: E402
from src.pref.checkpoint import expand_runs  # noqa: E402
from src.pref.inference.ensemble import load_run  # noqa: E402
from src.pref.inference.predict import predict_records  # noqa: E402
from src.pref.inference.tta import deadline_after  # noqa: E402
from src.pref.modeling.average import average_runs  # noqa: E402


def figures(probs, y) -> dict:
    m = binary_metrics(probs, y)
    return {"accuracy": round(m["accuracy"], 4), "log_loss": round(m["log_loss"], 4), "rows": m["rows"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("data")
    ap.add_argument("--budgets", type=float, nargs="*", default=[0.0, 0.1, 0.2, math.inf])
    args = ap.parse_args()
    recs = read_pairs(args.data).records
    y = np.array([r.label for r in recs])
    folds = expand_runs([args.run])
    avg_dir = Path(args.run + "-avg")
    if not avg_dir.exists():
        average_runs([args.run], avg_dir)
    out: dict = {"data": args.data, "rows": len(recs)}
    probs: dict[str, dict[str, np.ndarray]] = {}
    for name, path in [(f"fold{k}", f) for k, f in enumerate(folds)] + [("averaged", avg_dir)]:
        run = load_run(path)
        t0 = time.perf_counter()
        cal = predict_records(run, recs).probs
        run.temperature = 1.0
        raw = predict_records(run, recs).probs
        probs[name] = {"cal": cal, "raw": raw}
        out[name] = {"calibrated": figures(cal, y), "uncalibrated": figures(raw, y),
                     "seconds_two_passes": round(time.perf_counter() - t0, 1)}
    fold_names = [f"fold{k}" for k in range(len(folds))]
    out["ensemble"] = {kind: figures(np.mean([probs[n][kind] for n in fold_names], 0), y)
                       for kind in ("cal", "raw")}
    run = load_run(folds[0])
    none = predict_records(run, recs, tta=False).probs
    full = probs["fold0"]["cal"]
    tta = {"no_tta": figures(none, y), "full_tta": figures(full, y), "budgets": []}
    for minutes in args.budgets:
        t0 = time.perf_counter()
        pred = predict_records(run, recs, tta_deadline=deadline_after(minutes))
        tta["budgets"].append({"minutes": minutes, "rows_both_orders": pred.stats["tta_rows_both_orders"],
                               "seconds": round(time.perf_counter() - t0, 1), **figures(pred.probs, y),
                               "max_abs_diff_vs_full": float(np.abs(pred.probs - full).max())})
    out["gated_tta_fold0"] = tta
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
