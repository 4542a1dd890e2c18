"""Losses of the classifier against a target *distribution*, and distillation.

A target is a (n, 3) row-stochastic tensor: one-hot for a human label, soft
for a pseudo-label or a teacher's probabilities. Cross-entropy against a
one-hot row is exactly the usual hard-label cross-entropy (a test pins it), so
a run on hard labels only trains as before.

Distillation (1st place in LMSYS distilled 70B teachers into Gemma-2-9B with
(CE + 2*KL + 2*cos) / 5, i.e. weights 0.2 / 0.4 / 0.4 here):

    loss = w_ce * CE(target, student) + w_kl * KL(teacher || student) + w_cos * (1 - cos(teacher, student))

where "student" is the softmax of the logits. A row without teacher
probabilities (NaN row) is distilled towards its own target instead, so a
batch may mix distilled and plain rows.

Every function returns the per-batch SUM over rows (the engine divides by the
units of the whole accumulation window).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

N_CLASSES = 3


def as_distribution(target: torch.Tensor, n_classes: int = N_CLASSES) -> torch.Tensor:
    """(n,) class indices or (n, C) probabilities -> (n, C) float probabilities."""
    if target.dim() == 1:
        return F.one_hot(target.long(), n_classes).float()
    return target.float()


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, label_smoothing: float = 0.0) -> torch.Tensor:
    """Summed cross-entropy of `logits` against a target distribution (or class ids).

    torch's own cross_entropy takes probability targets and label smoothing
    (target * (1 - eps) + eps / C), so this only normalises the input shapes.
    """
    return F.cross_entropy(logits.float(), as_distribution(target, logits.shape[-1]), reduction="sum",
                           label_smoothing=label_smoothing)


def kl_to_teacher(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Summed KL(teacher || softmax(logits)); zero-probability teacher classes add 0."""
    return F.kl_div(F.log_softmax(logits.float(), -1), teacher.float(), reduction="sum")


def cosine_to_teacher(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Summed 1 - cosine similarity between the student's and the teacher's probabilities."""
    return (1.0 - F.cosine_similarity(F.softmax(logits.float(), -1), teacher.float(), dim=-1)).sum()


def fill_missing_teacher(teacher: torch.Tensor | None, target: torch.Tensor) -> torch.Tensor:
    """Rows whose teacher is NaN (no teacher for that row) take their own target."""
    if teacher is None:
        return target
    missing = torch.isnan(teacher).any(-1, keepdim=True)
    return torch.where(missing, target, teacher.float())


def distillation_loss(logits: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor | None = None, *,
                      w_ce: float = 1.0, w_kl: float = 0.0, w_cos: float = 0.0,
                      label_smoothing: float = 0.0) -> torch.Tensor:
    """w_ce * CE(target) + w_kl * KL(teacher || student) + w_cos * (1 - cos), summed over rows.

    With w_kl = w_cos = 0 (the default) this is `soft_cross_entropy`.
    """
    target = as_distribution(target, logits.shape[-1])
    loss = w_ce * soft_cross_entropy(logits, target, label_smoothing=label_smoothing) if w_ce else logits.new_zeros((), dtype=torch.float32)
    if w_kl or w_cos:
        t = fill_missing_teacher(teacher, target)
        if w_kl:
            loss = loss + w_kl * kl_to_teacher(logits, t)
        if w_cos:
            loss = loss + w_cos * cosine_to_teacher(logits, t)
    return loss
