"""Activation recomputation: one switch for both stages, non-reentrant, no deprecated call."""
import warnings

import torch

from src.engine.recompute import enable_activation_recompute, recompute_is_on
from src.models.tiny import build_tiny_decoder


def _model_with_frozen_embeddings():
    model, tok = build_tiny_decoder("tiny-llama", seed=0)
    for p in model.parameters():
        p.requires_grad_(False)
    # a LoRA-like situation: only a weight inside a checkpointed layer trains, the
    # embedding output (the checkpoint's input) needs no gradient
    trainable = model.model.layers[0].self_attn.q_proj.weight
    trainable.requires_grad_(True)
    return model, tok, trainable


def test_gradients_reach_a_layer_whose_inputs_are_frozen():
    model, tok, trainable = _model_with_frozen_embeddings()
    model.train()
    enable_activation_recompute(model)
    ids = torch.tensor([tok("hello world, a small test", add_special_tokens=False)["input_ids"]])
    model(input_ids=ids).logits.float().pow(2).mean().backward()
    # the reentrant form would leave this None (its inputs carry no grad)
    assert trainable.grad is not None and trainable.grad.abs().sum() > 0


def test_recompute_on_without_deprecated_entry_point_and_cache_off():
    model, _, _ = _model_with_frozen_embeddings()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enable_activation_recompute(model)
    assert not [w for w in caught if "gradient_checkpointing_enable" in str(w.message)]
    assert recompute_is_on(model) is True
    assert model.config.use_cache is False
