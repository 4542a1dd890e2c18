"""Classic baselines on an arena CSV, with prompt-grouped AND random 5-fold CV.

    python scripts/baselines.py [--data ../shared/data/real_pairs_dev.csv] [--oof runs/x/oof_predictions.csv]

Why both: the same prompt recurs in arena-style data. A random split puts copies
of a prompt on both sides, and text models (TF-IDF) score much better than they
will on new prompts. The pipeline's own folds are grouped by prompt, so compare
it with the grouped column. With --oof, the pipeline's out-of-fold predictions
(from `train_pref --folds K`) are scored on the same rows.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.sparse import hstack  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

from src.data.arena import read_pairs  # noqa: E402
from src.data.split import fold_ids  # noqa: E402
from src.pref.inputs.features import features_matrix  # noqa: E402
from src.pref.inference.calibration import log_loss  # noqa: E402


def cv(predict, y: np.ndarray, folds: np.ndarray) -> float:
    oof = np.zeros((len(y), 3))
    for k in np.unique(folds):
        tr, va = folds != k, folds == k
        oof[va] = predict(tr, va)
    return log_loss(oof, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_pairs_dev.csv"
    ap.add_argument("--data", default=str(default))
    ap.add_argument("--oof", help="oof_predictions.csv of a `train_pref --folds K` run on the same data")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    recs = read_pairs(args.data).records
    y = np.array([r.label for r in recs])
    A = np.array([" ".join(r.response_a) for r in recs], dtype=object)
    B = np.array([" ".join(r.response_b) for r in recs], dtype=object)
    style = features_matrix(recs)
    lengths = np.c_[style[:, 0, :2], style[:, 1, :2], style[:, 0, :2] - style[:, 1, :2]]  # log words/chars

    def prior(tr, va):
        p = np.bincount(y[tr], minlength=3) / tr.sum()
        return np.tile(p, (va.sum(), 1))

    def length_lr(tr, va):
        return LogisticRegression(max_iter=2000).fit(lengths[tr], y[tr]).predict_proba(lengths[va])

    def tfidf_lr(tr, va):
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit(np.r_[A[tr], B[tr]])
        X = hstack([vec.transform(A), vec.transform(B)]).tocsr()
        return LogisticRegression(max_iter=2000).fit(X[tr], y[tr]).predict_proba(X[va])

    grouped = fold_ids(recs, 5, args.seed)
    rand = np.zeros(len(y), dtype=int)
    for k, (_, va) in enumerate(StratifiedKFold(5, shuffle=True, random_state=args.seed).split(A, y)):
        rand[va] = k
    print(f"{args.data}: {len(y)} rows")
    print(f"{'model':28s} {'grouped 5-fold':>15s} {'random 5-fold':>14s}")
    for name, fn in (("class prior", prior), ("length-feature LR", length_lr), ("TF-IDF LR (A | B)", tfidf_lr)):
        print(f"{name:28s} {cv(fn, y, grouped):15.4f} {cv(fn, y, rand):14.4f}")
    if args.oof:
        oof = pd.read_csv(args.oof, dtype={"id": str}).set_index("id")
        p = oof.loc[[r.id for r in recs], ["winner_model_a", "winner_model_b", "winner_tie"]].to_numpy()
        print(f"{'prefpipe OOF (' + Path(args.oof).parent.name + ')':28s} {log_loss(p, y):15.4f} {'-':>14s}")


if __name__ == "__main__":
    main()
