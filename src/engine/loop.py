"""The training loop shared by the classifier and the generative stages.

One visible loop (nanoGPT style); over 400 lines because the loop is kept in
one readable piece rather than scattered over helpers. A stage plugs in through a `Task`
(subclass `TaskBase` for the optional parts):

    lengths()            per-example lengths, for length-grouped batches
    collate(indices)     a CPU batch dict
    count(batch)         units the loss is averaged over (pairs, or label tokens)
    loss(model, batch)   (summed loss, units) -- summed, so the loop can divide
                         by the units of the whole accumulation window
    stats(batch)         (examples, real tokens, padded tokens) for throughput
    evaluate(model, acc) metrics dict containing `monitor`
    save_best(model, folder)   what prediction needs (weights, tokenizer, config)
    lr_multipliers()     {"parameter.name.prefix.": k}: those parameters learn at lr * k
    resume_trainable_only      resume checkpoints hold only parameters that train
    after_eval(model, acc, step, metrics)   e.g. log sample generations
    epoch_rows(epoch)    the examples one epoch trains on (repeats allowed), a pure
                         function of (seed, epoch) so resume replans the same epoch;
                         None = every example once (sampling weights per source)

Everything else lives here: accelerate (device, DDP, mixed precision, trackers),
accumulation with loss normalised by the window's units, AdamW, warmup +
schedule, clipping, the non-finite step guard, evals, early stopping, best and
resumable checkpoints, and the run log: `metrics.jsonl` holds one line per
`--log-every` optimizer steps (`"kind": "train"`: loss, learning rate,
throughput) and one per eval (`"kind": "eval"`); the same scalars go to
TensorBoard / W&B / MLflow with `--report-to`.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..errors import UsageError
from . import faults
from .batching import pad_fraction, plan_batches, shard
from ..files import atomic_dir, recover_dir, truncate_jsonl
from .checkpoint import LastCheckpoint
from .interrupt import StopRequests, TrainingInterrupted
from .rundir import RunDir
from .memory import heap_releaser, peak_rss_mb
from .runlog import RunLog, count_step, throughput, train_record
from .settings import TrainSettings

SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


class NonFiniteLossError(RuntimeError):
    pass


class Task(Protocol):
    monitor: str
    monitor_mode: str  # "min" or "max"
    resume_trainable_only: bool

    def lengths(self) -> list[int]: ...
    def collate(self, indices: list[int]) -> dict: ...
    def count(self, batch: dict) -> int: ...
    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]: ...
    def stats(self, batch: dict) -> tuple[int, int, int]: ...
    def evaluate(self, model: torch.nn.Module, accelerator) -> dict[str, float]: ...
    def save_best(self, model: torch.nn.Module, folder: Path) -> None: ...
    def lr_multipliers(self) -> dict[str, float]: ...
    def after_eval(self, model: torch.nn.Module, accelerator, step: int, metrics: dict) -> None: ...


class TaskBase:
    """Defaults for the optional parts of the Task protocol."""
    resume_trainable_only = False  # True for adapters: the frozen base is loaded again, not saved per resume

    def lr_multipliers(self) -> dict[str, float]:
        return {}

    def after_eval(self, model: torch.nn.Module, accelerator, step: int, metrics: dict) -> None:
        """Called after every eval (inference mode, autocast, unwrapped model, every process)."""

    def epoch_rows(self, epoch: int):
        """Indices into lengths() this epoch trains on (None = all, once). Must depend on
        (seed, epoch) only and keep the same count every epoch (the schedule is planned once)."""
        return None


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
    log: dict = field(default_factory=dict)  # sums since the last train log line (see _train_record)
    examples: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    train_seconds: float = 0.0
    done: bool = False
    history: list = field(default_factory=list)


def epoch_plan(cfg: TrainSettings, lengths, epoch: int, rank: int = 0, world: int = 1,
               rows=None) -> list[list[int]]:
    """This process's batches for one epoch: a pure function of the config (and of the
    task's `epoch_rows(epoch)` when given as `rows`), so resume and every DDP rank agree on it."""
    if rows is None:
        plan = plan_batches(lengths, cfg.batch_size, seed=cfg.seed, epoch=epoch, group_size=cfg.length_group)
    else:  # plan over the epoch's draw, then map back to example indices
        rows = np.asarray(rows, dtype=np.int64)
        plan = [rows[b].tolist() for b in plan_batches(np.asarray(lengths)[rows], cfg.batch_size, seed=cfg.seed,
                                                       epoch=epoch, group_size=cfg.length_group)]
    return shard(plan, rank, world)


