"""Length-grouped batch plans, deterministic from (seed, epoch).

Why by hand: the plan must be a pure function of (lengths, seed, epoch) so a
resumed run can skip exactly the batches already seen and each DDP process can
take its own share, which torch's samplers don't give us in one piece.
"""
from __future__ import annotations

import numpy as np


def plan_batches(lengths: list[int] | np.ndarray, batch_size: int, *, seed: int, epoch: int,
                 shuffle: bool = True, group_size: int = 64) -> list[list[int]]:
    """Batches of indices with similar lengths (little padding), in shuffled order.

    Indices are shuffled, cut into chunks of `group_size` batches, sorted by
    length inside each chunk, batched, and the batch order is shuffled again.
    """
    lengths = np.asarray(lengths)
    n = len(lengths)
    if n == 0:
        return []
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n) if shuffle else np.arange(n)
    chunk = batch_size * group_size
    batches: list[list[int]] = []
    for start in range(0, n, chunk):
        idx = order[start:start + chunk]
        idx = idx[np.argsort(-lengths[idx], kind="stable")]
        batches += [idx[i:i + batch_size].tolist() for i in range(0, len(idx), batch_size)]
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def inference_batches(lengths: list[int] | np.ndarray, max_tokens: int, max_batch: int = 256) -> list[list[int]]:
    """Sort by length and fill each batch up to a token budget: no padding to a
    fixed length, few pad tokens, large batches of short rows."""
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    batches, cur = [], []
    for i in order:
        width = max(lengths[cur[0]] if cur else 0, lengths[i])
        if cur and (width * (len(cur) + 1) > max_tokens or len(cur) >= max_batch):
            batches.append(cur)
            cur = []
        cur.append(int(i))
    if cur:
        batches.append(cur)
    return batches


def shard(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This process's share; every process gets the same number of batches so
    DDP collectives line up (the tail that does not divide evenly is dropped)."""
    usable = len(batches) - len(batches) % world if world > 1 else len(batches)
    return batches[rank:usable:world]


def pad_fraction(lengths: list[int] | np.ndarray, batches: list[list[int]]) -> float:
    lengths = np.asarray(lengths)
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    return 1.0 - real / padded if padded else 0.0
