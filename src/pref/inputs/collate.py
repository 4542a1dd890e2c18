"""Batches of encoded pairs as tensors, on the shared padder (engine.batching.pad_sequences).

    collate(enc, rows, both_orders)              # a training/eval batch of pairs
    for rows, batch in inference_batches(enc, rows, max_tokens=..., both_orders=...):
        ...                                      # prediction: batches filled to a token budget

Training batches keep a pair's sequences together (siamese: the A sides then
the B sides; cross: the A-first then the B-first sequences). For prediction a
siamese model pools each side on its own, so the 2n sides are batched by their
OWN lengths (less padding than padding both sides of a pair to the longer).

    collate_packed(enc, rows, both_orders)       # --padding-free (decoders, cross)

packs the same sequences, in the same order, into ONE row with no padding, the
layout of transformers' DataCollatorWithFlattening: position ids restart at 0 for
each sequence (that is how flash-attention and the sdpa/eager masks find the
boundaries) and `seq_ends` holds each sequence's last token, which `last` pooling
reads. Written here rather than taking DataCollatorWithFlattening because our rows
carry pair-level fields (style, labels, targets) and both orders of a pair.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ...engine.batching import inference_batches as plan_inference_batches
from ...engine.batching import pad_sequences
from .encode import PairEncoding


def pair_sequences(enc: PairEncoding, rows, both_orders: bool) -> list[list[int]]:
    """The sequences the model reads for `rows`, in the order PrefModel.forward expects."""
    if enc.arch == "siamese":
        return [enc.ids["a"][i] for i in rows] + [enc.ids["b"][i] for i in rows]
    return [enc.ids["ab"][i] for i in rows] + ([enc.ids["ba"][i] for i in rows] if both_orders else [])


def collate(enc: PairEncoding, idx: list[int], both_orders: bool, pad_to_multiple: int = 1) -> dict:
    ids, mask = pad_sequences(pair_sequences(enc, idx, both_orders), enc.pad_id, pad_to_multiple=pad_to_multiple)
    batch = {"input_ids": ids, "attention_mask": mask, "style": torch.from_numpy(enc.style[idx]),
             "labels": torch.from_numpy(enc.labels[idx]), "both_orders": both_orders}
    if enc.targets is not None:  # training distributions (soft labels); hard rows are one-hot
        batch["targets"] = torch.from_numpy(enc.targets[idx])
    if enc.teachers is not None:
        batch["teachers"] = torch.from_numpy(enc.teachers[idx])
    return batch


@dataclass
class InferenceBatch:
    """One prediction batch. `positions` says where each padded row goes:
    cross: pair k of `rows` (and k + len(rows) for its B-first order);
    siamese: side j of the 2n sides (j < n: side A of pair j, else side B of pair j - n)."""
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    positions: np.ndarray
    real_tokens: int
    padded_tokens: int


def inference_batches(enc: PairEncoding, rows: np.ndarray, *, max_tokens: int,
                      both_orders: bool) -> Iterator[InferenceBatch]:
    """Length-sorted batches up to `max_tokens` padded tokens each.

    siamese: every side by its own length. Ties in length are broken by content,
    not by position, so a file with A and B swapped builds bit-identical batches
    and swap averaging is exactly symmetric. cross: whole pairs (both orders in
    one batch), as in training."""
    rows = np.asarray(rows)
    if enc.arch == "siamese":
        seqs = pair_sequences(enc, rows, True)
        lens = np.array([len(s) for s in seqs], dtype=np.int64)
        canon = np.array(sorted(range(len(seqs)), key=seqs.__getitem__), dtype=np.int64)
        for b in plan_inference_batches(lens[canon], max_tokens):
            pos = canon[b]
            ids, mask = pad_sequences([seqs[j] for j in pos], enc.pad_id)
            yield InferenceBatch(ids, mask, pos, int(lens[pos].sum()), ids.numel())
        return
    per_row = 2 if both_orders else 1
    for b in plan_inference_batches(enc.lengths()[rows], max_tokens // per_row):
        seqs = pair_sequences(enc, rows[b], both_orders)
        ids, mask = pad_sequences(seqs, enc.pad_id)
        yield InferenceBatch(ids, mask, np.asarray(b), sum(len(s) for s in seqs), ids.numel())


def collate_packed(enc: PairEncoding, idx: list[int], both_orders: bool) -> dict:
    """A training batch as one packed row: input_ids/position_ids (1, T), seq_ends (m,)."""
    seqs = pair_sequences(enc, idx, both_orders)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    ends = lengths.cumsum(0) - 1
    ids = torch.tensor([t for s in seqs for t in s], dtype=torch.long).unsqueeze(0)
    pos = torch.cat([torch.arange(n, dtype=torch.long) for n in lengths.tolist()]).unsqueeze(0)
    batch = {"input_ids": ids, "position_ids": pos, "seq_ends": ends, "attention_mask": None,
             "style": torch.from_numpy(enc.style[idx]), "labels": torch.from_numpy(enc.labels[idx]),
             "both_orders": both_orders}
    if enc.targets is not None:
        batch["targets"] = torch.from_numpy(enc.targets[idx])
    if enc.teachers is not None:
        batch["teachers"] = torch.from_numpy(enc.teachers[idx])
    return batch
