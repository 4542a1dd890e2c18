"""Activation recomputation (gradient checkpointing): the one place both stages turn it on."""
from __future__ import annotations

from typing import Any


def enable_activation_recompute(model: Any) -> None:
    """Recompute activations in backward instead of keeping them (any HF PreTrainedModel).

    use_reentrant=False: gradients reach LoRA weights although the embedding output is
    frozen (the reentrant variant needs enable_input_require_grads for that), and it works
    under DDP. transformers 5 renamed the method to activation_checkpointing_enable and
    deprecates the old name; older releases (>=4.46 is supported) only have the old one.
    use_cache off: a KV cache is useless in training and transformers warns once per model.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if hasattr(getattr(model, "config", None), "use_cache"):
        model.config.use_cache = False


def recompute_is_on(model: Any) -> bool:
    """Whether activation recomputation is on (transformers 5 renamed the flag, deprecating the old one)."""
    on = getattr(model, "is_activation_checkpointing", None)
    return bool(on if on is not None else getattr(model, "is_gradient_checkpointing", False))
