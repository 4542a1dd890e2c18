"""Causal-LM fine-tuning as an engine Task: batches, token-level loss, evaluation, samples.

- collate: right padding; the attention mask marks real tokens by position (never by
  comparing ids with the pad id, which would also hide a real EOS when pad == eos);
  packed rows get a block-diagonal mask (src.gen.collate).
- count: the label tokens the loss is over (labels != -100 after the causal shift),
  so the engine normalises the loss by the real label tokens of the whole
  accumulation window, on every process.
- evaluate: validation loss per token and perplexity, per source too; the loss of every
  validation sequence goes to `val_losses.csv` (id, source, tokens, loss), worst first,
  so high-loss clusters can be looked at; a few generations from fixed prompts go to
  `samples.jsonl` from the engine's post-eval hook (seeded, without disturbing the
  training RNG).
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.batching import inference_batches
from ..engine.loop import TaskBase
from ..engine.rundir import VAL_LOSSES, RunDir
from ..files import atomic_write_text
from .collate import collate
from .encode import IGNORE


def clm_labels(row: dict) -> np.ndarray:
    """Plain causal-LM labels: every token (the first token of each packed example
    is not predicted from the example before it)."""
    labels = np.asarray(row["input_ids"]).astype(np.int64).copy()
    pos = row.get("position_ids")
    if pos is not None:
        labels[np.asarray(pos) == 0] = IGNORE
    return labels


def response_start(labels: np.ndarray) -> int:
    """Where the last trained run of labels starts (the final bot response); half the
    row when every token is a label (CLM data has no prompt/response boundary)."""
    trained = np.asarray(labels) != IGNORE
    if trained.all() or not trained.any():
        return len(trained) // 2
    k = int(np.flatnonzero(trained)[-1]) + 1
    while k > 0 and trained[k - 1]:
        k -= 1
    return k


def token_losses(model: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy [B, L-1] (0 where there is no label) and the label mask."""
    kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    if "position_ids" in batch:
        kw["position_ids"] = batch["position_ids"]
    logits = model(**kw).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=IGNORE, reduction="none").view_as(labels)
    return loss, mask


