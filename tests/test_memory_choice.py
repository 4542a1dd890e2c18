"""Compute for memory only when memory is short: recomputation from the plan, attention without dropout."""
from __future__ import annotations

import os

import pytest
import torch

from src.engine import memory
from src.engine.memory import decide_recompute, set_attention_dropout
from src.engine.recompute import recompute_is_on


def test_the_users_word_wins_over_the_plan():
    assert decide_recompute(True, lambda: 0.001, "cpu") == (True, "as configured")
    assert decide_recompute(False, lambda: 1e9, "cpu") == (False, "as configured")


@pytest.mark.parametrize("need,free,expect", [(1.0, 24.0, False), (8.1, 24.0, True), (7.9, 24.0, False),
                                              (1.0, 2.0, True)])
def test_auto_recomputes_only_when_the_plan_would_not_fit(monkeypatch, need, free, expect):
    monkeypatch.setattr(memory, "device_memory_gib", lambda device: free)
    on, why = decide_recompute(None, lambda: need, "cpu")  # CPU budget: half the free RAM, plan x1.5
    assert on is expect and why.startswith("auto: " + ("on" if expect else "off")) and f"{need:.1f} GiB" in why


def test_auto_without_a_plan_takes_the_safe_side(monkeypatch):
    def no_plan():
        raise KeyError("model_type")
    assert decide_recompute(None, no_plan, "cpu")[0] is True
    assert decide_recompute(None, lambda: None, "cpu")[0] is True
    monkeypatch.setattr(memory, "device_memory_gib", lambda device: None)
    assert decide_recompute(None, lambda: 1.0, "cpu")[0] is True


def test_attention_dropout_zero_touches_attention_only_and_the_config_agrees():
    from src.pref.registry import load_encoder
    enc, _ = load_encoder("minilm")
    before = {n: m.p for n, m in enc.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert set_attention_dropout(enc, 0.0) == enc.config.num_hidden_layers
    after = {n: m.p for n, m in enc.named_modules() if isinstance(m, torch.nn.Dropout)}
    changed = {n for n in before if before[n] != after[n]}
    assert changed and all(n.endswith("attention.self.dropout") for n in changed)
    assert all(after[n] == before[n] > 0 for n in before if n not in changed)  # hidden dropout stays
    assert enc.config.attention_probs_dropout_prob == 0.0


def test_attention_dropout_zero_makes_training_mode_attention_deterministic():
    """With p = 0 two training-mode passes through one self-attention agree exactly."""
    from src.pref.registry import load_encoder
    enc, _ = load_encoder("minilm")
    attn = enc.encoder.layer[0].attention.self
    x = torch.randn(2, 7, enc.config.hidden_size)
    attn.train()
    torch.manual_seed(0)
    a = attn(x)[0]
    torch.manual_seed(1)
    assert not torch.equal(a, attn(x)[0])  # 0.1 dropout: two draws differ
    set_attention_dropout(enc, 0.0)
    assert torch.equal(attn(x)[0], attn(x)[0])


def test_decoders_float_attention_dropout_is_set():
    from src.models.tiny import build_tiny_decoder
    model, _ = build_tiny_decoder("tiny-llama", seed=0)
    for m in model.modules():
        if hasattr(m, "attention_dropout"):
            m.attention_dropout = 0.3
    assert set_attention_dropout(model, 0.0) == model.config.num_hidden_layers
    assert all(m.attention_dropout == 0.0 for m in model.modules() if hasattr(m, "attention_dropout"))


def test_build_follows_the_decision_and_old_configs_still_force_it(monkeypatch, tmp_path):
    from src.config import from_dict
    from src.pref.config import PrefConfig
    from src.pref.train import build
    lines = []
    monkeypatch.setattr(memory, "device_memory_gib", lambda device: 64.0)
    model, _ = build(PrefConfig(model="minilm"), "cpu", "fp32", log=lines.append)
    assert recompute_is_on(model.encoder) is False and "auto: off" in lines[0]
    monkeypatch.setattr(memory, "device_memory_gib", lambda device: 0.5)
    model, _ = build(PrefConfig(model="minilm"), "cpu", "fp32", log=lines.append)
    assert recompute_is_on(model.encoder) is True and "auto: on" in lines[1]
    old = from_dict(PrefConfig, {"model": "minilm", "gradient_checkpointing": True})  # an older run's config.yaml
    assert old.gradient_checkpointing is True
    model, _ = build(old, "cpu", "fp32", log=lines.append)
    assert recompute_is_on(model.encoder) is True and len(lines) == 2  # forced: nothing to decide


def test_cpu_free_memory_is_what_is_available_now_not_what_was_installed():
    free = memory.device_memory_gib("cpu")
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    assert free is not None and 0 < free <= total


@pytest.mark.skipif(memory.heap_releaser("cpu") is None, reason="needs Linux /proc and glibc malloc_trim")
def test_heap_releaser_hands_back_what_free_alone_keeps():
    # 64 KiB tensors come from the malloc heap (below glibc's mmap threshold); keeping the
    # last one pins the heap's top, so free() alone cannot shrink it: what a training step's
    # freed activations look like to the allocator
    release = memory.heap_releaser("cpu", growth=0.0)
    assert release() is False  # the first call only records the settled size
    chunks = [torch.ones(16384) for _ in range(3000)]  # ~190 MiB, pages touched
    keep = chunks[-1]
    del chunks
    before = memory.resident_mib()
    assert release() is True
    after = memory.resident_mib()
    assert before - after > 100, (before, after)
    assert float(keep.sum()) == 16384  # live tensors are untouched


@pytest.mark.skipif(memory.heap_releaser("cpu") is None, reason="needs Linux /proc and glibc malloc_trim")
def test_heap_releaser_trims_only_past_the_growth_allowed_over_the_first_step(monkeypatch):
    sizes = iter([1000.0, 1050.0, 1100.0, 1155.0, 1200.0])  # the first is heap_releaser's own probe
    monkeypatch.setattr(memory, "resident_mib", lambda: next(sizes))
    release = memory.heap_releaser("cpu", growth=0.10)
    # settled at 1050 after the first step: 1100 and 1155 are inside the allowance, 1200 is past it
    assert [release() for _ in range(4)] == [False, False, False, True]


def test_heap_releaser_does_not_apply_to_accelerators():
    assert memory.heap_releaser("cuda") is None
    assert memory.heap_releaser("xpu") is None


@pytest.mark.skipif(memory.heap_releaser("cpu") is None, reason="needs Linux /proc and glibc malloc_trim")
def test_a_forced_release_trims_whatever_the_growth(monkeypatch):
    sizes = iter([1000.0, 1000.0, 900.0])
    monkeypatch.setattr(memory, "resident_mib", lambda: next(sizes))
    release = memory.heap_releaser("cpu", growth=0.10)
    assert release(force=True) is True and release() is False  # force does not settle the size; this call does
