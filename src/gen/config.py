"""The generative run config: every field is a `python -m src.train_gen` flag.

Defaults follow the fine-tuning logbooks: constant LR after a short linear
warmup, LoRA on the attention and MLP projections, response-only (SFT) loss.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import knob
from ..engine.settings import TrainSettings

OBJECTIVES = ("sft", "clm")
FINETUNE = ("lora", "full")
NEW_TOKEN_MODES = ("rows", "modules", "off")
LOAD_DTYPES = ("auto", "fp32", "bf16", "fp16")


@dataclass
class GenConfig(TrainSettings):
    # -- what to train -------------------------------------------------------------------
    model: str = knob("tiny", "causal LM: 'tiny' (2-layer GPT-2 built in-process, offline) or an HF id / local "
                              "folder (GPT-J-6B, Pythia, LLaMA-family ...)")
    data: str = knob("", "a prepared dataset folder (python -m src.gen.prepare_chat), a prepare_chat YAML, or a "
                         "raw chat file (.jsonl/.json/.csv) prepared on the fly; empty = synthetic chats (tiny only)")
    objective: str = knob("sft", "sft: loss on bot responses only; clm: loss on every token", choices=list(OBJECTIVES))
    finetune: str = knob("lora", "lora (adapters via peft) or full fine-tuning (--lora / --full)",
                         choices=list(FINETUNE))
    out: str = knob("", "run directory (default runs/gen-<model>-<time>)")

    # -- on-the-fly preparation (raw file or synthetic data; a prepare YAML carries its own) --
    synthetic_episodes: int = knob(300, "synthetic role-play episodes when --data is empty (tiny model only)")
    val_frac: float = knob(0.1, "share of episode groups held out for validation")
    max_len: int = knob(512, "tokens per training example, EOS included")
    packing: bool = knob(False, "pack short examples into max_len rows (block-diagonal attention)")
    template: str = knob("plain", "plain (Pygmalion-style text) | chat_template (the tokenizer's) | auto",
                         choices=["plain", "chat_template", "auto"])

    # -- LoRA --------------------------------------------------------------------------------
    lora_r: int = knob(16, "LoRA rank")
    lora_alpha: int = knob(32, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = knob(0.05, "dropout on the LoRA input")
    lora_target_modules: list[str] = knob([], "module names to adapt; empty = per architecture (attention + MLP "
                                              "projections; 'all-linear' for unknown ones)")
    new_token_rows: str = knob("rows", "tokens added to the vocabulary (pad, chat tags) under LoRA: rows = train and "
                                       "save only their embedding/LM-head rows; modules = whole embedding and LM "
                                       "head (modules_to_save); off = leave them frozen",
                               choices=list(NEW_TOKEN_MODES))

    # -- model loading ------------------------------------------------------------------------
    load_dtype: str = knob("auto", "weights dtype at load: auto = fp32 for full fine-tuning (mixed precision "
                                   "computes in bf16/fp16), the compute dtype for a frozen LoRA base on GPU",
                           choices=list(LOAD_DTYPES))
    dropout: float = knob(-1.0, "set every dropout probability of the model to this (-1 = keep the model's)")
    gradient_checkpointing: bool = knob(False, "recompute activations in backward (less memory, ~30% slower)")
    trust_remote_code: bool = knob(False, "allow model repos with custom code (off unless you trust it)")

    # -- long runs in parts --------------------------------------------------------------------
    parts: int = knob(0, "split the run's optimizer steps (and so the shuffled data) into N consecutive parts")
    part: int = knob(0, "train part K of --parts N (1-based); K > 1 continues the run dir's checkpoint")

    # -- evaluation ------------------------------------------------------------------------------
    eval_max_tokens: int = knob(8192, "padded tokens per validation batch (length-sorted batching)")
    sample_count: int = knob(3, "sample generations logged at each eval (fixed prompts)")
    sample_prompts: list[str] = knob([], "prompts for the logged samples; empty = the context of the first "
                                         "validation episodes up to their last bot response")
    sample_preset: str = knob("logbook-sft", "sampling preset of the logged samples (see src/gen/sampling.py)")
    sample_max_new_tokens: int = knob(48, "new tokens per logged sample")
    pad_to_multiple_of: int = knob(0, "pad batch widths to a multiple of this (0 = 8 on GPUs, 1 on CPU)")

    # -- defaults that differ from the classifier's ------------------------------------------------
    epochs: float = knob(1.0, "passes over the training data (fractions allowed)")
    batch_size: int = knob(8, "examples per micro-batch, per process")
    lr: float = knob(2e-4, "peak learning rate (AdamW); ~1e-5 for full fine-tuning of a large model")
    weight_decay: float = knob(0.0, "AdamW weight decay (not applied to biases and norms)")
    warmup_ratio: float = knob(0.03, "fraction of optimizer steps spent warming up linearly")
    schedule: str = knob("constant", "after warmup: constant (as the logbooks) | linear | cosine",
                         choices=["constant", "linear", "cosine"])

    def __post_init__(self) -> None:
        checks = (("objective", OBJECTIVES), ("finetune", FINETUNE), ("new_token_rows", NEW_TOKEN_MODES),
                  ("load_dtype", LOAD_DTYPES))
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.parts < 0 or self.part < 0 or (self.parts and not 1 <= self.part <= self.parts):
            raise ValueError(f"--part must be in 1..--parts (got part {self.part} of {self.parts})")
        if self.part and not self.parts:
            raise ValueError("--part needs --parts N")
        if not (self.dropout == -1.0 or 0.0 <= self.dropout < 1.0):
            raise ValueError(f"dropout must be in [0, 1) or -1 (keep), got {self.dropout}")
        if self.lora_r < 1:
            raise ValueError(f"lora_r must be >= 1, got {self.lora_r}")
        if not 0.0 <= self.val_frac < 1.0:
            raise ValueError(f"val_frac must be in [0, 1), got {self.val_frac}")