class GenTask(TaskBase):
    monitor, monitor_mode = "eval_loss", "min"

    def __init__(self, cfg: Any, train_rows: list[dict], val_rows: list[dict], tokenizer: Any, run_dir: Path,
                 device_type: str, save_best_fn=None, sample_prompts: list[list[int]] | None = None):
        self.cfg, self.train_rows, self.val_rows, self.tokenizer = cfg, train_rows, val_rows, tokenizer
        self.run_dir = Path(run_dir)
        self.pad_id = tokenizer.pad_token_id
        self.pad_multiple = cfg.pad_to_multiple_of or (8 if device_type in ("cuda", "xpu") else 1)
        self.save_best_fn = save_best_fn
        self.sample_prompts = sample_prompts or []
        self.last_rows: list[dict] = []
        # LoRA: resume checkpoints hold the adapters (and new token rows) only; the frozen
        # base is loaded from the base model again (src/engine/checkpoint.py).
        self.resume_trainable_only = cfg.finetune == "lora"

    # -- training ---------------------------------------------------------------------------
    def lengths(self) -> list[int]:
        return [len(r["input_ids"]) for r in self.train_rows]

    def _collate(self, rows: list[dict]) -> dict:
        batch = collate(rows, self.pad_id, self.pad_multiple)
        batch["n_examples"] = sum(int(r.get("n_examples", 1)) for r in rows)
        batch["n_tokens"] = sum(len(r["input_ids"]) for r in rows)
        return batch

    def collate(self, indices: list[int]) -> dict:
        return self._collate([self.train_rows[i] for i in indices])

    def count(self, batch: dict) -> int:
        return int((batch["labels"][:, 1:] != IGNORE).sum())

    def loss(self, model: Any, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        loss, mask = token_losses(model, batch)
        return loss.sum(), mask.sum()

    def stats(self, batch: dict) -> tuple[int, int, int]:
        return batch["n_examples"], batch["n_tokens"], int(batch["input_ids"].numel())

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, model: Any, accelerator: Any) -> dict[str, float]:
        from accelerate.utils import gather_object
        net = accelerator.unwrap_model(model)  # no DDP collectives inside eval forwards
        rank, world = accelerator.process_index, accelerator.num_processes
        mine = list(range(rank, len(self.val_rows), world))
        out = []
        lengths = [len(self.val_rows[i]["input_ids"]) for i in mine]
        for b in inference_batches(lengths, self.cfg.eval_max_tokens, max_batch=max(self.cfg.batch_size * 4, 8)):
            rows = [self.val_rows[mine[j]] for j in b]
            batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in self._collate(rows).items()}
            loss, mask = token_losses(net, batch)
            sums, counts = loss.sum(1).float().cpu().tolist(), mask.sum(1).cpu().tolist()
            out += [(mine[j], s, int(c)) for j, s, c in zip(b, sums, counts)]
        if world > 1:
            out = [x for part in gather_object([out]) for x in part]
        total = sum(s for _, s, _ in out)
        n = sum(c for _, _, c in out)
        eval_loss = total / max(n, 1)
        metrics = {"eval_loss": eval_loss, "eval_perplexity": math.exp(min(eval_loss, 50.0)), "eval_tokens": float(n)}
        by_source: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.last_rows = []
        for i, s, c in sorted(out):
            r = self.val_rows[i]
            by_source[r["source"]][0] += s
            by_source[r["source"]][1] += c
            self.last_rows.append({"id": r["id"], "source": r["source"], "tokens": c,
                                   "loss": round(s / c, 5) if c else float("nan"),
                                   "truncated": bool(r.get("truncated", False))})
        for src, (s, c) in sorted(by_source.items()):
            metrics[f"eval_loss/{src}"] = s / max(c, 1)
        if accelerator.is_main_process:
            self.write_val_losses(RunDir(self.run_dir).val_losses)
        return {**metrics, **self.sample_metrics(net, accelerator)}

    def sample_metrics(self, net: Any, accelerator: Any) -> dict[str, float]:
        """Generate the logged samples now (main process), so their length and stopping
        statistics go into this eval's metrics line; after_eval writes them out."""
        self.pending_samples = []
        if not (accelerator.is_main_process and self.cfg.sample_count and self.sample_prompts):
            return {}
        from .reply_stats import reply_stats
        self.pending_samples = self.sample_rows(net)
        return reply_stats([r["token_ids"] for r in self.pending_samples], [r["stop"] for r in self.pending_samples])

    def after_eval(self, model: Any, accelerator: Any, step: int, metrics: dict) -> None:
        """The engine's post-eval hook: write the samples this eval generated (main process)."""
        if accelerator.is_main_process and getattr(self, "pending_samples", None):
            with open(RunDir(self.run_dir).samples, "a", encoding="utf-8") as f:
                for r in self.pending_samples:
                    row = {"step": step, **{k: v for k, v in r.items() if k != "token_ids"}}
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def write_val_losses(self, path: Path) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["id", "source", "tokens", "loss", "truncated"])
        w.writeheader()
        w.writerows(sorted(self.last_rows, key=lambda r: -r["loss"] if r["tokens"] else 0.0))
        atomic_write_text(path, buf.getvalue())

    def sample_rows(self, model: Any) -> list[dict]:
        """One seeded generation per fixed prompt (the training RNG is left alone)."""
        from .sampling import generate, sampling_config
        sc = sampling_config(self.cfg.sample_preset, max_new_tokens=self.cfg.sample_max_new_tokens,
                             seed=self.cfg.seed)
        was_training = model.training
        model.eval()
        rows = []
        for k, ids in enumerate(self.sample_prompts[:self.cfg.sample_count]):
            g = generate(model, self.tokenizer, ids, sc)
            rows.append({"prompt": k, "prompt_tail": self.tokenizer.decode(ids[-40:]), "reply": g.raw,
                         "stop": g.stop_reason, "new_tokens": len(g.token_ids), "token_ids": g.token_ids})
        model.train(was_training)
        return rows

    def save_best(self, model: Any, folder: Path) -> None:
        if self.save_best_fn is not None:
            self.save_best_fn(model, folder)
        if self.last_rows:
            self.write_val_losses(folder / VAL_LOSSES)
