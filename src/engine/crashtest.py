"""Kill a real training process and check that `--resume` ends exactly where an
uninterrupted run ends: the harness behind tests/test_fault_injection.py and
scripts/fault_inject.py.

The process trains a small dropout MLP through the real engine loop (`engine.loop.train`:
its checkpoints, periodic saves, evals, best folder and metrics.jsonl), so every byte a
crash can damage is written by the code a real run uses; only the model is tiny. Each
trial runs in a child process that is killed with SIGKILL, either by itself at a named
point (`engine.faults`, exact: mid checkpoint write, between a swap's renames, mid
metrics line) or by the parent after a random delay, then a second child resumes it to
the end. Children are forked from a server that imported torch once (multiprocessing's
forkserver), so a trial costs a fraction of a second instead of a fresh interpreter's
import time; each child is still its own process, killed for real.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm as _tqdm

from ..errors import UsageError
from . import faults
from .checkpoint import best_dir, has_resume_state, last_dir, load_resume_state, save_weights
from .loop import TaskBase
from .rundir import RunDir
from .settings import TrainSettings

# tqdm's default lock is a multiprocessing semaphore. Shared by the children of the fork server,
# a child killed with SIGKILL while holding it deadlocks every later child (seen: a CI run hung
# in tqdm.__new__); one per child leaks a semaphore per kill. The trial children draw bars from
# one thread each, so a plain per-process thread lock is all tqdm needs here.
_tqdm.set_lock(threading.RLock())

ROWS, BATCH, EPOCHS, EVAL_EVERY, SAVE_EVERY = 64, 8, 3, 5, 3


class ToyRegression(TaskBase):
    """A noisy linear target; the model has dropout, so an exact resume needs the RNG state too."""
    monitor, monitor_mode = "val_mse", "min"

    def __init__(self, n: int = ROWS):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.3 * torch.randn(n, generator=g)
        self.vx = torch.randn(16, 4, generator=g)
        self.vy = self.vx @ torch.tensor([1.0, -2.0, 0.5, 3.0])

    def lengths(self):
        return [1] * len(self.x)

    def collate(self, idx):
        return {"x": self.x[idx], "y": self.y[idx]}

    def count(self, batch):
        return len(batch["y"])

    def loss(self, model, batch):
        err = ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).sum()
        return err, torch.tensor(float(len(batch["y"])))

    def stats(self, batch):
        return len(batch["y"]), len(batch["y"]), len(batch["y"])

    def evaluate(self, model, accelerator):
        return {"val_mse": float(((model(self.vx).squeeze(-1) - self.vy) ** 2).mean())}

    def save_best(self, model, folder: Path):
        save_weights(model, folder / "model.safetensors")
        with torch.inference_mode():
            preds = model.eval()(self.vx).squeeze(-1).tolist()
        model.train()
        (folder / "predictions.json").write_text(json.dumps(preds), encoding="utf-8")


def settings() -> TrainSettings:
    return TrainSettings(epochs=EPOCHS, batch_size=BATCH, lr=0.05, warmup_ratio=0.1, schedule="linear",
                         precision="fp32", device="cpu", progress=False, eval_every=EVAL_EVERY,
                         save_every_steps=SAVE_EVERY, num_threads=1)


def train_run(run_dir: str, resume: bool, fault: str = "", count_to: str = "") -> None:
    """The child's body: one invocation of the trainer (a fresh or a resumed run). With
    `count_to`, how often each fault point was passed is written there as JSON."""
    from .loop import make_accelerator, train
    log = os.open(f"{run_dir}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # RUN.log beside RUN
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ[faults.ENV] = fault
    os.environ["PREFPIPE_FSYNC"] = "0"  # a killed process loses nothing the OS holds: see checkpoint._durable
    faults.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
    cfg = settings()
    acc, _ = make_accelerator(cfg)
    train(cfg, ToyRegression(), model, Path(run_dir), acc, resume=resume)
    if count_to:
        Path(count_to).write_text(json.dumps(faults.passes()), encoding="utf-8")


def outcome(run_dir: str | os.PathLike) -> dict:
    """What must not depend on crashes: the eval log, the final and best weights, the best
    folder's predictions, the final training progress; plus what the checkpoint folder holds."""
    run_dir = Path(run_dir)
    def digest(p: Path) -> str | None:
        if not p.exists():
            return None
        h = hashlib.sha256()
        if p.suffix == ".safetensors":  # the tensors, not the file: its header's key order varies
            for k, v in sorted(load_file(str(p)).items()):
                h.update(k.encode() + v.numpy().tobytes())
        else:
            h.update(p.read_bytes())
        return h.hexdigest()[:16]
    metrics = RunDir(run_dir).metrics_log
    progress = None
    if has_resume_state(last_dir(run_dir)):
        progress = dict(load_resume_state(last_dir(run_dir))["progress"])
        progress.pop("train_seconds")  # wall time
        progress["log"] = {k: v for k, v in progress.get("log", {}).items() if k != "seconds"}
    wall = ("examples_per_s", "tokens_per_s")  # throughput in the train log lines: wall time too
    return {
        "metrics": [{k: v for k, v in json.loads(ln).items() if k not in wall} for ln in metrics.read_text().splitlines()]
        if metrics.exists() else None,
        "last_weights": digest(last_dir(run_dir) / "model.safetensors"),
        "best_weights": digest(best_dir(run_dir) / "model.safetensors"),
        "predictions": digest(best_dir(run_dir) / "predictions.json"),
        "progress": progress,
        "checkpoint_folder": sorted(p.name for p in RunDir(run_dir).checkpoint.iterdir())
        if RunDir(run_dir).checkpoint.exists() else None,
    }