def _epoch_rows(task, epoch: int):
    hook = getattr(task, "epoch_rows", None)  # optional: Task implementations need not subclass TaskBase
    return hook(epoch) if hook is not None else None


def run_steps(cfg: TrainSettings, lengths, rank: int = 0, world: int = 1, rows=None) -> tuple[int, int, int]:
    """(batches per epoch, optimizer steps per epoch, optimizer steps of the run) for
    this process, as the loop counts them (`rows`: the task's epoch-0 draw)."""
    per_epoch = len(epoch_plan(cfg, lengths, 0, rank, world, rows))
    return (per_epoch, *cfg.optimizer_steps(per_epoch))


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float,
                 mults: dict[str, float] | None = None) -> list[dict]:
    """No weight decay on biases and norm weights (1-d tensors), as is standard.
    `mults` = {"name.prefix.": k} (from the task): those parameters learn at lr * k
    (e.g. a fresh head learning faster than a pretrained encoder)."""
    mults = mults or {}
    groups: dict[tuple[float, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mult = next((k for prefix, k in mults.items() if name.startswith(prefix)), 1.0)
        groups.setdefault((mult, p.ndim >= 2), []).append(p)
    return [{"params": ps, "lr": lr * mult, "weight_decay": weight_decay if decay else 0.0}
            for (mult, decay), ps in groups.items()]


def make_optimizer(cfg: TrainSettings, groups: list[dict], device_type: str) -> torch.optim.Optimizer:
    """--optim: torch AdamW, or bitsandbytes AdamW8bit (same groups, schedule and resume path)."""
    if cfg.optim == "adamw8bit":
        from .bnb import adamw8bit
        return adamw8bit(groups, cfg.lr, device_type)
    # foreach: one multi-tensor kernel per group instead of a Python loop over tensors (CPU default is the loop)
    return torch.optim.AdamW(groups, lr=cfg.lr, foreach=True)


def check_deepspeed_device(device: str) -> None:
    """A DeepSpeed accelerate config (accelerate launch sets ACCELERATE_USE_DEEPSPEED) on a CPU
    run: Accelerator(cpu=True) drops the DeepSpeed plugin and the run would silently be plain
    DDP, so refuse it (DeepSpeed's CPU support is one-process ZeRO at best: ZeRO over two CPU
    processes failed inside accelerate's process count)."""
    import os
    if device == "cpu" and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise UsageError("a DeepSpeed accelerate config on a CPU run would train as plain DDP without DeepSpeed "
                         "(accelerate drops the plugin on CPU): use configs/accelerate/cpu_ddp.yaml, or a GPU")


def check_engine_device(cfg: TrainSettings, device: str) -> None:
    """What the engine would refuse on `device`, checked before a stage reads data or writes files."""
    check_deepspeed_device(device)
    if cfg.optim == "adamw8bit":
        from .bnb import check_adamw8bit
        check_adamw8bit(device)


def make_accelerator(cfg: TrainSettings, run_dir: str | Path | None = None):
    """The Accelerator for a run (and its DeviceChoice). With `run_dir`, the trackers
    of --report-to log there (TensorBoard: RUN/tensorboard)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    from ..device import DeviceChoice, to_accelerate_precision
    choice = DeviceChoice.resolve(cfg.device, cfg.precision)
    check_engine_device(cfg, choice.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    mixed = to_accelerate_precision(choice.precision)
    _forget_other_precision(mixed)
    trackers = cfg.trackers() if run_dir is not None else []
    _check_trackers_installed(trackers)
    project = ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(Path(run_dir) / "tensorboard")) \
        if trackers else None
    return Accelerator(mixed_precision=mixed, cpu=choice.device == "cpu", step_scheduler_with_optimizer=False,
                       log_with=trackers or None, project_config=project), choice


TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}


def _check_trackers_installed(trackers: list[str]) -> None:
    import importlib.util
    for name in trackers:
        if not any(importlib.util.find_spec(m) for m in TRACKER_PACKAGES[name]):
            raise UsageError(f"--report-to {name} needs the {TRACKER_PACKAGES[name][0]} package "
                             f"(pip install {TRACKER_PACKAGES[name][0]})")


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


class Evaluator:
    """One eval: the task's metrics, the best checkpoint when the monitored value improves,
    the log line, then the task's after_eval hook and the sweep's trial hook."""

    def __init__(self, task: Task, accelerator, best_dir: Path, log: RunLog, trial_hook, per_epoch: int) -> None:
        self.task, self.accelerator, self.best_dir, self.log = task, accelerator, best_dir, log
        self.trial_hook, self.per_epoch = trial_hook, per_epoch

    def __call__(self, model: torch.nn.Module, progress: Progress, scheduler, epoch: float | None = None) -> dict:
        task, acc = self.task, self.accelerator
        model.eval()
        with torch.inference_mode(), acc.autocast():
            metrics = task.evaluate(model, acc)
        model.train()
        metrics = {"kind": "eval", "step": progress.step,
                   "epoch": round(progress.epoch + progress.batch_in_epoch / self.per_epoch if epoch is None else epoch, 4),
                   "train_loss": progress.loss_sum / max(progress.loss_units, 1e-12),
                   "lr": scheduler.get_last_lr()[0], **metrics}
        progress.loss_sum = progress.loss_units = 0.0  # the next eval's train_loss covers the steps since this one
        value = metrics[task.monitor]
        if _improved(value, progress.best, task.monitor_mode):
            progress.best, progress.best_step, progress.evals_since_best = value, progress.step, 0
            if acc.is_main_process:
                with atomic_dir(self.best_dir) as tmp:
                    task.save_best(acc.unwrap_model(model), tmp)
        else:
            progress.evals_since_best += 1
        progress.history.append(metrics)
        self.log(metrics)
        acc.print(f"[eval] step {progress.step}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
        net = acc.unwrap_model(model)
        net.eval()
        with torch.inference_mode(), acc.autocast():
            task.after_eval(net, acc, progress.step, metrics)
        model.train()
        if self.trial_hook is not None:
            self.trial_hook(progress.step, metrics)
        return metrics


def evals_planned(cfg: TrainSettings, epochs_left: int, total_steps: int, done: int) -> int:
    """About how many evals are still to come: each remaining epoch's end, plus one every
    eval_every steps (one at an epoch's end counts once only roughly: this is for an estimate)."""
    mid = ((total_steps - 1) // cfg.eval_every - done // cfg.eval_every) if cfg.eval_every else 0
    return max(epochs_left, 0) + max(mid, 0)


def time_estimate(step_seconds: float, steps_left: int, evals_left: int) -> str:
    """One line, printed once a step has been timed: how long the rest of the run will train
    (evals come on top: their cost depends on the validation rows, not the step)."""
    minutes = step_seconds * steps_left / 60
    span = f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"
    return (f"[time] ~{span} of training left: {steps_left} steps at {step_seconds:.2f} s/step "
            f"(+ {evals_left} eval{'s' if evals_left != 1 else ''})")


def train(cfg: TrainSettings, task: Task, model: torch.nn.Module, run_dir: Path, accelerator,
          *, resume: bool = False, trial_hook=None, hparams: Any = None) -> Progress:
    """Train `model` on `task`; returns the final Progress. After each eval, `task.after_eval`
    runs, then `trial_hook(step, metrics)` (optuna reporting/pruning raises from there).
    `cfg` is the stage config's `train` section; `hparams` the whole stage config, which the
    trackers record (default: `cfg`). Ctrl-C / SIGTERM: checkpoint/last is saved at the next
    step boundary, then TrainingInterrupted is raised (a second Ctrl-C stops at once)."""
    rd = RunDir(run_dir)
    rd.root.mkdir(parents=True, exist_ok=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    lengths = task.lengths()
    per_epoch, _, total_steps = run_steps(cfg, lengths, rank, world, _epoch_rows(task, 0))
    if per_epoch == 0:
        raise UsageError(f"no training batches: {len(lengths)} examples for {world} process(es)")
    n_epochs = math.ceil(cfg.epochs)

    optimizer = make_optimizer(cfg, param_groups(model, cfg.weight_decay, cfg.lr, task.lr_multipliers()),
                               accelerator.device.type)
    scheduler = get_scheduler(SCHEDULES[cfg.schedule], optimizer,
                              num_warmup_steps=int(cfg.warmup_ratio * total_steps), num_training_steps=total_steps)
    if accelerator.is_main_process:  # finish or undo a save cut by a crash; remove its leftovers
        recover_dir(rd.best)
        recover_dir(rd.last)
    accelerator.wait_for_everyone()
    sharded = _is_sharded(accelerator)
    last = LastCheckpoint(rd.root, accelerator, sharded=sharded, trainable_only=task.resume_trainable_only)
    progress = Progress()
    saved = last.restore(model, optimizer, scheduler) if resume else None
    if saved is not None:
        progress = Progress(**saved)
        progress.batch_in_epoch += cfg.skip_batches
        if accelerator.is_main_process:  # the lines logged after that checkpoint are logged again
            _truncate_metrics(rd.metrics_log, progress.step, accelerator.print)
        accelerator.print(f"[resume] step {progress.step}, epoch {progress.epoch}, batch {progress.batch_in_epoch}")
    elif resume:
        accelerator.print(f"[resume] no checkpoint in {rd.last}: starting from scratch")
    deepspeed = _is_deepspeed(accelerator)
    if deepspeed:
        _configure_deepspeed(accelerator, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    last.restore_shards()
    if accelerator.log_with:
        # project "prefpipe" (W&B / MLflow); TensorBoard events land in RUN/tensorboard/prefpipe
        accelerator.init_trackers("prefpipe", config=_tracker_config(cfg if hparams is None else hparams))
    log = RunLog(rd.metrics_log, accelerator)

    def save_last(finished: bool = False) -> None:
        # a finished run keeps its optimizer state only with --keep-last: a resume would never read it
        last.save(model, optimizer, scheduler, progress.__dict__, keep_optimizer=not finished or cfg.keep_last)

    evaluate = Evaluator(task, accelerator, rd.best, log, trial_hook, per_epoch)
    release_heap = heap_releaser(str(accelerator.device)) if cfg.release_memory else None

    model.train()
    steps_this_run, start_step = 0, progress.step
    stop = False
    with StopRequests() as signals:
        while progress.epoch < n_epochs and not stop:
            batches = epoch_plan(cfg, lengths, progress.epoch, rank, world, _epoch_rows(task, progress.epoch))
            if progress.epoch == n_epochs - 1 and cfg.epochs % 1:  # fractional last epoch
                batches = batches[:max(1, math.ceil((cfg.epochs % 1) * len(batches)))]
            bar = tqdm(total=len(batches), initial=min(progress.batch_in_epoch, len(batches)),
                       desc=f"epoch {progress.epoch + 1}/{n_epochs}", unit="batch",
                       disable=not (cfg.progress and accelerator.is_main_process), dynamic_ncols=True,
                       mininterval=0.5 if sys.stderr.isatty() else 10.0)  # keep CI logs short
            while progress.batch_in_epoch < len(batches):
                # one optimizer step = grad_accum micro-batches
                window = batches[progress.batch_in_epoch:progress.batch_in_epoch + cfg.grad_accum]
                t0 = time.perf_counter()
                micro = [task.collate(b) for b in window]
                # gradients of sum(loss) / units of the whole window (not a mean of micro-batch means)
                window_loss, units = _backward(task, model, micro, accelerator,
                                               cfg.grad_accum if deepspeed else 1)
                norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or float("inf"))
                # norm is None under DeepSpeed, which clips inside its own step
                finite = math.isfinite(window_loss) and (accelerator.scaler is not None or norm is None
                                                         or math.isfinite(float(norm)))
                lr_used = scheduler.get_last_lr()[0]
                if finite:
                    optimizer.step()  # with an fp16 scaler this skips overflowing steps by itself
                    scheduler.step()
                else:  # a non-finite step would poison the weights: skip it, stop after too many
                    progress.bad_steps += 1
                    accelerator.print(f"[guard] non-finite loss/grad at step {progress.step}: step skipped "
                                      f"({progress.bad_steps}/{cfg.max_bad_steps})")
                    if progress.bad_steps >= cfg.max_bad_steps:
                        raise NonFiniteLossError(f"{progress.bad_steps} non-finite steps: stopping "
                                                 "(lower the lr or use fp32)")
                optimizer.zero_grad(set_to_none=True)
                if release_heap:  # inside the timed step: its cost shows in the throughput
                    release_heap()
                progress.step += 1
                steps_this_run += 1
                progress.batch_in_epoch += len(window)
                if finite:
                    progress.loss_sum += window_loss
                    progress.loss_units += units
                count_step(progress, task, micro, window_loss if finite else None, units,
                            time.perf_counter() - t0, float(norm) if norm is not None and finite else None)
                if cfg.log_every and progress.step % cfg.log_every == 0:
                    log(train_record(progress, lr_used))
                if steps_this_run == min(2, total_steps - start_step):  # the 1st step pays first-call costs
                    accelerator.print(time_estimate(time.perf_counter() - t0, total_steps - progress.step,
                                                    evals_planned(cfg, n_epochs - progress.epoch, total_steps,
                                                                  progress.step)))
                faults.point("step")
                saved = False
                bar.update(len(window))
                bar.set_postfix(loss=f"{window_loss / max(units, 1):.4f}",
                                ex_s=f"{progress.examples / max(progress.train_seconds, 1e-9):.1f}", refresh=False)
                mid_epoch = progress.batch_in_epoch < len(batches)  # the epoch's end evaluates and saves anyway
                if cfg.eval_every and progress.step % cfg.eval_every == 0 and mid_epoch:
                    evaluate(model, progress, scheduler)
                    stop = bool(cfg.early_stopping_patience) and progress.evals_since_best >= cfg.early_stopping_patience
                    save_last()
                    saved = True
                    if stop:
                        break
                if not saved and mid_epoch and last.periodic_due(progress.step, cfg.save_every_steps,
                                                                  cfg.save_every_minutes):
                    save_last()
                    saved = True
                # Ctrl-C / SIGTERM, or --stop-after-steps: leave at this step boundary, resumable
                interrupted = _agree(signals.requested, accelerator)
                if interrupted or (cfg.stop_after_steps and steps_this_run >= cfg.stop_after_steps):
                    bar.close()
                    if not saved:
                        save_last()
                    log.close()
                    if interrupted:
                        raise TrainingInterrupted(f"interrupted ({signals.signal_name or 'another process'}) at "
                                                  f"step {progress.step}: checkpoint saved in {rd.last}",
                                                  progress.step)
                    accelerator.print(f"[stop] {steps_this_run} steps done this run; continue with --resume")
                    return progress
            bar.close()
            if not stop:
                ended = progress.epoch + len(batches) / per_epoch  # --epochs 0.5 ends at 0.5, not 1
                progress.epoch += 1
                progress.batch_in_epoch = 0
                evaluate(model, progress, scheduler, ended)
                if release_heap:  # an eval's batches are shaped unlike training's
                    release_heap()
                if cfg.early_stopping_patience and progress.evals_since_best >= cfg.early_stopping_patience:
                    accelerator.print(f"[early stop] no improvement in {cfg.early_stopping_patience} evals")
                    stop = True
                save_last()
        progress.done = True
        save_last(finished=True)
    log.close()
    if release_heap:  # what the stage does next (final predictions) allocates differently from training
        release_heap(force=True)
    return progress


def _backward(task, model: torch.nn.Module, micro: list[dict], accelerator, extra_scale: int) -> tuple[float, float]:
    """Backward over one accumulation window; returns (summed loss, units) of this process.
    `extra_scale`: DeepSpeed divides by its accumulation steps itself, so the loss is multiplied back."""
    world = accelerator.num_processes
    units = torch.tensor(float(sum(task.count(m) for m in micro)), device=accelerator.device)
    global_units = accelerator.reduce(units, "sum") if world > 1 else units
    window_loss = 0.0
    for i, m in enumerate(micro):
        m = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in m.items()}
        # gradients are all-reduced once per window, on its last micro-batch
        sync = contextlib.nullcontext() if i == len(micro) - 1 else accelerator.no_sync(model)
        with sync, accelerator.autocast():
            loss_sum, _ = task.loss(model, m)
            # DDP averages gradients over processes: scale so the result is
            # sum(loss) / units of the whole window, on every process.
            loss = loss_sum * world / global_units.clamp(min=1) * extra_scale
        accelerator.backward(loss)
        window_loss += float(loss_sum.detach())
    return window_loss, float(units)


def _agree(flag: bool, accelerator) -> bool:
    """Every process must leave at the same step (they save together): rank 0's flag decides."""
    if accelerator.num_processes == 1:
        return flag
    from accelerate.utils import broadcast
    return bool(broadcast(torch.tensor([float(flag)], device=accelerator.device), from_process=0).item())


def run_summary(progress: Progress, cfg: TrainSettings, lengths) -> dict[str, float]:
    """Training figures every stage reports in metrics.json."""
    t = throughput(progress.examples, progress.real_tokens, progress.padded_tokens, progress.train_seconds)
    return {"best_step": progress.best_step, "steps": progress.step,
            "train_examples_per_s": t["examples_per_s"], "train_tokens_per_s": t["tokens_per_s"],
            "train_seconds": progress.train_seconds, "pad_fraction": t["pad_fraction"],
            "planned_pad_fraction": pad_fraction(lengths, epoch_plan(cfg, lengths, 0)),
            "peak_rss_mb": round(peak_rss_mb(), 1)}  # the process's, so it counts the final predictions too


def _tracker_config(cfg: TrainSettings) -> dict:
    """Hyperparameters for the trackers: flat scalars and strings only (TensorBoard's hparams refuse lists)."""
    from ..config import flatten
    return {k: v for k, v in flatten(cfg).items() if isinstance(v, (int, float, str, bool))}


def _is_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def _is_sharded(accelerator) -> bool:
    """DeepSpeed or FSDP: optimizer state (and under FSDP/ZeRO-3 the weights) split across processes."""
    from accelerate.utils import DistributedType
    return accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)


def _configure_deepspeed(accelerator, cfg: TrainSettings) -> None:
    """Under `accelerate launch` with a DeepSpeed config (configs/accelerate/deepspeed_zero*.yaml):
    the loop feeds batches itself (no DataLoader for accelerate to read a batch size from), and
    DeepSpeed must accumulate and clip exactly as the loop does, so say so in its config."""
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = cfg.batch_size
    ds["gradient_accumulation_steps"] = cfg.grad_accum
    ds["train_batch_size"] = cfg.batch_size * cfg.grad_accum * accelerator.num_processes
    ds["gradient_clipping"] = cfg.max_grad_norm or 0.0


def _truncate_metrics(path: Path, step: int, note=print) -> None:
    """On resume, drop lines logged after the checkpoint we resume from (and a torn
    last line: a crash mid-append)."""
    torn = truncate_jsonl(path, step)
    if torn:
        note(f"[resume] {torn}")
