"""Training knobs shared by every stage (classifier and generative).

Stage configs inherit from `TrainSettings`, so a field added here is a flag on
every CLI at once (see src/config.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import knob


@dataclass
class TrainSettings:
    seed: int = knob(0, "seed for data order, initialisation, dropout and splits")
    device: str = knob("auto", "auto | cuda | xpu | mps | cpu", choices=["auto", "cuda", "xpu", "mps", "cpu"])
    precision: str = knob("auto", "auto | bf16 | fp16 | fp32 (auto: bf16 where the device does bf16 math)",
                          choices=["auto", "bf16", "fp16", "fp32"])
    epochs: float = knob(2.0, "passes over the training data (fractions allowed)")
    batch_size: int = knob(16, "examples per micro-batch, per process")
    grad_accum: int = knob(1, "micro-batches per optimizer step")
    lr: float = knob(5e-5, "peak learning rate (AdamW)")
    weight_decay: float = knob(0.01, "AdamW weight decay (not applied to biases and norms)")
    warmup_ratio: float = knob(0.1, "fraction of optimizer steps spent warming up linearly")
    schedule: str = knob("linear", "after warmup: constant | linear | cosine",
                         choices=["constant", "linear", "cosine"])
    max_grad_norm: float = knob(1.0, "gradient clipping norm (0 = off)")
    eval_every: int = knob(0, "evaluate every N optimizer steps (0 = only at epoch end)")
    early_stopping_patience: int = knob(0, "stop after N evals without improvement (0 = off)")
    max_bad_steps: int = knob(10, "stop after this many skipped non-finite steps")
    stop_after_steps: int = knob(0, "end this invocation after N optimizer steps (resume later); 0 = run to the end")
    save_every_steps: int = knob(0, "also save a resumable checkpoint every N optimizer steps, between evals "
                                    "(only the newest is kept); 0 = only at evals", low=0)
    save_every_minutes: float = knob(0.0, "also save a resumable checkpoint when M minutes passed since the last "
                                          "one (only the newest is kept); 0 = off", low=0)
    skip_batches: int = knob(0, "on resume, skip this many extra batches (e.g. one that crashes a run)")
    num_threads: int = knob(0, "CPU threads for torch (0 = torch default)")
    tensorboard: bool = knob(False, "also log scalars to TensorBoard under the run dir")
    progress: bool = knob(True, "tqdm progress bars")
    length_group: int = knob(64, "batches per length-sorted chunk when planning batches: less padding, "
                                 "slightly less random batches (1 = plain random batches)")
