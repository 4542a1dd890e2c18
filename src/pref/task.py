"""The classifier as an engine Task: batches, loss, evaluation, best checkpoint."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.records import SWAP_COLUMNS, SWAP_LABEL
from ..engine.loop import TaskBase
from .inference.calibration import TemperatureChoice, average_probs, choose_temperature, log_loss
from .checkpoint import save_classifier
from .inputs.collate import collate, collate_packed
from .config import PrefConfig
from .inputs.encode import PairEncoding
from .modeling.losses import distillation_loss
from .modeling.model import padded_tokens
from .inference.predict import predict_logits

SWAP_LABEL_T = torch.tensor(SWAP_LABEL)


class PrefTask(TaskBase):
    """With a `select` encoding (rows held out of TRAINING) the temperature is fitted and
    the best checkpoint chosen there (monitor `select_log_loss`), so the val_* figures
    are held out from both; without one, both happen on the validation rows (in-sample)."""
    monitor_mode = "min"

    def __init__(self, cfg: PrefConfig, train: PairEncoding, val: PairEncoding, tokenizer, device_type: str,
                 select: PairEncoding | None = None, epoch_rows=None, lr_mults: dict[str, float] | None = None,
                 groups: dict[str, np.ndarray] | None = None):
        self.groups = groups or {}  # prompt group per row of "select" / "val": the temperature cross-fits by group
        self.cfg, self.train, self.val, self.tokenizer = cfg, train, val, tokenizer
        self._epoch_rows = epoch_rows  # (epoch) -> rows of `train` (source weights), None = each row once
        # LoRA: resume checkpoints hold adapters + head (what trains); the frozen base is
        # rebuilt from its name on resume, not copied into every checkpoint.
        self.resume_trainable_only = bool(cfg.lora)
        self.lr_mults = lr_mults  # the model's own (pref/backbone.lr_multipliers: head + adapters)
        self.select = select if select is not None and len(select) else None
        self.monitor = "select_log_loss" if self.select is not None else "val_log_loss"
        self.pad_multiple = 8 if device_type in ("cuda", "xpu") else 1  # tensor-core friendly widths on GPUs
        self.temperature = 1.0
        self.temperature_choice: TemperatureChoice | None = None  # of the last eval
        self.best_temperature_choice: TemperatureChoice | None = None  # of the saved best checkpoint
        self.last_val: tuple[np.ndarray, np.ndarray | None] | None = None

    # -- training ---------------------------------------------------------------
    def lengths(self) -> list[int]:
        return self.train.lengths().tolist()

    def epoch_rows(self, epoch: int):
        return None if self._epoch_rows is None else self._epoch_rows(epoch)

    def lr_multipliers(self) -> dict[str, float]:
        if self.lr_mults is not None:
            return self.lr_mults
        return {"head.": self.cfg.head_lr_mult}  # a fresh head learns faster than the pretrained encoder

    def collate(self, indices: list[int]) -> dict:
        if getattr(self.cfg, "padding_free", False):  # decoders, cross: one packed row, no padding
            return collate_packed(self.train, indices, self.cfg.swap_aug)
        return collate(self.train, indices, self.cfg.swap_aug, self.pad_multiple)

    def count(self, batch: dict) -> int:
        return int(batch["labels"].shape[0])

    def loss(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy against each row's target distribution (one-hot for a human label,
        soft for a pseudo-label), plus the teacher terms when their weights are set."""
        packed = {k: batch[k] for k in ("position_ids", "seq_ends") if k in batch}
        ab, ba = model(batch["input_ids"], batch["attention_mask"], batch["style"], both_orders=batch["both_orders"],
                       **packed)
        y = batch["labels"]
        target = batch.get("targets", y)
        teacher = batch.get("teachers")
        kw = dict(w_ce=self.cfg.distill_ce, w_kl=self.cfg.distill_kl, w_cos=self.cfg.distill_cos,
                  label_smoothing=self.cfg.label_smoothing)
        loss = distillation_loss(ab, target, teacher, **kw)
        if ba is not None:  # swap augmentation: the B-first order must predict the swapped target
            swapped = target[:, SWAP_COLUMNS] if target.dim() == 2 else SWAP_LABEL_T.to(y.device)[y]
            loss = 0.5 * (loss + distillation_loss(ba, swapped, None if teacher is None else teacher[:, SWAP_COLUMNS],
                                                   **kw))
        return loss, torch.tensor(float(len(y)))

    def stats(self, batch: dict) -> tuple[int, int, int]:
        m = batch["attention_mask"]
        if m is None:  # a packed row: every token is real
            return int(batch["labels"].shape[0]), batch["input_ids"].numel(), batch["input_ids"].numel()
        return int(batch["labels"].shape[0]), int(m.sum()), padded_tokens(m, self.cfg.length_chunks)

    # -- evaluation ---------------------------------------------------------------
    def predict(self, model, accelerator, enc: PairEncoding) -> tuple[np.ndarray, np.ndarray | None]:
        """Each process predicts its share of rows; results are gathered in row order."""
        from accelerate.utils import gather_object
        rank, world = accelerator.process_index, accelerator.num_processes
        rows = list(range(rank, len(enc), world))
        out = predict_logits(model, enc, device=accelerator.device, max_tokens=self.cfg.eval_max_tokens,
                             both_orders=self.cfg.swap_aug, rows=rows)
        ab, ba = out.ab, out.ba
        if world == 1:
            return ab, ba
        parts = gather_object([(rows, ab, ba)])
        out_ab = np.zeros((len(enc), 3), dtype=np.float32)
        out_ba = np.zeros((len(enc), 3), dtype=np.float32) if ba is not None else None
        for r, a, b in parts:
            out_ab[r] = a
            if out_ba is not None:
                out_ba[r] = b
        return out_ab, out_ba

    def evaluate(self, model, accelerator) -> dict[str, float]:
        ab, ba = self.predict(model, accelerator, self.val)
        y = self.val.labels
        raw = average_probs(ab, ba)
        out: dict[str, float] = {}
        if self.select is not None:
            sab, sba = self.predict(model, accelerator, self.select)
            ys = self.select.labels
            t = self._choose(sab, sba, ys, "select")
            out = {"select_log_loss": log_loss(average_probs(sab, sba, t), ys),
                   "select_log_loss_uncalibrated": log_loss(average_probs(sab, sba), ys)}
        else:
            t = self._choose(ab, ba, y, "val")
        cal = average_probs(ab, ba, t)
        self.temperature, self.last_val = t, (ab, ba)
        if self.cfg.task == "binary":  # a binary sweep minimises one of these (data/tasks.py SWEEP_METRICS)
            from ..data.tasks import binary_metrics
            b = binary_metrics(cal, y)
            out.update(val_binary_error=1.0 - b["accuracy"], val_binary_log_loss=b["log_loss"])
        return {"val_log_loss": log_loss(cal, y), "val_log_loss_uncalibrated": log_loss(raw, y),
                "val_accuracy": float((cal.argmax(1) == y).mean()), "temperature": t, **out}

    def _choose(self, ab, ba, y, rows: str) -> float:
        self.temperature_choice = choose_temperature(ab, ba, y, self.groups.get(rows)) if self.cfg.calibrate else None
        return self.temperature_choice.temperature if self.temperature_choice else 1.0

    def save_best(self, model, folder: Path) -> None:
        """What prediction needs (the layout's owner, pref/checkpoint.py, writes it)."""
        self.best_temperature_choice = self.temperature_choice
        save_classifier(folder, model, self.tokenizer, self.cfg, self.temperature)
