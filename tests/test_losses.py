"""Soft-target losses: one-hot rows give hard cross-entropy exactly; distillation terms."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from src.pref.modeling.losses import (cosine_to_teacher, distillation_loss, kl_to_teacher, soft_cross_entropy)


def _batch(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 3, generator=g) * 3
    labels = torch.randint(0, 3, (n,), generator=g)
    return logits, labels


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 32), seed=st.integers(0, 10_000), eps=st.sampled_from([0.0, 0.05, 0.2]))
def test_one_hot_targets_give_exactly_the_hard_cross_entropy(n, seed, eps):
    logits, labels = _batch(n, seed)
    hard = F.cross_entropy(logits, labels, reduction="sum", label_smoothing=eps)
    one_hot = F.one_hot(labels, 3).float()
    assert torch.allclose(soft_cross_entropy(logits, one_hot, label_smoothing=eps), hard, rtol=1e-6, atol=1e-6)
    assert torch.allclose(soft_cross_entropy(logits, labels, label_smoothing=eps), hard, rtol=1e-6, atol=1e-6)
    # the default distillation loss (no teacher terms) is that same number
    assert torch.allclose(distillation_loss(logits, one_hot, label_smoothing=eps), hard, rtol=1e-6, atol=1e-6)


def test_soft_cross_entropy_is_the_expected_hard_loss_under_the_target():
    """CE against p equals the p-weighted mean of the three hard CEs: soft labels are an expectation."""
    logits, _ = _batch(16, 1)
    p = torch.softmax(torch.randn(16, 3), -1)
    per_class = torch.stack([F.cross_entropy(logits, torch.full((16,), k), reduction="none") for k in range(3)], 1)
    assert torch.allclose(soft_cross_entropy(logits, p), (p * per_class).sum(), rtol=1e-5)


def test_soft_cross_entropy_is_minimised_at_the_target():
    p = torch.tensor([[0.6, 0.1, 0.3], [0.2, 0.5, 0.3]])
    at_target = soft_cross_entropy(p.log(), p)
    for _ in range(20):
        other = p.log() + 0.3 * torch.randn(2, 3)
        assert soft_cross_entropy(other, p) >= at_target - 1e-6


def test_kl_is_zero_at_the_teacher_and_positive_elsewhere():
    teacher = torch.tensor([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]])
    logits = torch.log(teacher.clamp(min=1e-12))
    assert kl_to_teacher(logits, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_to_teacher(torch.zeros(2, 3), teacher).item() > 0.05
    assert cosine_to_teacher(logits, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_to_teacher(torch.zeros(2, 3), teacher).item() > 0.05


def test_distillation_loss_is_the_weighted_sum_of_its_terms():
    logits, labels = _batch(8, 2)
    teacher = torch.softmax(torch.randn(8, 3), -1)
    got = distillation_loss(logits, labels, teacher, w_ce=0.2, w_kl=0.4, w_cos=0.4)
    want = (0.2 * soft_cross_entropy(logits, labels) + 0.4 * kl_to_teacher(logits, teacher)
            + 0.4 * cosine_to_teacher(logits, teacher))
    assert torch.allclose(got, want, rtol=1e-6)


def test_rows_without_a_teacher_are_distilled_towards_their_own_target():
    logits, labels = _batch(6, 3)
    teacher = torch.softmax(torch.randn(6, 3), -1)
    teacher[[1, 4]] = float("nan")
    target = F.one_hot(labels, 3).float()
    filled = teacher.clone()
    filled[[1, 4]] = target[[1, 4]]
    got = distillation_loss(logits, labels, teacher, w_kl=1.0, w_cos=1.0)
    assert torch.isfinite(got)
    assert torch.allclose(got, distillation_loss(logits, labels, filled, w_kl=1.0, w_cos=1.0), rtol=1e-6)


def test_gradient_of_soft_ce_points_the_probabilities_at_the_target():
    """d CE / d logits = softmax - target: zero exactly at the target, for any target."""
    p = torch.tensor([[0.25, 0.45, 0.30]])
    logits = torch.zeros(1, 3, requires_grad=True)
    soft_cross_entropy(logits, p).backward()
    np.testing.assert_allclose(logits.grad.numpy(), (torch.full((1, 3), 1 / 3) - p).numpy(), atol=1e-6)
