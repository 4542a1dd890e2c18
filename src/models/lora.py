"""LoRA for both stages: the config section and the one builder of peft's `LoraConfig`.

The classifier (src/pref/modeling/backbone.py) and the generative stage (src/gen/model.py)
adapt different modules (which ones is each stage's choice: the classifier validates its
`--lora-targets` against the backbone, the generator has a per-architecture table), but
the adapter itself (rank, alpha, dropout, bias, GPT-2's transposed Conv1D weights) is
declared and built here once, so the two stages cannot drift apart again.

peft is imported inside `lora_config`: the Kaggle export scans what inference imports and
refuses peft in a full-weight run's bundle.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import knob, validate

# GPT-2 keeps its projections in Conv1D (weights stored transposed): peft must know.
FAN_IN_FAN_OUT = {"gpt2"}


@dataclass
class LoraSettings:
    """The `adapter` section of both stage configs (flat flags `--lora-r` ...; flat YAML keys still load)."""
    lora_r: int = knob(16, "LoRA rank", low=1)
    lora_alpha: int = knob(32, "LoRA alpha (scale = alpha / r)", low=1)
    lora_dropout: float = knob(0.05, "dropout on the LoRA input", low=0, high=1, high_open=True)

    def __post_init__(self) -> None:
        validate(self)


DEFAULTS = LoraSettings()


def lora_config(model: Any, *, r: int = DEFAULTS.lora_r, alpha: int = DEFAULTS.lora_alpha,
                dropout: float = DEFAULTS.lora_dropout, target_modules: list[str] | str,
                task_type: str | None = None, **extra: Any) -> Any:
    """peft `LoraConfig` for `model`. `task_type` is "CAUSAL_LM" for a generator (peft then
    wraps the LM head's forward); None for a bare backbone under a classifier head. `extra`
    passes stage-only options through (new-token rows, modules_to_save)."""
    from peft import LoraConfig
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, bias="none",
                      fan_in_fan_out=getattr(model.config, "model_type", "") in FAN_IN_FAN_OUT,
                      task_type=task_type, **extra)
