"""Hold-out and K-fold splits grouped by prompt, stratified by the hard labels.

Arena data repeats prompts (the same question asked of many model pairs); a
prompt on both sides of a split leaks, so rows are grouped by a hash of their
normalised prompt text. sklearn's StratifiedGroupKFold does the rest.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from .records import PairRecord
from .rows import stable_hash


def prompt_group(record: PairRecord) -> str:
    text = "\x1e".join(" ".join(t.lower().split()) for t in record.prompt)
    return stable_hash(text).hex()


def fold_ids(records: list[PairRecord], n_folds: int, seed: int = 0) -> np.ndarray:
    """fold index (0..n_folds-1) per record; deterministic from the seed.

    Stratified by label over the HARD rows (sklearn's StratifiedGroupKFold on
    them and their prompt groups). A row without a hard label (a soft or
    pseudo-label, or an unlabelled row) is never a class: it goes to the fold
    its prompt group's hard rows went to, and groups with no hard row at all are
    dealt, in seeded order, to the fold with the fewest rows so far. With fewer
    hard prompt groups than folds (or none: a test-schema file) the folds are
    grouped only."""
    if n_folds < 2:
        raise ValueError(f"need at least 2 folds, got {n_folds}")
    groups = np.array([prompt_group(r) for r in records])
    n_groups = len(set(groups))
    if n_groups < n_folds:
        raise ValueError(f"only {n_groups} distinct prompts: cannot make {n_folds} grouped folds")
    hard = np.array([r.label is not None for r in records], dtype=bool)
    if len(set(groups[hard])) < n_folds:
        return _grouped_folds(groups, n_folds, seed)
    folds = np.full(len(records), -1, dtype=np.int64)
    hard_idx = np.flatnonzero(hard)
    labels = np.array([records[i].label for i in hard_idx])
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # "The least populated class in y has only 9 members": a class rarer than the folds
        # leaves some folds without it; expected (real files have ~3% ties), and what reads
        # a fold says so (the temperature keeps T = 1 on a slice without a class).
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(splitter.split(np.zeros((len(hard_idx), 1)), labels, groups[hard_idx]))
    for k, (_, test) in enumerate(splits):
        folds[hard_idx[test]] = k
    fold_of = dict(zip(groups[hard_idx], folds[hard_idx]))
    rest = np.flatnonzero(~hard)
    for i in rest:
        folds[i] = fold_of.get(groups[i], -1)
    orphans = rest[folds[rest] < 0]  # rows of groups without any hard row
    if len(orphans):
        sizes = np.bincount(folds[folds >= 0], minlength=n_folds)
        uniq, counts = np.unique(groups[orphans], return_counts=True)
        dealt = {}
        for j in np.random.default_rng([seed, 6151]).permutation(len(uniq)):
            k = int(np.argmin(sizes))  # ties: the lowest fold index
            dealt[uniq[j]] = k
            sizes[k] += counts[j]
        folds[orphans] = [dealt[g] for g in groups[orphans]]
    return folds


def _grouped_folds(groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Grouped only (no labels to stratify on). GroupKFold shuffles only in recent
    sklearn; permute the group order ourselves."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(groups)
    perm = dict(zip(uniq, rng.permutation(len(uniq))))
    folds = np.empty(len(groups), dtype=np.int64)
    splits = GroupKFold(n_splits=n_folds).split(np.zeros((len(groups), 1)), groups=np.array([perm[g] for g in groups]))
    for k, (_, test_idx) in enumerate(splits):
        folds[test_idx] = k
    return folds


def train_val_split(records: list[PairRecord], *, val_frac: float = 0.2, n_folds: int | None = None,
                    fold: int = 0, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices (train, val). With n_folds, fold `fold` is validation; else a grouped
    hold-out of about `val_frac` (one fold of round(1/val_frac))."""
    if n_folds is None:
        if not 0.0 < val_frac < 1.0:
            raise ValueError(f"val_frac must be in (0, 1), got {val_frac}")
        k = 1.0 / val_frac
        if abs(k - round(k)) > 0.05 or k < 2:  # e.g. 0.3 or 0.7: no whole number of folds fits
            return _grouped_fraction(records, val_frac, seed)
        n_folds, fold = round(k), 0
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold {fold} out of range for {n_folds} folds")
    folds = fold_ids(records, n_folds, seed)
    return [i for i, f in enumerate(folds) if f != fold], [i for i, f in enumerate(folds) if f == fold]


def _grouped_fraction(records: list[PairRecord], val_frac: float, seed: int) -> tuple[list[int], list[int]]:
    """Whole prompt groups, in seeded random order, until about val_frac of the rows."""
    groups = [prompt_group(r) for r in records]
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    order = sorted(sizes)
    np.random.default_rng(seed).shuffle(order)
    val_groups, taken, target = set(), 0, val_frac * len(records)
    for g in order:
        if taken >= target:
            break
        val_groups.add(g)
        taken += sizes[g]
    val = [i for i, g in enumerate(groups) if g in val_groups]
    return [i for i, g in enumerate(groups) if g not in val_groups], val


def sample_by_group(records: list[PairRecord], n: int, seed: int, stream: int = 0) -> list[int]:
    """Indices (in file order) of min(n, len(records)) rows: whole prompt groups in an
    order drawn from (seed, stream), the last group cut to make exactly n. What
    `--max-rows N --max-rows-pick sample` keeps: a file sorted by source or by prompt
    gives a spread of them, not its first block, and most groups stay whole."""
    if n >= len(records):
        return list(range(len(records)))
    groups = [prompt_group(r) for r in records]
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    order = sorted(members)  # sorted first: the draw must not depend on dict order
    taken: list[int] = []
    for j in np.random.default_rng([seed, 15485863, stream]).permutation(len(order)):
        taken += members[order[j]][:n - len(taken)]
        if len(taken) == n:
            break
    return sorted(taken)

