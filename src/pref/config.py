"""The classifier's run config: every field is a `python -m src.train_pref` flag.

Knobs are grouped in sections (`--help` shows one group each): `rows` (splits, folds,
extra sources), `distill` (soft targets), `adapter` (LoRA, src/models/lora.py, shared
with the generative stage) and `train` (src/engine/settings.py). A section is a nested
block in YAML (`train: {lr: 5e-5}`), yet its fields stay flat flags (`--lr`) and flat
YAML keys (`lr: 5e-5`, as older run dirs wrote them) still load into it.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import composed, knob, section, validate
from ..errors import UsageError
from ..engine.settings import TrainSettings
from ..models.lora import LoraSettings

# Below this a sequence is mostly its own markers: [CLS] "prompt:" ... "response:" ... [SEP]
# per side (about 6 tokens), plus "answer a:"/"answer b:" in a cross sequence (about 14).
MIN_MAX_LEN = 32


@dataclass
class RowSettings:
    """Which rows train, select and validate: splits, folds, extra sources."""
    demo_rows: int = knob(2000, "rows of synthetic demo data when --data is empty", low=10,
                          why="training needs at least 10 labelled rows")
    val_frac: float = knob(0.2, "grouped hold-out fraction (when --folds is 0)", low=0, high=1,
                           low_open=True, high_open=True)
    folds: int = knob(0, "K for K-fold by prompt group (0 = hold-out)", low=2, also=(0,))
    fold: int = knob(-1, "which fold to train with --folds K (-1 = all folds, writes out-of-fold predictions)", low=-1)
    max_rows: int = knob(0, "use only N rows of the data (0 = all; which ones: --max-rows-pick); for quick trials",
                         low=0)
    max_rows_pick: str = knob("first", "which rows --max-rows (and an --extra-data max_rows) keeps: first (the first "
                                       "N as read; a file sorted by source gives one source) | sample (whole prompt "
                                       "groups drawn from --seed, the last one cut to make N)",
                              choices=["first", "sample"])
    extra_data: list[str] = knob([], "extra training files PATH[:weight[:max_rows]] (several: repeat the flag, comma-separate, "
                                     "or a YAML list): "
                                     "train only; rows whose prompt is in validation are dropped (leak guard)")
    select_frac: float = knob(0.1, "grouped slice of the TRAINING rows held out to fit the temperature and choose the "
                                   "best checkpoint, so validation figures are untouched by both (0 = fit and choose "
                                   "on the validation split itself: in-sample figures, the old behaviour)",
                              low=0, high=1, high_open=True)

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class DistillSettings:
    """The loss's targets: label smoothing and distillation from a teacher."""
    label_smoothing: float = knob(0.0, "label smoothing of the cross-entropy (target * (1 - e) + e / 3)",
                                  low=0, high=1, high_open=True)
    distill_ce: float = knob(1.0, "weight of CE(label) in the loss", low=0)
    distill_kl: float = knob(0.0, "weight of KL(teacher || student); teacher = teacher_a/b/tie columns or --teacher",
                             low=0)
    distill_cos: float = knob(0.0, "weight of 1 - cos(teacher, student probabilities); 1st place LMSYS used "
                                   "ce 0.2, kl 0.4, cos 0.4", low=0)
    privileged: list[str] = knob([], "teacher runs only: fields the model reads that students never see: model "
                                     "(model_a/model_b names, per side), language, source, or a data column "
                                     "(pref/inputs/privileged.py)")
    teacher: str = knob("", "run dir whose predictions are the teacher probabilities (its OOF rows where it has "
                            "them, else predicted), cached in the run dir")

    def __post_init__(self) -> None:
        validate(self)


