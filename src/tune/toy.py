"""A seconds-fast stand-in for `src.pref.train.run`, for tests and for trying
a sweep setup (storage, workers, pruner) before spending real training time:

    study: {objective: "src.tune.toy:run"}

It walks through the same evals a real run would (eval_every optimizer steps,
plus each epoch end; steps from demo_rows/max_rows, val_frac, batch_size and
grad_accum), calls `trial_hook(step, metrics)` after each, and writes
metrics.jsonl / metrics.json in cfg.out. The validation loss is a
deterministic function of the config: best near lr 1e-4, worse with more head
dropout or cls pooling; lr >= 1 diverges (rises). Failure injection through
`model`: "toy-error" raises, "toy-nan" raises NonFiniteLossError,
"toy-oom" raises an out-of-memory error, "toy-usage" raises UsageError (bad
input, as library code reports it: a failed trial, the study goes on), "toy-exit"
raises SystemExit (a library bug: the trial is recorded failed, the worker stops).
TOY_SECONDS_PER_EVAL (env, default 0) sleeps at each eval, so concurrent
workers overlap in tests.
"""
from __future__ import annotations

import json
import math
import os
import time

from ..config import save_yaml
from ..engine.rundir import RunDir
from ..errors import UsageError
from ..files import write_json
from ..pref.config import PrefConfig


def final_loss(cfg: PrefConfig) -> float:
    if cfg.lr >= 1.0:
        return float("inf")
    x = math.log10(cfg.lr) + 4.0  # 0 at lr = 1e-4
    return 0.55 + 0.08 * x * x + 0.2 * cfg.head_dropout + (0.03 if cfg.pooling == "cls" else 0.0) \
        - (0.02 if cfg.style_features else 0.0) + 0.01 * cfg.warmup_ratio


def loss_at(cfg: PrefConfig, epoch: float) -> float:
    start = 1.1
    if cfg.lr >= 1.0:
        return start + 0.5 * epoch  # diverging: gets worse the longer it runs
    floor = final_loss(cfg)
    return floor + (start - floor) * math.exp(-3.0 * epoch / max(cfg.epochs, 1e-9))


def task_figures(cfg: PrefConfig, loss: float) -> dict:
    """The eval keys a real run of cfg.task reports beside val_log_loss (src/pref/task.py):
    for binary, a binary log loss and error that differ from val_log_loss (ties are not
    scored), so a test can tell which metric a sweep minimised."""
    if cfg.task != "binary":
        return {}
    return {"val_binary_log_loss": 0.8 * loss - 0.1, "val_binary_error": min(0.5, 0.3 * loss)}


def run(cfg: PrefConfig, *, resume: bool = False, trial_hook=None) -> dict:
    rd = RunDir(cfg.out or "runs/toy")
    rd.root.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, rd.config, header="# toy objective (src/tune/toy.py)")
    if cfg.model == "toy-error":
        raise ValueError("toy: injected failure")
    if cfg.model == "toy-usage":
        raise UsageError("toy: injected bad input")
    if cfg.model == "toy-exit":
        raise SystemExit("toy: injected SystemExit (library code must raise UsageError instead)")
    if cfg.model == "toy-oom":
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (toy: injected)")
    rows = cfg.max_rows or cfg.demo_rows
    n_train = max(1, round(rows * (1 - cfg.val_frac)))
    per_epoch, total = cfg.optimizer_steps(math.ceil(n_train / cfg.batch_size))
    sleep = float(os.environ.get("TOY_SECONDS_PER_EVAL", "0"))
    metrics_path = rd.metrics_log
    metrics_path.unlink(missing_ok=True)
    best = None
    for step in range(1, total + 1):
        if cfg.model == "toy-nan" and step == 2:
            from ..engine.loop import NonFiniteLossError  # (imports torch: only when needed)
            raise NonFiniteLossError(f"{cfg.max_bad_steps} non-finite steps: stopping (toy: injected)")
        if not (step % per_epoch == 0 or step == total or (cfg.eval_every and step % cfg.eval_every == 0)):
            continue
        epoch = round(step / per_epoch, 4)
        m = {"step": step, "epoch": epoch, "val_log_loss": loss_at(cfg, epoch)}
        m.update(task_figures(cfg, m["val_log_loss"]))
        best = m["val_log_loss"] if best is None else min(best, m["val_log_loss"])
        with open(metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(m) + "\n")
        if sleep:
            time.sleep(sleep)
        if trial_hook is not None:
            trial_hook(step, m)
    final = {"val_log_loss": best, **task_figures(cfg, best), "steps": total, "n_train": n_train}
    write_json(rd.metrics, final)
    return final
