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
    prompt = list(prompt)
    if reference is not None:
        pairs = [(i, None) for i in range(k)]
    else:  # swap-averaged predictions are mirror-exact: (j, i) is (i, j) reversed, so i < j suffices
        pairs = list(itertools.combinations(range(k), 2))
    records = [PairRecord(id=f"bon{n}", prompt=prompt, response_a=[replies[i]],
                          response_b=[reference if j is None else replies[j]]) for n, (i, j) in enumerate(pairs)]
    p_a = win_share(predict_records(judge, records, device=device, tta=True).probs)
    if reference is not None:
        return p_a
    total, count = np.zeros(k), np.zeros(k)
    for (i, j), s in zip(pairs, p_a):
        total[i] += s
        total[j] += 1.0 - s
        count[i] += 1
        count[j] += 1
    return total / count


@dataclass
class Ranked:
    best: int  # index of the chosen reply
    scores: list[float]


def pick_best(scores: Sequence[float]) -> Ranked:
    s = np.asarray(scores, dtype=np.float64)
    if not len(s) or not np.isfinite(s).all():
        raise ValueError(f"judge scores must be finite and non-empty, got {list(scores)}")
    return Ranked(int(np.argmax(s)), s.tolist())
