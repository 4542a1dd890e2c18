"""The run log of the training loop: `metrics.jsonl` lines (`"kind": "train"` every
`--log-every` optimizer steps, `"kind": "eval"` per eval) and the same scalars to the
--report-to trackers; the throughput counters each step adds to.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..files import append_jsonl


class RunLog:
    """metrics.jsonl (main process) and the same scalars to the --report-to trackers."""

    def __init__(self, path: Path, accelerator) -> None:
        self.path, self.accelerator, self.tracking = path, accelerator, bool(accelerator.log_with)

    def __call__(self, record: dict) -> None:
        if self.accelerator.is_main_process:
            append_jsonl(self.path, record)
        if self.tracking:
            kind = record["kind"]
            self.accelerator.log({f"{kind}/{k}": v for k, v in record.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"},
                                 step=record["step"])

    def close(self) -> None:
        if self.tracking:
            self.accelerator.end_training()


def count_step(progress: Any, task, micro: list, loss: float | None, units: float, seconds: float,
                grad_norm: float | None) -> None:
    """Throughput counters of one optimizer step: the run's totals and the current log window's."""
    examples = real = padded = 0
    for m in micro:
        ex, r, p = task.stats(m)
        examples, real, padded = examples + ex, real + r, padded + p
    progress.examples += examples
    progress.real_tokens += real
    progress.padded_tokens += padded
    progress.train_seconds += seconds
    accumulate_log(progress.log, loss, units, examples, real, padded, seconds, grad_norm)


def accumulate_log(acc: dict, loss: float | None, units: float, examples: int, real: int, padded: int,
                    seconds: float, grad_norm: float | None) -> None:
    """Add one optimizer step to the sums of the current train log window."""
    for k, v in (("examples", examples), ("real_tokens", real), ("padded_tokens", padded), ("seconds", seconds),
                 ("steps", 1)):
        acc[k] = acc.get(k, 0) + v
    if loss is not None:
        acc["loss_sum"] = acc.get("loss_sum", 0.0) + loss
        acc["loss_units"] = acc.get("loss_units", 0.0) + units
    if grad_norm is not None and math.isfinite(grad_norm):
        acc["grad_norm_sum"] = acc.get("grad_norm_sum", 0.0) + grad_norm
        acc["grad_norms"] = acc.get("grad_norms", 0) + 1


def train_record(progress: Any, lr: float) -> dict:
    """The `"kind": "train"` line for the steps since the previous one; resets the window."""
    acc, progress.log = progress.log, {}
    rec: dict[str, Any] = {"kind": "train", "step": progress.step, "epoch_index": progress.epoch,
                           "train_loss": acc["loss_sum"] / max(acc["loss_units"], 1e-12) if acc.get("loss_units")
                           else float("nan"), "lr": lr}
    rec.update(throughput(acc["examples"], acc["real_tokens"], acc["padded_tokens"], acc["seconds"]))
    if acc.get("grad_norms"):
        rec["grad_norm"] = acc["grad_norm_sum"] / acc["grad_norms"]
    return rec


def throughput(examples: int, real_tokens: int, padded_tokens: int, seconds: float) -> dict[str, float]:
    """Examples/s, real tokens/s and the padded share of the tokens computed: one
    definition for the run log and for every stage's final metrics."""
    return {"examples_per_s": examples / max(seconds, 1e-9), "tokens_per_s": real_tokens / max(seconds, 1e-9),
            "pad_fraction": 1.0 - real_tokens / max(padded_tokens, 1)}
