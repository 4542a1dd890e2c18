"""Training knobs shared by every stage (classifier and generative).

Stage configs hold one `TrainSettings` as their `train` section
(`train: TrainSettings = section(TrainSettings, lr=2e-4, ...)` for a stage's own
defaults), so a field added here is a flag on every CLI at once (see src/config.py)
and its help text and range are written once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import knob, validate

REPORT_TO = ("none", "tensorboard", "wandb", "mlflow", "all")


@dataclass
class TrainSettings:
    seed: int = knob(0, "seed for data order, initialisation, dropout and splits", low=0)
    device: str = knob("auto", "auto | cuda | xpu | mps | cpu", choices=["auto", "cuda", "xpu", "mps", "cpu"])
    precision: str = knob("auto", "auto | bf16 | fp16 | fp32 (auto: bf16 where the device does bf16 math)",
                          choices=["auto", "bf16", "fp16", "fp32"])
    epochs: float = knob(2.0, "passes over the training data (fractions allowed)", low=0, low_open=True)
    batch_size: int = knob(16, "examples per micro-batch, per process", low=1)
    grad_accum: int = knob(1, "micro-batches per optimizer step", low=1)
    lr: float = knob(5e-5, "peak learning rate (AdamW)", low=0, low_open=True, aliases=("learning_rate",))
    optim: str = knob("adamw", "optimizer: adamw (torch AdamW) | adamw8bit (bitsandbytes AdamW8bit: 8-bit moments, "
                               "~1/4 of AdamW's state memory; CUDA or an x86-64 CPU)", choices=["adamw", "adamw8bit"])
    weight_decay: float = knob(0.01, "AdamW weight decay (not applied to biases and norms)", low=0)
    warmup_ratio: float = knob(0.1, "fraction of optimizer steps spent warming up linearly", low=0, high=1)
    schedule: str = knob("linear", "after warmup: constant | linear | cosine",
                         choices=["constant", "linear", "cosine"])
    max_grad_norm: float = knob(1.0, "gradient clipping norm (0 = off)", low=0)
    eval_every: int = knob(0, "evaluate every N optimizer steps (0 = only at epoch end)", low=0)
    early_stopping_patience: int = knob(0, "stop after N evals without improvement (0 = off)", low=0)
    max_bad_steps: int = knob(10, "stop after this many skipped non-finite steps", low=1)
    # invocation=True: belongs to this command, not to the run, so it is not saved in config.yaml
    stop_after_steps: int = knob(0, "end this invocation after N optimizer steps (resume later); 0 = run to the end",
                                 low=0, invocation=True)
    save_every_steps: int = knob(0, "also save a resumable checkpoint every N optimizer steps, between evals "
                                    "(only the newest is kept); 0 = only at evals", low=0)
    save_every_minutes: float = knob(0.0, "also save a resumable checkpoint when M minutes passed since the last "
                                          "one (only the newest is kept); 0 = off", low=0)
    skip_batches: int = knob(0, "on resume, skip this many extra batches (e.g. one that crashes a run)", low=0,
                             invocation=True)
    keep_last: bool = knob(False, "keep checkpoint/last's optimizer state when the run finishes (by default it "
                                  "is dropped: it is twice the weights' size and only a resume needs it)")
    num_threads: int = knob(0, "CPU threads for torch (0 = torch default)", low=0)
    release_memory: bool = knob(True, "CPU runs: hand the heap pages a step freed back to the OS after each "
                                      "optimizer step (glibc malloc_trim; a few percent of speed for a flat RSS)")
    log_every: int = knob(10, "log train loss, learning rate and throughput every N optimizer steps "
                              "(metrics.jsonl lines of kind 'train'; 0 = only at evals)", low=0)
    report_to: str = knob("none", "also send the logged scalars to: none | tensorboard (RUN/tracking) | wandb | "
                                  "mlflow | all (through accelerate's trackers; optional extras)",
                          choices=list(REPORT_TO))
    tensorboard: bool = knob(False, "same as --report-to tensorboard (kept for older configs)")
    progress: bool = knob(True, "tqdm progress bars")
    # declared once for both stages (each stage's section sets its own default)
    eval_max_tokens: int = knob(16384, "padded tokens per evaluation / inference batch (length-sorted batching)", low=1)
    length_group: int = knob(64, "batches per length-sorted chunk when planning batches: less padding, "
                                 "slightly less random batches (1 = plain random batches)", low=1)

    def __post_init__(self) -> None:
        validate(self)

    def optimizer_steps(self, batches_per_epoch: int) -> tuple[int, int]:
        """(optimizer steps per epoch, optimizer steps of the whole run) for this many
        micro-batches per epoch: the one place this arithmetic lives."""
        per_epoch = math.ceil(batches_per_epoch / self.grad_accum)
        return per_epoch, max(1, math.ceil(self.epochs * per_epoch))

    def trackers(self) -> list[str]:
        """accelerate tracker names for --report-to (and the older --tensorboard)."""
        chosen = {"all": ["tensorboard", "wandb", "mlflow"], "none": []}.get(self.report_to, [self.report_to])
        if self.tensorboard and "tensorboard" not in chosen:
            chosen.append("tensorboard")
        return chosen
