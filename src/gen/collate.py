"""Token rows -> training batches: packing short examples, and the collate on the shared padder.

Packing (`pack_examples`, at prepare time) restarts position ids per example;
`collate` turns them into a block-diagonal causal mask so examples do not attend
to each other. Padding goes through `engine.batching.pad_sequences`, the one
padder of every stage (the mask marks real tokens by position, never by id).
"""
from __future__ import annotations

import bisect
from typing import Any, Sequence

import numpy as np

from ..engine.batching import pad_sequences
from .encode import IGNORE, Example


def pack_examples(examples: list[Example], max_len: int) -> list[Example]:
    """Best-fit-decreasing bins of at most max_len tokens. Position ids restart at 0 for
    each example, and the first label of each example is ignored (it would otherwise be
    predicted from the previous example's last token)."""
    order = sorted(examples, key=lambda e: (-len(e.input_ids), e.id))
    bins: list[list[Example]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted
    for ex in order:
        k = bisect.bisect_left(free, (len(ex.input_ids), -1))
        if k == len(free):
            bins.append([ex])
            bisect.insort(free, (max_len - len(ex.input_ids), len(bins) - 1))
            continue
        room, b = free.pop(k)
        bins[b].append(ex)
        bisect.insort(free, (room - len(ex.input_ids), b))
    return [_merge(b) for b in bins]


def _merge(group: list[Example]) -> Example:
    ids, labels, pos = [], [], []
    for ex in group:
        ids += ex.input_ids
        labels += [IGNORE] + ex.labels[1:]
        pos += list(range(len(ex.input_ids)))
    return Example(ids, labels, "+".join(e.id for e in group), ",".join(sorted({e.source for e in group})),
                   group[0].group_id, any(e.truncated for e in group), any(e.trimmed for e in group), pos, len(group))


def collate(batch: Sequence[dict], pad_id: int, pad_to_multiple_of: int = 8, block_mask: bool = True) -> dict:
    """Right-pad a list of examples ({input_ids, labels, [position_ids]}) into tensors.
    Packed rows (with position_ids) get a 4D block-diagonal causal mask [B, 1, L, L]
    (block_mask=True, works with sdpa/eager) or only position_ids (block_mask=False,
    for flash-attention varlen kernels that read boundaries from them)."""
    ids, mask = pad_sequences([b["input_ids"] for b in batch], pad_id, pad_to_multiple=pad_to_multiple_of)
    width = ids.shape[1]
    labels, _ = pad_sequences([b["labels"] for b in batch], IGNORE, width=width)
    out = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    if any(b.get("position_ids") is not None for b in batch):
        pos, _ = pad_sequences([b["position_ids"] if b.get("position_ids") is not None
                                else np.arange(len(b["input_ids"])) for b in batch], 0, width=width)
        out["position_ids"] = pos
        if block_mask:
            out["attention_mask"] = block_causal_mask(pos, mask)
    return out


def block_causal_mask(position_ids: Any, mask: Any) -> Any:
    """[B, 1, L, L] bool: token i attends to j <= i of the same packed example. Padding
    positions attend only to themselves (an all-False row gives NaN in sdpa)."""
    import torch
    B, L = position_ids.shape
    seg = torch.cumsum((position_ids == 0).long(), dim=1)
    seg = torch.where(mask.bool(), seg, -1 - torch.arange(L).expand(B, L))  # each pad its own segment
    same = seg[:, :, None] == seg[:, None, :]
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool))
    return (same & causal)[:, None]
