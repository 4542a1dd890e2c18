"""The generative run config: every field is a `python -m src.train_gen` flag.

Defaults follow the fine-tuning logbooks: constant LR after a short linear
warmup, LoRA on the attention and MLP projections, response-only (SFT) loss.
Training knobs live in the `train` section (src/engine/settings.py) with this
stage's own defaults, the LoRA shape in the `adapter` section shared with the
classifier (src/models/lora.py); they stay flat flags (`--lr`) and flat YAML keys.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import composed, knob, section, validate
from ..errors import UsageError
from ..engine.settings import TrainSettings
from ..models.lora import LoraSettings

OBJECTIVES = ("sft", "clm", "dpo")
FINETUNE = ("lora", "full")
NEW_TOKEN_MODES = ("rows", "modules", "off")
LOAD_DTYPES = ("auto", "fp32", "bf16", "fp16")


@composed
@dataclass
class GenConfig:
    # -- what to train -------------------------------------------------------------------
    model: str = knob("tiny", "causal LM: 'tiny' (2-layer GPT-2 built in-process, offline) or an HF id / local "
                              "folder (GPT-J-6B, Pythia, LLaMA-family ...)")
    data: str = knob("", "a prepared dataset folder (python -m src.gen.prepare_chat), a prepare_chat YAML, or a "
                         "raw chat file (.jsonl/.json/.csv) prepared on the fly; empty = synthetic chats (tiny only)")
    objective: str = knob("sft", "sft: loss on bot responses only; clm: loss on every token; dpo: preference pairs "
                                 "(--data: arena CSV / pairwise JSONL; see src/gen/dpo.py)", choices=list(OBJECTIVES))
    beta: float = knob(0.1, "DPO: strength of the pull towards the frozen reference (higher = stays closer)",
                       low=0, low_open=True)
    max_rows: int = knob(0, "use only N rows of a pairwise --data file (0 = all), picked by --max-rows-pick", low=0)
    max_rows_pick: str = knob("first", "which rows --max-rows keeps: first (as read) or sample (whole prompt "
                                       "groups drawn from --seed), as train_pref", choices=["first", "sample"])
    finetune: str = knob("lora", "lora (adapters via peft) or full fine-tuning (--lora / --full)",
                         choices=list(FINETUNE))
    out: str = knob("", "run directory (default runs/gen-<model>-<time>)")

    # -- on-the-fly preparation (raw file or synthetic data; a prepare YAML carries its own) --
    synthetic_episodes: int = knob(300, "synthetic role-play episodes when --data is empty (tiny model only)", low=1)
    val_frac: float = knob(0.1, "share of episode groups held out for validation", low=0, high=1, high_open=True)
    max_len: int = knob(512, "tokens per training example, EOS included", low=16,
                        why="below that an example is little more than its role tags")
    packing: bool = knob(False, "pack short examples into max_len rows (block-diagonal attention)")
    distinct_pad: bool = knob(True, "add a pad token distinct from EOS when the tokenizer has pad == eos (its "
                                    "embedding row mean-initialised); false keeps pad == eos, the logbooks' "
                                    "pitfall, to measure it (padding is masked by position either way)")
    template: str = knob("plain", "plain (Pygmalion-style text) | chat_template (the tokenizer's) | auto",
                         choices=["plain", "chat_template", "auto"])

    # -- LoRA: rank/alpha/dropout are the shared `adapter` section (below); which modules is ours --
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
    dropout: float = knob(-1.0, "set every dropout probability of the model to this (-1 = keep the model's)",
                          low=0, high=1, high_open=True, also=(-1.0,))
    gradient_checkpointing: bool = knob(False, "recompute activations in backward (less memory, ~30% slower)")
    trust_remote_code: bool = knob(False, "allow model repos with custom code (off unless you trust it)")

    # -- long runs in parts --------------------------------------------------------------------
    parts: int = knob(0, "split the run's optimizer steps (and so the shuffled data) into N consecutive parts", low=0)
    part: int = knob(0, "train part K of --parts N (1-based); K > 1 continues the run dir's checkpoint", low=0)

    # -- evaluation ------------------------------------------------------------------------------
    sample_count: int = knob(3, "sample generations logged at each eval (fixed prompts)", low=0)
    sample_prompts: list[str] = knob([], "prompts for the logged samples; empty = the context of the first "
                                         "validation episodes up to their last bot response")
    sample_preset: str = knob("logbook-sft", "sampling preset of the logged samples (see src/gen/sampling.py)")
    sample_max_new_tokens: int = knob(48, "new tokens per logged sample", low=1)
    pad_to_multiple_of: int = knob(0, "pad batch widths to a multiple of this (0 = 8 on GPUs, 1 on CPU)", low=0)

    adapter: LoraSettings = section(LoraSettings, help="LoRA adapters with --finetune lora (src/models/lora.py, "
                                                       "shared with train_pref)")
    # -- the training loop, with this stage's defaults -----------------------------------------
    train: TrainSettings = section(TrainSettings, help="training loop knobs (src/engine/settings.py)",
                                   epochs=1.0, batch_size=8, lr=2e-4, weight_decay=0.0, warmup_ratio=0.03,
                                   schedule="constant", eval_max_tokens=8192)

    def __post_init__(self) -> None:
        validate(self)
        if self.part and not self.parts:
            raise UsageError("--part needs --parts N")
        if self.parts and not 1 <= self.part <= self.parts:
            raise UsageError(f"--part must be in 1..--parts (got part {self.part} of {self.parts})")