@composed
@dataclass
class PrefConfig:
    model: str = knob("minilm", "encoder: alias (minilm, distilbert, deberta-v3-small, deberta-v3-base, "
                                "roberta-base) or HF id / local folder")
    data: str = knob("", "training CSV/JSONL (Kaggle arena schema); empty = synthetic demo data")
    task: str = knob("arena3", "arena3 (A/B/tie, log loss: LMSYS) | binary (A/B, accuracy + log loss, submission "
                               "id,winner: WSDM Cup 2025); src/data/tasks.py", choices=["arena3", "binary"])
    ties: str = knob("drop", "binary task: tie rows in training are dropped or trained as soft 0.5/0.5 (never scored)",
                     choices=["drop", "soft"])
    out: str = knob("", "run directory (default runs/<model>-<time>)")
    arch: str = knob("siamese", "siamese (shared encoder per side) | cross (prompt+A+B in one sequence)",
                     choices=["siamese", "cross"])
    pooling: str = knob("auto", "auto (last for decoders, mean for encoders) | mean | cls | last",
                        choices=["auto", "mean", "cls", "last"])
    max_len: int = knob(256, "token budget per sequence (per side for siamese)", low=MIN_MAX_LEN,
                        why="below that a sequence holds little but its prompt/response markers")
    prompt_budget: int = knob(64, "max tokens of each prompt turn (siamese) / of the prompt (cross)", low=1)
    keep: str = knob("last", "which turns survive when a conversation overflows: last | first | head_tail "
                             "(every segment keeps its start and end around ' ... ', budgets in proportion to "
                             "segment lengths; pref/inputs/truncate.py)",
                     choices=["last", "first", "head_tail"])
    head: str = knob("mlp", "mlp (a fresh classification head) | linear (one fresh Linear on the pooled state and style "
                            "features, as transformers' *ForSequenceClassification `score`: fewer weights to overfit a "
                            "few hundred rows) | lm (decoders, --arch cross: the LM head's logits of "
                            "the answer tokens A/B/tie after the judge prompt: rows at the base lr, a bias at --head-lr-mult; "
                            "pref/modeling/lm_head.py)", choices=["mlp", "linear", "lm"])
    head_hidden: int = knob(256, "hidden units of the head MLP (--head mlp)", low=1)
    head_dropout: float = knob(0.1, "dropout in the head", low=0, high=1, high_open=True)
    head_init: str = knob("prior", "prior (the head's output layer starts at zero weights and the log class prior "
                                   "of the training rows, so step 0 predicts the prior and gradients move it from "
                                   "there) | random (PyTorch's default init: a random real decoder's hidden states "
                                   "gave 1.2-1.4 nats at step 0, worse than uniform)", choices=["prior", "random"])
    head_lr_mult: float = knob(20.0, "head learning rate = lr * this (a fresh head learns faster than the encoder)",
                               low=0, low_open=True)
    style_features: bool = knob(True, "feed length/markdown/refusal features of both responses to the head")
    swap_aug: bool = knob(True, "train on both A/B orders of every pair (and average both at prediction)")
    calibrate: bool = knob(True, "fit a temperature on the validation split")
    length_chunks: int = knob(4, "run each batch's sequences through the encoder in this many length-sorted "
                                 "chunks (less padding; 1 = one call)", low=1)
    gradient_checkpointing: bool | None = knob(None, "recompute activations in backward (~1/3 more compute, far less "
                                                       "memory): unset = auto, on only when the memory plan says the run "
                                                       "would not fit the device without it; true/false to force")
    attention_dropout: float = knob(0.0, "dropout on attention probabilities while training (0 lets SDPA use a fused "
                                         "kernel that keeps no probability matrix: faster, less memory); -1 keeps the "
                                         "model's own (BERT-style encoders: 0.1)", low=0, high=1, high_open=True,
                                    also=(-1,))
    trust_remote_code: bool = knob(False, "allow model repos with custom code (off unless you trust it)")
    # warm start (issue 14); its rows, soft labels and distillation knobs are sections below
    init_from: str = knob("", "start from this run's best weights (encoder or adapter, and head); "
                              "fresh optimizer and schedule")
    # -- decoder backbones, LoRA, quantisation (issue 12: pref/modeling/backbone.py, pref/modeling/adapters.py) --
    lora: bool = knob(False, "train LoRA adapters (peft) on a frozen backbone; the head always trains")
    lora_targets: str = knob("", "comma-separated module names LoRA adapts (empty = every linear layer)")
    lora_lr_mult: float = knob(1.0, "adapter learning rate = lr * this (the head uses --head-lr-mult)",
                               low=0, low_open=True)
    load_in_4bit: bool = knob(False, "QLoRA: nf4 base weights (bitsandbytes: CUDA or an x86-64 CPU; needs --lora)")
    load_in_8bit: bool = knob(False, "int8 base weights (bitsandbytes: CUDA or an x86-64 CPU; needs --lora)")
    attn: str = knob("", "attention kernel: eager | sdpa | flash_attention_2 (empty = sdpa; eager for Gemma-2)",
                     choices=["", "eager", "sdpa", "flash_attention_2"])
    padding_free: bool = knob(False, "decoders with --arch cross: pack each training batch into one row, position "
                                     "ids restarting per sequence, no padding (flash_attention_2, or sdpa/eager "
                                     "where transformers builds masks from position ids)")
    rows: RowSettings = section(RowSettings, help="which rows train, select and validate")
    distill: DistillSettings = section(DistillSettings, help="label smoothing and distillation from a teacher")
    adapter: LoraSettings = section(LoraSettings, help="LoRA adapters with --lora (src/models/lora.py, shared with train_gen)")
    train: TrainSettings = section(TrainSettings, help="training loop knobs (src/engine/settings.py)")

    def __post_init__(self) -> None:
        validate(self)
        if self.folds and self.fold >= self.folds:
            raise UsageError(f"fold must be in -1..{self.folds - 1} for --folds {self.folds}, got {self.fold}")
        if self.head == "lm" and self.arch != "cross":
            raise UsageError("--head lm reads the verdict after the judge prompt of --arch cross: add --arch cross")
        if not self.folds and self.fold != -1:
            raise UsageError(f"fold {self.fold} needs --folds K (K-fold by prompt group)")
