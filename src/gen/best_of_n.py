"""Best-of-n with a trained preference judge: sample K replies, keep the one the judge likes best.

    python -m src.generate --run RUN --prompt "..." --num-samples 4 --judge PREF_RUN --json

Each reply is scored by the judge (a train_pref run, through its one inference path
`src.pref.inference.predict.predict_records`, swap-averaged so the order A/B does not
matter) against every other reply, round robin: score_i = mean over j != i of
P(i beats j) + P(tie) / 2. With `reference` set, each reply is scored against that one
reply instead (score_i = P(i beats reference) + P(tie) / 2), and K = 1 is allowed.
The best reply is the argmax (the first on a tie of scores). The logbooks' authors
picked the best of several generations by hand; this is that choice, made by the judge.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.records import PairRecord
from ..errors import UsageError

JUDGE_TASKS = ("arena3", "binary")  # PrefConfig.task values whose first column is P(A wins)


class JudgeError(UsageError):
    """A --judge that is not a usable preference classifier run."""


def load_judge(path: str | Path, *, device: str = "auto") -> Any:
    """A trained preference run (train_pref), refused in one line when it is something else."""
    from .checkpoint import find_checkpoint
    p = Path(path)
    if not p.exists():
        raise JudgeError(f"--judge {path}: no such run dir")
    if find_checkpoint(p) is not None:
        raise JudgeError(f"--judge {path}: a generative run (train_gen), not a preference classifier; "
                         "train one with python -m src.train_pref")
    from ..pref.inference.ensemble import load_run
    try:
        run = load_run(p, device=device)
    except FileNotFoundError as e:
        raise JudgeError(f"--judge {path}: not a preference classifier run ({e})") from None
    task = getattr(run.cfg, "task", "arena3")
    if task not in JUDGE_TASKS:
        raise JudgeError(f"--judge {path}: a {task!r} run; best-of-n needs a pairwise preference judge "
                         f"({', '.join(JUDGE_TASKS)})")
    return run


def win_share(probs: np.ndarray) -> np.ndarray:
    """P(A beats B) with half of a tie: the columns are (A wins, B wins[, tie])."""
    probs = np.asarray(probs, dtype=np.float64)
    return probs[:, 0] + (0.5 * probs[:, 2] if probs.shape[1] > 2 else 0.0)


def judge_scores(judge: Any, prompt: Sequence[str], replies: Sequence[str], reference: str | None = None,
                 *, device: str = "auto") -> np.ndarray:
    """Score of each reply (see module doc), in [0, 1]."""
    from ..pref.inference.predict import predict_records
    k = len(replies)
    if reference is None and k < 2:
        raise UsageError("best-of-n without a reference reply needs at least 2 samples to compare")
    if reference is None:
        return round_robin(win_matrix(judge, prompt, replies, device=device))
    records = [PairRecord(id=f"bon{i}", prompt=list(prompt), response_a=[r], response_b=[reference])
               for i, r in enumerate(replies)]
    return win_share(predict_records(judge, records, device=device, tta=True).probs)


def matrix_from_pairs(k: int, pairs: Sequence[tuple[int, int]], p_a: Sequence[float]) -> np.ndarray:
    """K x K win shares: W[i, j] = P(i beats j) + P(tie)/2, W[j, i] = 1 - W[i, j]; diagonal nan."""
    w = np.full((k, k), np.nan)
    for (i, j), s in zip(pairs, p_a):
        w[i, j], w[j, i] = s, 1.0 - s
    return w


def win_matrix(judge: Any, prompt: Sequence[str], replies: Sequence[str], *, device: str = "auto") -> np.ndarray:
    """Every pair of `replies` judged once, as a K x K win-share matrix. Swap-averaged
    predictions are mirror-exact ((j, i) is (i, j) reversed), so i < j suffices."""
    from ..pref.inference.predict import predict_records
    pairs = list(itertools.combinations(range(len(replies)), 2))
    records = [PairRecord(id=f"bon{n}", prompt=list(prompt), response_a=[replies[i]], response_b=[replies[j]])
               for n, (i, j) in enumerate(pairs)]
    return matrix_from_pairs(len(replies), pairs, win_share(predict_records(judge, records, device=device,
                                                                            tta=True).probs))


def round_robin(w: np.ndarray) -> np.ndarray:
    """score_i = mean over j != i of W[i, j] (the best-of-n score)."""
    return np.nanmean(w, axis=1)


def chosen_vs_random(chooser: Sequence[np.ndarray], scorer: Sequence[np.ndarray]) -> dict[str, float]:
    """How the reply `chooser` picks (argmax of its round-robin scores) fares by `scorer`, over
    prompts (one K x K win matrix of each judge per prompt). Against one of the other K-1
    replies drawn uniformly at random, in expectation (no draw: exact): `chosen_score` is the
    mean win share, `chosen_wins` the share of such draws the chosen reply wins outright
    (win share > 0.5). A reply picked uniformly at random scores 0.5 by symmetry, the figure
    to compare with. Standard errors are over prompts. With scorer = chooser the figure is
    biased upwards by construction (it is the chooser's own maximum)."""
    per_score, per_wins = [], []
    for wc, ws in zip(chooser, scorer):
        c = int(np.argmax(round_robin(wc)))
        others = np.delete(ws[c], c)
        per_score.append(float(np.mean(others)))
        per_wins.append(float(np.mean(others > 0.5)))
    n = len(per_score)
    if n == 0:
        raise ValueError("chosen_vs_random needs at least one prompt")

    def se(x: list[float]) -> float:
        return float(np.std(x, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"prompts": float(n), "chosen_score": float(np.mean(per_score)), "chosen_score_se": se(per_score),
            "chosen_wins": float(np.mean(per_wins)), "chosen_wins_se": se(per_wins), "random_score": 0.5}


@dataclass
class Ranked:
    best: int  # index of the chosen reply
    scores: list[float]


def pick_best(scores: Sequence[float]) -> Ranked:
    s = np.asarray(scores, dtype=np.float64)
    if not len(s) or not np.isfinite(s).all():
        raise ValueError(f"judge scores must be finite and non-empty, got {list(scores)}")
    return Ranked(int(np.argmax(s)), s.tolist())
