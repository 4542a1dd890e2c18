"""Direct Preference Optimisation in this engine: the loss, the frozen reference, the task.

Why not TRL's DPOTrainer: it brings its own loop, checkpoints and logging, and this
stage's contract (crash-safe --resume, parts, the run dir, metrics.jsonl) is the
engine's. So the loss is written once here (`dpo_loss`, the sigmoid loss of Rafailov
et al. 2023) and tests/test_gen_dpo.py checks it against TRL's on the same batch.

- `sequence_logps`: summed log-probability of each row's label tokens (the final reply
  only: src.gen.dpo_data tokenises with `train_on=last_bot`).
- The reference is frozen. Under LoRA it is the same model with its adapters disabled
  (peft `disable_adapter()`), so no second copy sits in memory; under full fine-tuning
  it is a frozen copy made before the first step. It always runs in eval mode, so it
  is deterministic (a resumed run sees the same reference values).
- `preference_metrics`: held-out DPO loss, implicit rewards beta * (log pi - log ref) of
  chosen and rejected, their margin, and preference accuracy (share of pairs whose
  chosen reward beats the rejected one). It serves any policy with a reference, so an
  SFT-only run can be scored the same way as a DPO run.
"""
from __future__ import annotations

import contextlib
import copy
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..engine.batching import inference_batches
from .collate import collate
from .task import GenTask, token_losses


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair loss -log sigmoid(beta * ((pc - rc) - (pr - rr))) and the implicit rewards
    beta * (pc - rc), beta * (pr - rr) (detached: they are for logging)."""
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def sequence_logps(model: Any, batch: dict) -> torch.Tensor:
    """Summed log-probability of each row's label tokens [B] (float32)."""
    loss, mask = token_losses(model, batch)
    return -(loss * mask).sum(1)


def _peft_model(model: Any) -> Any | None:
    net = getattr(model, "module", model)  # DDP wraps the peft model
    return net if hasattr(net, "disable_adapter") and hasattr(net, "peft_config") else None


@contextlib.contextmanager
def _eval_mode(model: Any):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def reference_logps(model: Any, batch: dict, ref_model: Any | None) -> torch.Tensor:
    """Log-probs under the frozen reference: `ref_model` when given, else `model` with its
    LoRA adapters disabled (the base it started from)."""
    with torch.no_grad():
        if ref_model is not None:
            with _eval_mode(ref_model):
                return sequence_logps(ref_model, batch)
        peft = _peft_model(model)
        if peft is None:
            raise ValueError("DPO reference: the model has no adapters to disable and no frozen copy was given")
        with peft.disable_adapter(), _eval_mode(peft):
            return sequence_logps(peft, batch)


def frozen_copy(model: Any) -> Any:
    """The full fine-tuning reference: a copy with gradients off."""
    ref = copy.deepcopy(model)
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref.eval()


def pair_batch(rows: list[dict], pad_id: int, pad_multiple: int = 1) -> dict:
    """[chosen of every pair, then rejected of every pair] in one right-padded batch (TRL's layout)."""
    seqs = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    batch = collate(seqs, pad_id, pad_multiple)
    batch["n_pairs"] = len(rows)
    batch["n_tokens"] = sum(len(s["input_ids"]) for s in seqs)
    return batch


def batch_dpo(model: Any, batch: dict, beta: float, ref_model: Any | None) -> dict[str, torch.Tensor]:
    """Policy and reference log-probs of a pair batch, the per-pair losses and rewards."""
    n = batch["n_pairs"]
    tensors = {k: v for k, v in batch.items() if torch.is_tensor(v)}
    ref = reference_logps(model, tensors, ref_model)
    pol = sequence_logps(model, tensors)
    losses, r_c, r_r = dpo_loss(pol[:n], pol[n:], ref[:n], ref[n:], beta)
    return {"losses": losses, "chosen_rewards": r_c, "rejected_rewards": r_r, "policy_chosen": pol[:n].detach()}


def preference_metrics(model: Any, rows: list[dict], beta: float, pad_id: int, *, ref_model: Any | None = None,
                       device: Any = "cpu", max_tokens: int = 8192, to_device: Callable | None = None) -> dict:
    """Held-out DPO metrics of `model` against its reference on pair rows (see module doc)."""
    lengths = [max(len(r["chosen"]["input_ids"]), len(r["rejected"]["input_ids"])) for r in rows]
    losses, margins, chosen, rejected, nll, toks = [], [], [], [], 0.0, 0
    with torch.inference_mode():
        for b in inference_batches(lengths, max_tokens // 2, max_batch=16):
            batch = pair_batch([rows[j] for j in b], pad_id)
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            out = batch_dpo(model, batch, beta, ref_model)
            losses += out["losses"].float().cpu().tolist()
            chosen += out["chosen_rewards"].float().cpu().tolist()
            rejected += out["rejected_rewards"].float().cpu().tolist()
            nll -= float(out["policy_chosen"].sum())
            toks += int((batch["labels"][: batch["n_pairs"], 1:] != -100).sum())
    margins = [c - r for c, r in zip(chosen, rejected)]
    n = max(len(losses), 1)
    return {"eval_loss": sum(losses) / n, "eval_pref_accuracy": sum(m > 0 for m in margins) / n,
            "eval_reward_margin": sum(margins) / n, "eval_chosen_reward": sum(chosen) / n,
            "eval_rejected_reward": sum(rejected) / n,
            "eval_chosen_perplexity": math.exp(min(nll / max(toks, 1), 50.0)), "eval_pairs": float(len(losses))}


class DPOTask(GenTask):
    """GenTask with the DPO loss over (chosen, rejected) pair rows; samples, checkpoints
    and the run dir are GenTask's. The monitored metric is the held-out DPO loss."""
    monitor, monitor_mode = "eval_loss", "min"

    def __init__(self, *args: Any, ref_model: Any | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.beta = self.cfg.beta
        self.ref_model = ref_model

    def lengths(self) -> list[int]:
        return [max(len(r["chosen"]["input_ids"]), len(r["rejected"]["input_ids"])) for r in self.train_rows]

    def collate(self, indices: list[int]) -> dict:
        return pair_batch([self.train_rows[i] for i in indices], self.pad_id, self.pad_multiple)

    def count(self, batch: dict) -> int:
        return int(batch["n_pairs"])

    def loss(self, model: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ref_model is not None:
            self.ref_model.to(batch["input_ids"].device)
        losses = batch_dpo(model, batch, self.beta, self.ref_model)["losses"]
        return losses.sum(), torch.tensor(float(len(losses)))

    def stats(self, batch: dict) -> tuple[int, int, int]:
        return batch["n_pairs"], batch["n_tokens"], int(batch["input_ids"].numel())

    def evaluate(self, model: Any, accelerator: Any) -> dict[str, float]:
        net = accelerator.unwrap_model(model)
        if self.ref_model is not None:
            self.ref_model.to(accelerator.device)
        # every process scores all held-out pairs (small); only the main one logs them
        metrics = preference_metrics(net, self.val_rows, self.beta, self.pad_id, ref_model=self.ref_model,
                                     device=accelerator.device, max_tokens=self.cfg.eval_max_tokens)
        return {**metrics, **self.sample_metrics(net, accelerator)}
