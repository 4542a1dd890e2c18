"""The training loop shared by the classifier and the generative stages.

One visible loop (nanoGPT style). A stage plugs in through a `Task`:

    lengths()            per-example lengths, for length-grouped batches
    collate(indices)     a CPU batch dict
    count(batch)         units the loss is averaged over (pairs, or label tokens)
    loss(model, batch)   (summed loss, units) -- summed, so the loop can divide
                         by the units of the whole accumulation window
    stats(batch)         (examples, real tokens, padded tokens) for throughput
    evaluate(model, acc) metrics dict containing `monitor`
    save_best(model, folder)   what prediction needs (weights, tokenizer, config)

Everything else lives here: accelerate (device, DDP, mixed precision),
accumulation with loss normalised by the window's units, AdamW, warmup +
schedule, clipping, the non-finite step guard, evals, early stopping, best and
resumable checkpoints.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from .batching import plan_batches, shard
from . import faults
from .checkpoint import (append_jsonl, atomic_dir, best_dir as best_folder, last_dir as last_folder, load_resume_state,
                         load_weights, recover_dir, save_resume_state, set_rng_state, truncate_jsonl)
from .settings import TrainSettings

SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


class NonFiniteLossError(RuntimeError):
    pass


class Task(Protocol):
    monitor: str
    monitor_mode: str  # "min" or "max"

    def lengths(self) -> list[int]: ...
    def collate(self, indices: list[int]) -> dict: ...
    def count(self, batch: dict) -> int: ...
    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]: ...
    def stats(self, batch: dict) -> tuple[int, int, int]: ...
    def evaluate(self, model: torch.nn.Module, accelerator) -> dict[str, float]: ...
    def save_best(self, model: torch.nn.Module, folder: Path) -> None: ...


@dataclass
class Progress:
    """Where training stands; saved with every resume checkpoint."""
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best: float | None = None
    best_step: int = -1
    evals_since_best: int = 0
    bad_steps: int = 0
    loss_sum: float = 0.0  # since the last eval, for the logged train loss
    loss_units: float = 0.0
    examples: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    train_seconds: float = 0.0
    done: bool = False
    history: list = field(default_factory=list)


def epoch_plan(cfg: TrainSettings, lengths, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This process's batches for one epoch: a pure function of the config, so
    resume and every DDP rank agree on it."""
    plan = plan_batches(lengths, cfg.batch_size, seed=cfg.seed, epoch=epoch, group_size=cfg.length_group)
    return shard(plan, rank, world)


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float) -> list[dict]:
    """No weight decay on biases and norm weights (1-d tensors), as is standard.
    A model may set `lr_multipliers = {"name.prefix.": k}` (e.g. a fresh head
    learning faster than a pretrained encoder)."""
    mults = getattr(model, "lr_multipliers", {})
    groups: dict[tuple[float, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mult = next((k for prefix, k in mults.items() if name.startswith(prefix)), 1.0)
        groups.setdefault((mult, p.ndim >= 2), []).append(p)
    return [{"params": ps, "lr": lr * mult, "weight_decay": weight_decay if decay else 0.0}
            for (mult, decay), ps in groups.items()]


def make_accelerator(cfg: TrainSettings):
    from accelerate import Accelerator

    from ..device import DeviceChoice, to_accelerate_precision
    choice = DeviceChoice.resolve(cfg.device, cfg.precision)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    mixed = to_accelerate_precision(choice.precision)
    _forget_other_precision(mixed)
    return Accelerator(mixed_precision=mixed, cpu=choice.device == "cpu",
                       step_scheduler_with_optimizer=False), choice


def _forget_other_precision(mixed: str) -> None:
    """accelerate keeps one process-wide state and refuses a second Accelerator with
    another precision. Runs in one process (tests, sweeps, a notebook) may differ,
    so drop that state, keeping the distributed part (process group) untouched."""
    from accelerate.state import AcceleratorState
    shared = AcceleratorState._shared_state
    if shared and str(shared.get("_mixed_precision", mixed)) != mixed:
        AcceleratorState._reset_state(reset_partial_state=False)


def _improved(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value < best if mode == "min" else value > best


def train(cfg: TrainSettings, task: Task, model: torch.nn.Module, run_dir: Path, accelerator,
          *, resume: bool = False, trial_hook=None) -> Progress:
    """Train `model` on `task`; returns the final Progress. `trial_hook(step, metrics)`
    is called after each eval (optuna reporting/pruning raises from there)."""
    run_dir = Path(run_dir)
    last_dir, best_dir = last_folder(run_dir), best_folder(run_dir)
    rank, world = accelerator.process_index, accelerator.num_processes
    lengths = task.lengths()
    per_epoch = len(epoch_plan(cfg, lengths, 0, rank, world))
    if per_epoch == 0:
        raise ValueError(f"no training batches: {len(lengths)} examples for {world} process(es)")
    steps_per_epoch = math.ceil(per_epoch / cfg.grad_accum)
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    n_epochs = math.ceil(cfg.epochs)

    # foreach: one multi-tensor kernel per group instead of a Python loop over tensors (CPU default is the loop)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay, cfg.lr), lr=cfg.lr, foreach=True)
    scheduler = get_scheduler(SCHEDULES[cfg.schedule], optimizer,
                              num_warmup_steps=int(cfg.warmup_ratio * total_steps), num_training_steps=total_steps)
    progress = Progress()
    if accelerator.is_main_process:  # finish or undo a save cut by a crash; remove its leftovers
        recover_dir(best_dir)
        recover_dir(last_dir)
    accelerator.wait_for_everyone()
    if resume and (last_dir / "training_state.pt").exists():
        state = load_resume_state(last_dir)
        load_weights(model, last_dir / "model.safetensors")
        if state["optimizer"]:  # empty when saved under DeepSpeed (see save_last)
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        progress = Progress(**state["progress"])
        set_rng_state(state["rng"])
        progress.batch_in_epoch += cfg.skip_batches
        if accelerator.is_main_process:
            _truncate_metrics(run_dir / "metrics.jsonl", progress.step, accelerator.print)
        accelerator.print(f"[resume] step {progress.step}, epoch {progress.epoch}, batch {progress.batch_in_epoch}")
    elif resume:
        accelerator.print(f"[resume] no checkpoint in {last_dir}: starting from scratch")
    deepspeed = _is_deepspeed(accelerator)
    if deepspeed:
        _configure_deepspeed(accelerator, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    writer = _tensorboard(run_dir) if cfg.tensorboard and accelerator.is_main_process else None

    last_save = [time.monotonic()]

    def save_last() -> None:
        last_save[0] = time.monotonic()
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            with atomic_dir(last_dir) as tmp:
                # ZeRO partitions the optimizer state across processes; one process cannot
                # save it, so a DeepSpeed resume restarts the Adam moments (weights, schedule,
                # RNG and data position are restored).
                save_resume_state(tmp, model=accelerator.unwrap_model(model),
                                  optimizer=_NoOptimizerState() if deepspeed else optimizer,
                                  scheduler=scheduler, progress=progress.__dict__)
        accelerator.wait_for_everyone()

    def periodic_save_due() -> bool:
        """--save-every-steps / --save-every-minutes: resumable checkpoints between evals."""
        due = bool(cfg.save_every_steps) and progress.step % cfg.save_every_steps == 0
        if cfg.save_every_minutes and not due:
            due = time.monotonic() - last_save[0] >= 60 * cfg.save_every_minutes
            if world > 1:  # clocks differ between processes, and all must save together: rank 0 decides
                from accelerate.utils import broadcast
                due = bool(broadcast(torch.tensor([float(due)], device=accelerator.device), from_process=0).item())
        return due

    def evaluate() -> dict:
        model.eval()
        with torch.inference_mode(), accelerator.autocast():
            metrics = task.evaluate(model, accelerator)
        model.train()
        metrics = {"step": progress.step, "epoch": round(progress.epoch + progress.batch_in_epoch / per_epoch, 4),
                   "train_loss": progress.loss_sum / max(progress.loss_units, 1e-12),
                   "lr": scheduler.get_last_lr()[0], **metrics}
        progress.loss_sum = progress.loss_units = 0.0
        value = metrics[task.monitor]
        if _improved(value, progress.best, task.monitor_mode):
            progress.best, progress.best_step, progress.evals_since_best = value, progress.step, 0
            if accelerator.is_main_process:
                with atomic_dir(best_dir) as tmp:
                    task.save_best(accelerator.unwrap_model(model), tmp)
        else:
            progress.evals_since_best += 1
        progress.history.append(metrics)
        if accelerator.is_main_process:
            append_jsonl(run_dir / "metrics.jsonl", metrics)
            if writer:
                for k, v in metrics.items():
                    if isinstance(v, (int, float)):
                        writer.add_scalar(k, v, progress.step)
        accelerator.print(f"[eval] step {progress.step}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
        if trial_hook is not None:
            trial_hook(progress.step, metrics)
        return metrics

    model.train()
    steps_this_run = 0
    stop = False
    while progress.epoch < n_epochs and not stop:
        batches = epoch_plan(cfg, lengths, progress.epoch, rank, world)
        if progress.epoch == n_epochs - 1 and cfg.epochs % 1:  # fractional last epoch
            batches = batches[:max(1, math.ceil((cfg.epochs % 1) * len(batches)))]
        bar = tqdm(total=len(batches), initial=min(progress.batch_in_epoch, len(batches)),
                   desc=f"epoch {progress.epoch + 1}/{n_epochs}", unit="batch",
                   disable=not (cfg.progress and accelerator.is_main_process), dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 10.0)  # keep CI logs short
        while progress.batch_in_epoch < len(batches):
            window = batches[progress.batch_in_epoch:progress.batch_in_epoch + cfg.grad_accum]
            t0 = time.perf_counter()
            micro = [task.collate(b) for b in window]
            units = torch.tensor(float(sum(task.count(m) for m in micro)), device=accelerator.device)
            global_units = accelerator.reduce(units, "sum") if world > 1 else units
            window_loss = 0.0
            for i, m in enumerate(micro):
                m = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in m.items()}
                sync = contextlib.nullcontext() if i == len(micro) - 1 else accelerator.no_sync(model)
                with sync, accelerator.autocast():
                    loss_sum, _ = task.loss(model, m)
                    # DDP averages gradients over processes: scale so the result is
                    # sum(loss) / units of the whole window, on every process.
                    loss = loss_sum * world / global_units.clamp(min=1)
                    if deepspeed:  # DeepSpeed divides by its accumulation steps itself
                        loss = loss * cfg.grad_accum
                accelerator.backward(loss)
                window_loss += float(loss_sum.detach())
            norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or float("inf"))
            # norm is None under DeepSpeed, which clips inside its own step
            finite = math.isfinite(window_loss) and (accelerator.scaler is not None or norm is None
                                                     or math.isfinite(float(norm)))
            if finite:
                optimizer.step()  # with an fp16 scaler this skips overflowing steps by itself
                scheduler.step()
            else:
                progress.bad_steps += 1
                accelerator.print(f"[guard] non-finite loss/grad at step {progress.step}: step skipped "
                                  f"({progress.bad_steps}/{cfg.max_bad_steps})")
                if progress.bad_steps >= cfg.max_bad_steps:
                    raise NonFiniteLossError(f"{progress.bad_steps} non-finite steps: stopping (lower the lr or use fp32)")
            optimizer.zero_grad(set_to_none=True)
            progress.step += 1
            steps_this_run += 1
            progress.batch_in_epoch += len(window)
            if finite:
                progress.loss_sum += window_loss
                progress.loss_units += float(units)
            for m in micro:
                ex, real, padded = task.stats(m)
                progress.examples += ex
                progress.real_tokens += real
                progress.padded_tokens += padded
            progress.train_seconds += time.perf_counter() - t0
            faults.point("step")
            saved = False
            bar.update(len(window))
            bar.set_postfix(loss=f"{window_loss / max(float(units), 1):.4f}",
                            ex_s=f"{progress.examples / max(progress.train_seconds, 1e-9):.1f}", refresh=False)
            if cfg.eval_every and progress.step % cfg.eval_every == 0 and progress.batch_in_epoch < len(batches):
                evaluate()
                if cfg.early_stopping_patience and progress.evals_since_best >= cfg.early_stopping_patience:
                    stop = True
                save_last()
                saved = True
                if stop:
                    break
            if not saved and progress.batch_in_epoch < len(batches) and periodic_save_due():  # epoch ends save anyway
                save_last()
                saved = True
            if cfg.stop_after_steps and steps_this_run >= cfg.stop_after_steps:
                bar.close()
                if not saved:
                    save_last()
                accelerator.print(f"[stop] {steps_this_run} steps done this run; continue with --resume")
                return progress
        bar.close()
        if not stop:
            progress.epoch += 1
            progress.batch_in_epoch = 0
            evaluate()
            if cfg.early_stopping_patience and progress.evals_since_best >= cfg.early_stopping_patience:
                accelerator.print(f"[early stop] no improvement in {cfg.early_stopping_patience} evals")
                stop = True
            save_last()
    progress.done = True
    save_last()
    if writer:
        writer.close()
    return progress


def _is_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def _configure_deepspeed(accelerator, cfg: TrainSettings) -> None:
    """Under `accelerate launch` with a DeepSpeed config (configs/accelerate/deepspeed_zero*.yaml):
    the loop feeds batches itself (no DataLoader for accelerate to read a batch size from), and
    DeepSpeed must accumulate and clip exactly as the loop does, so say so in its config."""
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = cfg.batch_size
    ds["gradient_accumulation_steps"] = cfg.grad_accum
    ds["train_batch_size"] = cfg.batch_size * cfg.grad_accum * accelerator.num_processes
    ds["gradient_clipping"] = cfg.max_grad_norm or 0.0


class _NoOptimizerState:
    def state_dict(self) -> dict:
        return {}


def _truncate_metrics(path: Path, step: int, note=print) -> None:
    """On resume, drop eval lines logged after the checkpoint we resume from (and a torn
    last line: a crash mid-append)."""
    torn = truncate_jsonl(path, step)
    if torn:
        note(f"[resume] {torn}")


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("[tensorboard] not installed (pip install tensorboard): skipping")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
