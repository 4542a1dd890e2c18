"""Encoding pairs, collating batches, and fast batched prediction.

Prediction sorts pairs by length and fills batches up to a token budget
(no padding to a fixed length), runs under `torch.inference_mode` and the
device's autocast, and returns logits for both A/B orders; `average_probs`
turns them into swap-symmetric probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from tqdm.auto import tqdm

from ..data.records import PairRecord, swap_probs
from ..engine.batching import inference_batches
from .features import features_matrix
from .render import Budget, tokenize_records


@dataclass
class PairEncoding:
    arch: str
    ids: dict[str, list[list[int]]]  # siamese: a, b; cross: ab (+ ba)
    style: np.ndarray  # (n, 2, F)
    labels: np.ndarray  # (n,), -1 where unknown
    pad_id: int

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self) -> np.ndarray:
        """The padded width a row needs (both sides of a siamese pair share a width)."""
        if self.arch == "siamese":
            return np.array([max(len(a), len(b)) for a, b in zip(self.ids["a"], self.ids["b"])])
        return np.array([max(len(x) for x in seqs) for seqs in zip(*self.ids.values())])


def encode_pairs(records: list[PairRecord], tokenizer, *, arch: str, max_len: int, prompt_budget: int,
                 keep: str = "last", both_orders: bool = True) -> PairEncoding:
    ids = tokenize_records(records, tokenizer, Budget(max_len, prompt_budget, keep), arch, swapped_too=both_orders)
    labels = np.array([-1 if r.label is None else r.label for r in records], dtype=np.int64)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return PairEncoding(arch, ids, features_matrix(records), labels, pad)


def collate(enc: PairEncoding, idx: list[int], both_orders: bool, pad_to_multiple: int = 1) -> dict:
    if enc.arch == "siamese":
        seqs = [enc.ids["a"][i] for i in idx] + [enc.ids["b"][i] for i in idx]
    else:
        seqs = [enc.ids["ab"][i] for i in idx] + ([enc.ids["ba"][i] for i in idx] if both_orders else [])
    width = max(len(s) for s in seqs)
    width = -(-width // pad_to_multiple) * pad_to_multiple
    ids = torch.full((len(seqs), width), enc.pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, :len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask, "style": torch.from_numpy(enc.style[idx]),
            "labels": torch.from_numpy(enc.labels[idx]), "both_orders": both_orders}


@torch.inference_mode()
def predict_logits(model, enc: PairEncoding, *, device: torch.device | str, max_tokens: int = 16384,
                   both_orders: bool = True, autocast=None, progress: bool = False,
                   indices: list[int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits (n, 3) for the A-B order and, with both_orders, the B-A order."""
    rows = np.arange(len(enc)) if indices is None else np.asarray(indices)
    per_row = 2 if (enc.arch == "siamese" or both_orders) else 1
    batches = inference_batches(enc.lengths()[rows], max_tokens // per_row)
    ab = np.zeros((len(rows), 3), dtype=np.float32)
    ba = np.zeros((len(rows), 3), dtype=np.float32) if both_orders else None
    ctx = autocast if autocast is not None else _nullcontext
    for b in tqdm(batches, desc="predict", unit="batch", disable=not progress, mininterval=1.0):
        batch = collate(enc, rows[b].tolist(), both_orders)
        with ctx():
            out_ab, out_ba = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                   batch["style"].to(device), both_orders=both_orders)
        ab[b] = out_ab.float().cpu().numpy()
        if both_orders:
            ba[b] = out_ba.float().cpu().numpy()
    return ab, ba


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def average_probs(ab: np.ndarray, ba: np.ndarray | None, temperature: float = 1.0) -> np.ndarray:
    """P(A wins | A, B) averaged with P(A wins) read off the swapped pass: the
    result is exactly symmetric under swapping the inputs."""
    p = softmax(ab, temperature)
    if ba is None:
        return p
    return 0.5 * (p + swap_probs(softmax(ba, temperature)))


def log_loss(probs: np.ndarray, labels: np.ndarray, eps: float = 1e-15) -> float:
    """Kaggle's multi-class log loss (probabilities clipped and renormalised)."""
    p = np.clip(probs, eps, 1 - eps)
    p = p / p.sum(1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(labels)), labels])))


def fit_temperature(ab: np.ndarray, ba: np.ndarray | None, labels: np.ndarray) -> float:
    """Temperature minimising the log loss of the swap-averaged probabilities."""
    res = minimize_scalar(lambda t: log_loss(average_probs(ab, ba, t), labels), bounds=(0.05, 20.0),
                          method="bounded", options={"xatol": 1e-4})
    return float(res.x)
