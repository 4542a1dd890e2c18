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


def pad_sequences(seqs, pad_value: int, *, width: int | None = None, pad_to_multiple: int = 1,
                  side: str = "right"):
    """The one padder of every stage: (padded LongTensor [n, width], attention mask [n, width]).

    The mask marks real tokens by position, never by comparing ids with `pad_value`
    (pad may equal EOS). `width` defaults to the longest sequence, rounded up to
    `pad_to_multiple`; `side="left"` puts the padding first (batched generation,
    and tests that check pooling is independent of the padding side).
    """
    import torch
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', not {side!r}")
    lens = [len(s) for s in seqs]
    w = max(lens, default=0) if width is None else width
    w = -(-w // pad_to_multiple) * pad_to_multiple
    out = torch.full((len(seqs), w), pad_value, dtype=torch.long)
    mask = torch.zeros((len(seqs), w), dtype=torch.long)
    for row, (s, n) in enumerate(zip(seqs, lens)):
        if n > w:
            raise ValueError(f"sequence {row} has {n} tokens, more than the width {w}")
        if n == 0:
            continue
        cols = slice(0, n) if side == "right" else slice(w - n, w)
        out[row, cols] = torch.as_tensor(np.asarray(s), dtype=torch.long)
        mask[row, cols] = 1
    return out, mask
