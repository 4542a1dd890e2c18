"""A binary (`--task binary`) K-fold run against the length baseline, on the run's own OOF rows and folds.

    python scripts/binary_baseline.py runs/bin-cv3

The length-feature logistic regression of scripts/baselines.py (log words/chars of each
response and their difference), fitted per fold on the rows the run's fold trained on
(the other folds' rows of the same CV) and scored on that fold's validation rows, so both
figures are out-of-fold on exactly the same rows. Accuracy and binary log loss (P(A) and
P(B) renormalised without the tie); the run's figures uncalibrated and calibrated.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from src.config import load_yaml  # noqa: E402
from src.data.arena import read_pairs  # noqa: E402
from src.data.records import LABEL_NAMES  # noqa: E402
from src.data.tasks import binary_metrics  # noqa: E402
from src.pref.inputs.features import features_matrix  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a `train_pref --task binary --folds K` run dir (fold*/val_predictions.csv)")
    args = ap.parse_args()
    run = Path(args.run)
    cfg = load_yaml(run / "config.yaml")
    recs = {r.id: r for r in read_pairs(cfg["data"]).records}
    folds = sorted(run.glob("fold*/val_predictions.csv"))
    parts = []
    for k, f in enumerate(folds):
        df = pd.read_csv(f, dtype={"id": str})
        df["fold"] = k
        parts.append(df)
    oof = pd.concat(parts, ignore_index=True)
    rows = [recs[i] for i in oof["id"]]
    y = oof["label"].to_numpy().astype(int)
    style = features_matrix(rows)
    X = np.c_[style[:, 0, :2], style[:, 1, :2], style[:, 0, :2] - style[:, 1, :2]]
    length = np.zeros((len(y), 3))
    prior = np.zeros((len(y), 3))
    for k in range(len(folds)):
        tr, va = oof["fold"].to_numpy() != k, oof["fold"].to_numpy() == k
        lr = LogisticRegression(max_iter=2000).fit(X[tr], y[tr])
        length[va, :2] = lr.predict_proba(X[va])  # classes 0 (A) and 1 (B): the binary run has no ties
        prior[va, :2] = np.bincount(y[tr], minlength=2)[:2] / tr.sum()
    probs = oof[list(LABEL_NAMES)].to_numpy()
    # val_predictions.csv are calibrated; the uncalibrated figures come from each fold's metrics.json
    fold_metrics = [json.loads((f.parent / "metrics.json").read_text()) for f in folds]
    out = {"rows": int(len(y)), "folds": len(folds),
           "class prior": binary_metrics(prior, y), "length-feature LR": binary_metrics(length, y),
           "prefpipe (calibrated OOF)": binary_metrics(probs, y),
           "prefpipe per fold uncalibrated accuracy / log loss": [
               (m.get("val_binary_accuracy_uncalibrated"), m.get("val_binary_log_loss_uncalibrated"))
               for m in fold_metrics]}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
