"""Soft vs hard labels on synthetic data, where the best possible log loss is known.

    OMP_NUM_THREADS=1 python scripts/soft_vs_hard.py --n 250 1000 4000 --repeats 3
    OMP_NUM_THREADS=1 python scripts/soft_vs_hard.py --student encoder --model minilm --n 800

The generator (src/data/synthetic.py) draws each label from known probabilities
p_true. The TEACHER is those probabilities blurred: softmax(log p_true +
sigma * noise), with fresh Gaussian noise per row and class (--teacher-noise;
0 = the generator itself), so it is good but not perfect, like a real trained
teacher. Two copies of the same student are trained on the same N rows: one on
the rows' sampled hard labels, one on the teacher's probabilities for those
rows (cross-entropy against the distribution, src.pref.modeling.losses). Both are scored
on M fresh rows against their sampled hard labels, beside the optimum (the
generator's own log loss on those rows) and the teacher's.

Students:
  features  a small MLP on the style features of both sides (src.pref.inputs.features),
            swap-augmented, full-batch AdamW, early-stopped on 20% of the N rows
            scored on that student's own targets; trains in seconds. It cannot see a response's
            relevance to the prompt, so its floor sits above the optimum.
  encoder   the real classifier (src.pref.train.train_split, siamese encoder),
            soft targets read through the arena reader as winner-column
            probabilities; no calibration, checkpoint = end of training, so the
            eval rows choose nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from src.data.records import SWAP_COLUMNS  # noqa: E402
from src.data.synthetic import make_rows  # noqa: E402
from src.pref.inference.calibration import log_loss  # noqa: E402
from src.pref.modeling.losses import soft_cross_entropy  # noqa: E402

LABELS = ["winner_model_a", "winner_model_b", "winner_tie"]


def teacher_probs(p_true: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    z = np.log(np.clip(p_true, 1e-12, 1)) + sigma * rng.normal(size=p_true.shape)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _frame_records(df):
    from src.data.records import PairRecord
    return [PairRecord(str(r.id), json.loads(r.prompt), json.loads(r.response_a), json.loads(r.response_b),
                       int(np.argmax([r.winner_model_a, r.winner_model_b, r.winner_tie]))) for r in df.itertuples()]


def feature_student(train_df, targets: np.ndarray, eval_df, seed: int, steps: int = 400) -> np.ndarray:
    """MLP on [f_a, f_b, f_a - f_b]; both A/B orders in training; returns eval probabilities (swap-averaged)."""
    from src.pref.inputs.features import features_matrix
    fa = features_matrix(_frame_records(train_df))
    fe = features_matrix(_frame_records(eval_df))

    def x(f, swap=False):
        a, b = (f[:, 1], f[:, 0]) if swap else (f[:, 0], f[:, 1])
        return np.concatenate([a, b, a - b], 1)

    # 20% of the N rows pick the step (early stopping), scored on the student's OWN kind of
    # target: the hard student never sees a probability, the soft one never a sampled label.
    n = len(fa)
    pick = np.random.default_rng(seed).permutation(n)
    sel, fit = pick[:max(1, n // 5)], pick[max(1, n // 5):]
    mu, sd = x(fa[fit]).mean(0), x(fa[fit]).std(0) + 1e-6

    def tensors(rows):
        xs = torch.tensor((np.concatenate([x(fa[rows]), x(fa[rows], True)]) - mu) / sd, dtype=torch.float32)
        ts = torch.tensor(np.concatenate([targets[rows], targets[rows][:, SWAP_COLUMNS]]), dtype=torch.float32)
        return xs, ts

    (xt, tt), (xs, ts) = tensors(fit), tensors(sel)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(xt.shape[1], 64), torch.nn.GELU(), torch.nn.Linear(64, 3))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=1e-3)
    best, best_state = float("inf"), None
    for step in range(steps):
        opt.zero_grad()
        (soft_cross_entropy(net(xt), tt) / len(xt)).backward()
        opt.step()
        if step % 5 == 4:
            with torch.no_grad():
                v = float(soft_cross_entropy(net(xs), ts)) / len(xs)
            if v < best:
                best, best_state = v, {k: t.clone() for k, t in net.state_dict().items()}
    net.load_state_dict(best_state)
    with torch.no_grad():
        pe = torch.softmax(net(torch.tensor((x(fe) - mu) / sd, dtype=torch.float32)), -1).numpy()
        ps = torch.softmax(net(torch.tensor((x(fe, True) - mu) / sd, dtype=torch.float32)), -1).numpy()
    return 0.5 * (pe + ps[:, SWAP_COLUMNS])


def encoder_student(train_df, targets: np.ndarray, eval_df, seed: int, args, work: Path) -> np.ndarray:
    """The real classifier: soft rows written as winner-column probabilities, read back by the arena reader."""
    from src.data.arena import read_pairs
    from src.pref.config import PrefConfig
    from src.pref.train import train_split
    df = train_df.copy()
    df[LABELS] = np.round(targets, 6)
    df[LABELS] = df[LABELS].div(df[LABELS].sum(1), axis=0)
    both = __import__("pandas").concat([df, eval_df], ignore_index=True)
    path = work / f"student_{seed}_{abs(hash(targets.tobytes())) % 10**8}.csv"
    both.to_csv(path, index=False)
    records = read_pairs(path).records
    out = work / path.stem
    cfg = PrefConfig(model=args.model, data=str(path), out=str(out), max_len=args.max_len, epochs=args.epochs,
                     batch_size=args.batch_size, lr=args.lr, calibrate=False, seed=seed, progress=False,
                     eval_every=0, precision="fp32", select_frac=0.0)
    n = len(train_df)
    train_split(cfg, records, list(range(n)), list(range(n, len(records))), out)
    import pandas as pd
    pred = pd.read_csv(out / "val_predictions.csv", dtype={"id": str})
    return pred[LABELS].to_numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--student", choices=["features", "encoder"], default="features")
    ap.add_argument("--n", type=int, nargs="+", default=[250, 1000, 4000], help="training rows N")
    ap.add_argument("--eval-rows", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3, help="seeds per N (data, teacher noise, init)")
    ap.add_argument("--teacher-noise", type=float, default=0.5, help="sigma of the teacher's blur (0 = generator)")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--out", help="write the table as JSON here")
    args = ap.parse_args()

    eval_df = make_rows(args.eval_rows, seed=10_000)
    y_eval = eval_df[LABELS].to_numpy().argmax(1)
    optimum = log_loss(eval_df[["p_a", "p_b", "p_tie"]].to_numpy(), y_eval)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.n:
            for rep in range(args.repeats):
                t0 = time.time()
                rng = np.random.default_rng([rep, n])
                train_df = make_rows(n, seed=1 + rep, id_start=100_000)
                p_true = train_df[["p_a", "p_b", "p_tie"]].to_numpy()
                hard = np.eye(3)[train_df[LABELS].to_numpy().argmax(1)]
                soft = teacher_probs(p_true, args.teacher_noise, rng)
                teacher_eval = log_loss(teacher_probs(eval_df[["p_a", "p_b", "p_tie"]].to_numpy(),
                                                      args.teacher_noise, rng), y_eval)
                if args.student == "features":
                    ph, ps = (feature_student(train_df, t, eval_df, seed=rep) for t in (hard, soft))
                else:
                    ph, ps = (encoder_student(train_df, t, eval_df, rep, args, Path(tmp)) for t in (hard, soft))
                row = {"n": n, "repeat": rep, "hard": log_loss(ph, y_eval), "soft": log_loss(ps, y_eval),
                       "optimum": optimum, "teacher": teacher_eval, "seconds": round(time.time() - t0, 1)}
                results.append(row)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    print(f"\nstudent={args.student}, teacher = generator probabilities blurred with sigma={args.teacher_noise}, "
          f"eval rows M={args.eval_rows}, optimum (generator's own log loss on them) {optimum:.4f}")
    print(f"{'N':>6} {'hard':>15} {'soft':>15} {'teacher':>8}")
    for n in args.n:
        rs = [r for r in results if r["n"] == n]
        h, s = np.array([r["hard"] for r in rs]), np.array([r["soft"] for r in rs])
        print(f"{n:>6} {h.mean():>8.4f}±{h.std():.4f} {s.mean():>8.4f}±{s.std():.4f} "
              f"{np.mean([r['teacher'] for r in rs]):>8.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "optimum": optimum, "rows": results}, indent=2))


if __name__ == "__main__":
    main()
