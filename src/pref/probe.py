"""Linear probe of a backbone's frozen pooled states: does it know anything about these
pairs before a LoRA run spends an hour on them?

One forward pass over every pair (both orders) through the run's own input pipeline
(judge prompt, truncation, pooling), then an L2-regularised logistic regression per
prompt-grouped fold, scored out of fold against the class prior of the same training
rows. On this project's 600-row slice of the real dev file it ranked Gemma-3-270M above
SmolLM2-135M in 5-6 minutes a model, before either was fine-tuned (README).

Why by hand: scikit-learn fits the probe; what no library does is the swap handling.
Training rows enter in both orders (labels swapped), and a row's probability is the mean
of its two orders, so the probe is exactly swap-symmetric, like the classifier.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.records import SWAP_COLUMNS
from .inference.compare import standard_error
from .inputs.collate import inference_batches
from .inputs.encode import PairEncoding

SWAP = np.array(SWAP_COLUMNS)  # labels and probability columns after exchanging A and B (0 <-> 1, tie stays)


@dataclass
class Pooled:
    """Per pair: the head's input without style for the A-first and the B-first view."""
    ab: np.ndarray  # (n, d)
    ba: np.ndarray  # (n, d)
    style: np.ndarray  # (n, 2, F)
    labels: np.ndarray  # (n,)


@torch.inference_mode()
def pooled_states(model, enc: PairEncoding, *, device: str = "cpu", max_tokens: int = 16384,
                  progress: bool = False) -> Pooled:
    """cross: the pooled A-first and B-first sequences; siamese: [a, b, a-b, a*b] and its
    mirror [b, a, b-a, a*b], as PrefModel.head_input lays them out."""
    from tqdm.auto import tqdm
    n, rows = len(enc), np.arange(len(enc))
    views: np.ndarray | None = None  # cross: (2, n, d); siamese: (2n, d) sides
    for batch in tqdm(inference_batches(enc, rows, max_tokens=max_tokens, both_orders=True),
                      desc="pool", unit="batch", disable=not progress, mininterval=1.0):
        h = model.encode(batch.input_ids.to(device), batch.attention_mask.to(device)).float().cpu().numpy()
        if enc.arch == "siamese":
            views = np.zeros((2 * n, h.shape[-1]), dtype=np.float32) if views is None else views
            views[batch.positions] = h
        else:
            views = np.zeros((2, n, h.shape[-1]), dtype=np.float32) if views is None else views
            k = len(batch.positions)
            views[0, batch.positions], views[1, batch.positions] = h[:k], h[k:]
    if enc.arch == "siamese":
        a, b = views[:n], views[n:]
        ab, ba = np.hstack([a, b, a - b, a * b]), np.hstack([b, a, b - a, a * b])
    else:
        ab, ba = views[0], views[1]
    return Pooled(ab, ba, enc.style, enc.labels)


def _inputs(p: Pooled, rows: np.ndarray, order: int, style: bool) -> np.ndarray:
    x = p.ab[rows] if order == 0 else p.ba[rows]
    if not style:
        return x
    fa, fb = (p.style[rows, 0], p.style[rows, 1]) if order == 0 else (p.style[rows, 1], p.style[rows, 0])
    return np.hstack([x, fa, fb, fa - fb])


def probe_fold(p: Pooled, train: np.ndarray, score: np.ndarray, *, c: float, style: bool = False) -> np.ndarray:
    """(len(score), 3) swap-averaged probabilities of a probe fitted on `train` only
    (standardised per dimension on `train`: a decoder's last-token state has a few
    dimensions 10-25x the others, which would otherwise set the regularisation alone)."""
    from sklearn.linear_model import LogisticRegression
    x = np.vstack([_inputs(p, train, 0, style), _inputs(p, train, 1, style)])
    y = np.concatenate([p.labels[train], SWAP[p.labels[train]]])
    mean, std = x.mean(0), x.std(0)
    std = np.where(std < 1e-6, 1.0, std)
    fit = LogisticRegression(C=c, max_iter=5000).fit((x - mean) / std, y)

    def probs(order: int) -> np.ndarray:  # a class absent from `train` (no tie) gets probability 0
        out = np.zeros((len(score), 3))
        out[:, fit.classes_] = fit.predict_proba((_inputs(p, score, order, style) - mean) / std)
        return out
    return (probs(0) + probs(1)[:, SWAP]) / 2


@dataclass
class ProbeResult:
    c: float
    oof: np.ndarray  # (n, 3) out-of-fold probabilities
    prior: np.ndarray  # (n, 3) each row's training-fold class prior
    labels: np.ndarray  # (n,)

    def log_loss(self, rows=None) -> float:
        return _nll(self.oof, self.labels, rows)

    def prior_log_loss(self, rows=None) -> float:
        return _nll(self.prior, self.labels, rows)

    def paired_vs_prior(self, rows=None) -> tuple[float, float]:
        """Mean per-row (probe - prior) log loss over `rows` and its standard error."""
        rows = np.arange(len(self.labels)) if rows is None else np.asarray(rows)
        d = _row_nll(self.oof, self.labels)[rows] - _row_nll(self.prior, self.labels)[rows]
        return float(d.mean()), standard_error(d)


def _row_nll(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1.0))


def _nll(p: np.ndarray, y: np.ndarray, rows) -> float:
    rows = np.arange(len(y)) if rows is None else np.asarray(rows)
    return float(_row_nll(p, y)[rows].mean())


def probe_out_of_fold(p: Pooled, folds: list[np.ndarray], *, c: float, style: bool = False) -> ProbeResult:
    """Every row scored by the probe of the one fold that held it out. `folds` are the
    scored rows of each fold; they must partition the rows (each scored exactly once)."""
    n = len(p.labels)
    seen = np.concatenate(folds)
    if len(seen) != n or len(np.unique(seen)) != n:
        raise ValueError(f"folds must partition the {n} rows (got {len(seen)} scored, {len(np.unique(seen))} distinct)")
    if (p.labels < 0).any():
        raise ValueError("the probe scores hard labels only; drop unlabelled or soft rows first")
    oof, prior = np.zeros((n, 3)), np.zeros((n, 3))
    for held in folds:
        train = np.setdiff1d(np.arange(n), held)
        oof[held] = probe_fold(p, train, held, c=c, style=style)
        prior[held] = np.bincount(p.labels[train], minlength=3) / len(train)
    return ProbeResult(c, oof, prior, p.labels)


def non_tie_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    keep = labels < 2
    return float(((probs[keep, 0] > probs[keep, 1]) == (labels[keep] == 0)).mean())