@dataclass
class Trial:
    name: str
    killed: bool  # the first child died of SIGKILL (a random-time kill may land after the end)
    survived: bool  # the resumed run ended exactly as the uninterrupted one
    detail: str = ""


class Harness:
    def __init__(self, workdir: str | os.PathLike):
        self.workdir = Path(workdir)
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload([__name__, "src.engine.loop"])
        self.reference: dict | None = None
        self.reference_seconds = 0.0
        self.passes: dict[str, int] = {}  # how often the uninterrupted run passes each fault point

    def child(self, run_dir: Path, resume: bool, fault: str = "", kill_after: float | None = None,
              count_to: str = "") -> int:
        p = self.ctx.Process(target=train_run, args=(str(run_dir), resume, fault, count_to))
        p.start()
        p.join(kill_after)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
        p.join()
        return p.exitcode

    def run_reference(self) -> dict:
        run_dir = self.workdir / "reference"
        counts = self.workdir / "reference-passes.json"
        code = self.child(run_dir, resume=False, fault=faults.COUNT_ONLY, count_to=str(counts))
        if code != 0:
            raise RuntimeError(f"the uninterrupted run failed (exit code {code})")
        self.reference = outcome(run_dir)
        self.passes = json.loads(counts.read_text())
        # again, with the server warm: the duration random-time kills are drawn over, and a
        # check that an uninterrupted run is itself reproducible
        t0 = time.perf_counter()
        code = self.child(self.workdir / "reference-again", resume=False)
        self.reference_seconds = time.perf_counter() - t0
        again = outcome(self.workdir / "reference-again")
        if code != 0 or again != self.reference:
            raise RuntimeError(f"two uninterrupted runs differ (exit code {code}): no crash test can pass")
        return self.reference

    def trial(self, name: str, fault: str = "", kill_at: float | None = None, resume_fault: str = "") -> Trial:
        """Kill a run (at the fault point `fault`, or after `kill_at` times the reference run's
        duration), then resume it (the first resume killed again at `resume_fault` when given)
        until it ends; compare with the reference."""
        if self.reference is None:
            self.run_reference()
        kill_after = None if kill_at is None else kill_at * self.reference_seconds
        run_dir = self.workdir / name.replace(":", "-").replace(" ", "_")
        code = self.child(run_dir, resume=False, fault=fault, kill_after=kill_after)
        killed = code == -signal.SIGKILL
        if code not in (0, -signal.SIGKILL):
            return Trial(name, killed, False, f"first run exited {code}")
        if resume_fault and killed:
            code = self.child(run_dir, resume=True, fault=resume_fault)
            if code not in (0, -signal.SIGKILL):
                return Trial(name, killed, False, f"killed resume exited {code}")
        code = self.child(run_dir, resume=True)
        if code != 0:
            return Trial(name, killed, False, f"resume exited {code}")
        got = outcome(run_dir)
        diff = [k for k in got if got[k] != self.reference[k]]
        return Trial(name, killed, not diff, "differs: " + ", ".join(diff) if diff else "")


SEED_ENV = "FAULT_SEED"


def harness_seed(default: int = 0) -> int:
    """The seed that picks kill points: pinned (`default`) so a failure reproduces on the next
    run, varied on purpose with FAULT_SEED=N (the test and scripts/fault_inject.py both read it)."""
    raw = os.environ.get(SEED_ENV, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"{SEED_ENV} must be an integer seed, got {raw!r}") from None


def kill_points(passes: dict[str, int], n: int, seed: int = 0, random_share: float = 0.2
                ) -> list[tuple[str, str, float | None]]:
    """`n` trials (name, fault spec, kill time as a fraction of a run): named points at
    passes drawn over the whole run, round-robin over the points so that a small `n` still
    covers each kind of crash, and about `random_share` of them at random times."""
    rng = random.Random(seed)
    n_random = round(n * random_share) if n > 2 else 0
    pools = {p: rng.sample(range(1, m + 1), m) for p, m in sorted(passes.items()) if m}
    order: list[tuple[str, int]] = []
    while len(order) < n - n_random and any(pools.values()):
        for p in pools:
            if pools[p] and len(order) < n - n_random:
                order.append((p, pools[p].pop()))
    out: list[tuple[str, str, float | None]] = [(f"{p}:{k}", f"{p}:{k}", None) for p, k in order]
    out += [(f"random-time {i + 1}", "", rng.uniform(0.05, 0.95)) for i in range(n - len(out))]
    return out
