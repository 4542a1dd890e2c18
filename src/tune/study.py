"""Run a sweep: storage, sampler, pruner, and the loop each worker runs.

(Over 400 lines: the slot accounting, heartbeat and interrupted-trial rules
below are one protocol between workers and are read together.)

One trial is one `train_pref` run (`run(cfg, trial_hook=...)`) in
`<out>/trials/<number>/`. After every eval the hook reports the validation
log loss to optuna; the pruner may stop the trial there.

How several workers share a study without duplicate or lost trials:

- Trial numbers come from the storage (RDB: assigned under a row lock on the
  study; journal: by the order of the append-only log), never from a worker.
- `n_trials` is the number of finished trials the study should hold, so
  re-running the same command resumes it. A worker claims a slot by asking
  for a trial, then checks that its trial is among the first `n_trials` that
  count; if not (another machine claimed the last slot a moment earlier) it
  records itself as a `surplus` failure and stops. On one machine a file lock
  around "count, ask" keeps even that from happening.
- Counted: complete, pruned, running, waiting, and trials that failed by
  themselves (exception, non-finite loss, out of memory: `fail_reason` says
  which). Not counted: trials interrupted by Ctrl-C / a killed worker
  (`interrupted`), and surplus claims. An interrupted trial's parameters are
  enqueued again (`requeued_from` names it), so the re-run tries the same point
  instead of a fresh draw from the sampler.
- A worker that dies leaves a RUNNING trial: on an RDB storage the heartbeat
  marks it failed after `GRACE_S`; any storage: the next worker started on
  the same host marks RUNNING trials of dead local processes as interrupted.
- Each trial's sampler is seeded from (seed, trial number): a sweep is
  reproducible, and workers started with the same command don't sample the
  same first points.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from ..config import run_config
from ..engine.rundir import RunDir
from ..errors import UsageError
from .space import SweepSpec

HEARTBEAT_S = 30  # RDB storages: a running trial pings the storage this often
GRACE_S = 180     # ...and is declared dead (failed) after this long without a ping
SQLITE_TIMEOUT_S = 120  # how long a SQLite writer waits for the file lock before failing


class TrialFailed(RuntimeError):
    """A trial that ended in a way optuna should record as failed."""


# ----------------------------------------------------------------------------- storage


def study_dir(spec: SweepSpec) -> Path:
    return Path(spec.study.out or Path("sweeps") / spec.study.name)


def storage_url(spec: SweepSpec) -> str:
    if spec.study.storage:
        return spec.study.storage
    return f"sqlite:///{(study_dir(spec) / 'study.db').resolve()}"


def display_url(url: str) -> str:
    """The URL without its password (for logs)."""
    if url.startswith("journal:"):
        return url
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only cosmetic
        return url


def make_storage(url: str):
    """optuna storage for a URL: SQLAlchemy URLs -> RDBStorage (with heartbeat),
    journal:<path> -> JournalStorage over an append-only file."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        path = url[len("journal:"):]
        path = path[2:] if path.startswith("//") else path  # journal:///abs/path or journal:rel/path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    if url.startswith("sqlite:"):
        db = url.split(":///", 1)[-1]
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    with _quiet_experimental():
        for attempt in range(3):  # two processes creating the tables at once: one retries
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                  heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
            except Exception:  # noqa: BLE001
                if attempt == 2:
                    raise
                time.sleep(1 + attempt)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _quiet_experimental():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


# ----------------------------------------------------------------------------- sampler / pruner


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Wraps a sampler, re-creating it for every trial with a seed mixed from
    (seed, trial number): reproducible, and different for every trial even when
    several workers start from the same seed."""

    def __init__(self, seed: int, make: Callable[[int], optuna.samplers.BaseSampler]):
        self.seed, self._make = seed, make
        self._inner = make(seed)

    def before_trial(self, study, trial) -> None:
        self._inner = self._make((self.seed * 1_000_003 + trial.number) % 2**32)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    n = spec.study.n_startup_trials

    def tpe(seed: int) -> optuna.samplers.BaseSampler:
        with _quiet_experimental():
            # constant_liar: running trials count as bad guesses, so parallel workers spread out
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n, constant_liar=True)
    return TrialSeededSampler(spec.study.seed, tpe)


def make_pruner(spec: SweepSpec) -> optuna.pruners.BasePruner:
    kind, args = spec.study.pruner, dict(spec.study.pruner_args)
    if kind == "median":
        return optuna.pruners.MedianPruner(**{"n_startup_trials": 2, "n_warmup_steps": 0, **args})
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(**{"min_resource": 1, "max_resource": "auto",
                                                 "reduction_factor": 3, **args})
    return optuna.pruners.NopPruner()


# ----------------------------------------------------------------------------- study


def open_study(spec: SweepSpec, storage=None, *, create: bool = True) -> optuna.Study:
    """Load the study, creating it (and enqueueing the baseline) if it is new."""
    storage = storage if storage is not None else make_storage(storage_url(spec))
    kw = dict(study_name=spec.study.name, storage=storage, sampler=make_sampler(spec), pruner=make_pruner(spec))
    if not create:
        return optuna.load_study(**kw)
    try:
        study = optuna.create_study(direction="minimize", **kw)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(**kw)
        if study.direction != optuna.study.StudyDirection.MINIMIZE:
            raise ValueError(f"study '{spec.study.name}' exists and maximises: use another --study-name")
        stored = study.user_attrs.get("sweep", {})
        if stored and (stored.get("space"), stored.get("fixed"), stored.get("base")) != \
                (spec.describe()["space"], spec.fixed, spec.base):
            print(f"[sweep] warning: study '{spec.study.name}' was created from a different sweep file "
                  f"({stored.get('source')}); its earlier trials may not be comparable", file=sys.stderr)
        return study
    study.set_user_attr("sweep", spec.describe())
    study.set_user_attr("metric", spec.study.metric)
    if spec.study.enqueue_base:
        base = spec.baseline_params()
        outside = [f"{p.name}={base[p.name]!r}" for p in spec.space if not p.contains(base[p.name])]
        if outside:
            print(f"[sweep] baseline not enqueued: base value(s) outside the space: {', '.join(outside)}")
        else:
            study.enqueue_trial(base, user_attrs={"baseline": True})
    return study


def counts_toward_total(t: optuna.trial.FrozenTrial) -> bool:
    """Does this trial use one of the study's n_trials slots?"""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING):
        return True
    a = t.user_attrs
    return t.state == TrialState.FAIL and "fail_reason" in a and not a.get("interrupted") and not a.get("surplus")


def tally(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    out = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    out["counted"] = sum(map(counts_toward_total, trials))
    out["finished"] = out["complete"] + out["pruned"] + sum(
        t.state == TrialState.FAIL and counts_toward_total(t) for t in trials)
    return out


def _process_start(pid: int) -> str | None:
    """The process's start time (Linux /proc): tells a live worker from a recycled pid."""
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2:].split()[19]
    return None


def _process_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _process_start(pid)
    return start is None or now is None or now == start


def reap_dead_local_trials(study: optuna.Study, storage) -> list[int]:
    """RUNNING trials whose worker process on this host is gone -> FAIL (interrupted)."""
    host, reaped = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or not isinstance(pid, int) or \
                _process_alive(pid, t.user_attrs.get("pid_start")):
            continue
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_user_attr(t._trial_id, "fail_reason", f"interrupted: worker pid {pid} on {host} is gone")
            storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            reaped.append(t.number)
            requeue(study, t.number, t.params)
    if reaped:
        print(f"[sweep] trial(s) {reaped} had lost their worker: marked failed (interrupted), not counted, "
              "parameters re-queued")
    return reaped


def requeue(study: optuna.Study, number: int, params: dict) -> None:
    """Enqueue an interrupted trial's parameters once more: the point was chosen by the
    sampler for a reason, and a Ctrl-C or a preempted worker says nothing about it."""
    if not params or any(t.user_attrs.get("requeued_from") == number for t in study.get_trials(deepcopy=False)):
        return
    study.enqueue_trial(params, user_attrs={"requeued_from": number})


def requeued_as(study: optuna.Study) -> dict[int, int]:
    """interrupted trial number -> the number of the trial that re-runs its parameters."""
    return {t.user_attrs["requeued_from"]: t.number for t in study.get_trials(deepcopy=False)
            if "requeued_from" in t.user_attrs}


class _QuietInterrupt(logging.Filter):
    """optuna logs a Ctrl-C as 'Trial N failed ... KeyboardInterrupt' with a traceback;
    the sweep prints its own one line for it, so drop optuna's."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "KeyboardInterrupt" not in record.getMessage() and not (
            record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


def trim_checkpoints(study: optuna.Study, spec: SweepSpec) -> list[int]:
    """Finished trials keep no checkpoint/ (complete ones only with keep_checkpoints),
    including trials whose worker was killed before it could clean up (kill -9, a lost
    host): their checkpoints are GBs a re-run never reads."""
    trimmed = []
    for t in study.get_trials(deepcopy=False):
        if not t.state.is_finished() or (t.state == TrialState.COMPLETE and spec.study.keep_checkpoints):
            continue
        ckpt = RunDir(t.user_attrs.get("run_dir", "")).checkpoint
        if t.user_attrs.get("run_dir") and ckpt.is_dir():
            shutil.rmtree(ckpt, ignore_errors=True)
            trimmed.append(t.number)
    return trimmed


class ClaimLock:
    """flock on <out>/.claim.lock: on one machine, "count slots, ask for a trial" is atomic."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self._fd = path, None

    def acquire(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# ----------------------------------------------------------------------------- one trial


class PruningHook:
    """`trial_hook(step, metrics)` for train_pref's loop: reports the metric to
    optuna on a grid of `per_epoch` steps per epoch, then asks the pruner.
    Pruning step k holds the first eval at or after k/per_epoch epochs of data,
    so trials with different batch sizes (different optimizer steps per epoch)
    are compared at the same amount of training."""

    def __init__(self, trial: optuna.Trial, metric: str, per_epoch: int, epochs: float = math.inf):
        self.trial, self.metric, self.per_epoch, self.epochs = trial, metric, per_epoch, epochs
        self.last = 0

    def __call__(self, step: int, metrics: dict) -> None:
        value = float(metrics[self.metric])
        if not math.isfinite(value):
            raise TrialFailed(f"non-finite {self.metric} ({value}) at optimizer step {step}")
        epoch = float(metrics.get("epoch", 0.0))
        grid = int(math.floor(epoch * self.per_epoch + 1e-6))
        for k in range(self.last + 1, grid + 1):  # grid points passed since the last eval
            self.trial.report(value, k)
        self.last = max(self.last, grid)
        finished = epoch >= self.epochs - 1e-6  # the last eval: training is over, pruning saves nothing
        if grid >= 1 and not finished and self.trial.should_prune():
            where = {"pruning_step": grid, "epoch": epoch, "optimizer_step": step, self.metric: value}
            self.trial.set_user_attr("pruned_at", where)
            raise optuna.TrialPruned(f"{self.metric} {value:.4f} at epoch {epoch:.2f} (step {step})")


def describe_error(e: BaseException) -> str:
    name = type(e).__name__
    text = str(e).strip() or repr(e)
    if name == "OutOfMemoryError" or isinstance(e, MemoryError) or "out of memory" in text.lower():
        kind = "out of memory"
    elif name == "NonFiniteLossError" or "non-finite" in text:
        kind = "non-finite loss"
    elif isinstance(e, TrialFailed):
        kind = "failed"
    else:
        kind = "exception"
    return f"{kind}: {name}: {text}"[:2000]


def import_objective(path: str) -> Callable[..., dict]:
    module, _, func = path.partition(":")
    return getattr(importlib.import_module(module), func)


def free_memory() -> None:
    """After a trial (optuna's gc_after_trial has collected the model): give cached GPU memory back."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class TrialObjective:
    """What optuna calls for each trial: sample -> PrefConfig -> run -> value."""

    def __init__(self, spec: SweepSpec, run_fn: Callable[..., dict], *, n_trials: int,
                 on_start: Callable[[], None] = lambda: None, worker: int = 0):
        self.spec, self.run_fn, self.n_trials, self.on_start, self.worker = spec, run_fn, n_trials, on_start, worker
        self.stop = False  # set when the study turned out to be full
        self.current: tuple[int, dict] | None = None  # (trial number, params) of the trial in progress

    def _claim_is_surplus(self, trial: optuna.Trial) -> bool:
        counted = sorted(t.number for t in trial.study.get_trials(deepcopy=False)
                         if counts_toward_total(t) or t.number == trial.number)
        return counted.index(trial.number) >= self.n_trials

    def __call__(self, trial: optuna.Trial) -> float:
        self.on_start()  # the trial exists in the storage now: other local workers may go on
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("pid_start", _process_start(os.getpid()))
        trial.set_user_attr("worker", self.worker)
        torch = sys.modules.get("torch")
        if torch is not None:  # the thread count can change float sums in the last bits
            trial.set_user_attr("torch_threads", torch.get_num_threads())
        if self._claim_is_surplus(trial):
            self.stop = True
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("fail_reason", f"surplus: the study already had {self.n_trials} trials "
                                               "when this one was claimed (another worker was faster)")
            raise TrialFailed("surplus claim: the study is full")
        params = {p.name: p.suggest(trial) for p in self.spec.space}
        self.current = (trial.number, params)
        run_dir = study_dir(self.spec) / "trials" / f"{trial.number:04d}"
        if run_dir.exists():  # left over from an earlier study of the same name: start clean
            shutil.rmtree(run_dir)
        cfg = self.spec.trial_config(params, run_dir)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("config", run_config(cfg))  # as config.yaml and best_config.yaml hold it
        trial.set_user_attr("lr_effective", cfg.lr)
        print(f"[sweep] trial {trial.number} (worker {self.worker}): "
              + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
              + (f" -> lr {cfg.lr:.3g}" if cfg.lr != params.get("lr", cfg.lr) else ""), flush=True)
        hook = PruningHook(trial, self.spec.study.metric, self.spec.study.reports_per_epoch, epochs=cfg.epochs)
        t0, ok, exited = time.perf_counter(), False, False
        try:
            metrics = self.run_fn(cfg, trial_hook=hook)
            ok = True
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            self._fail(trial, "interrupted: KeyboardInterrupt", interrupted=True)
            raise
        except UsageError as e:  # bad input for this trial's config: a failed trial, not a dead worker
            self._fail(trial, f"bad input: {e}")
            raise TrialFailed(f"bad input: {e}") from None
        except SystemExit as e:  # library code never exits: a bug, so stop the worker, but say why
            self._fail(trial, f"exit: SystemExit: {e.code} (library code should raise UsageError)")
            exited = True
            raise
        except Exception as e:
            self._fail(trial, describe_error(e))
            raise
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
            if not (ok and self.spec.study.keep_checkpoints):
                shutil.rmtree(RunDir(run_dir).checkpoint, ignore_errors=True)
            if exited:  # optuna leaves a trial RUNNING on SystemExit
                with contextlib.suppress(Exception):
                    trial.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        value = metrics.get(self.spec.study.metric)
        if value is None:
            reason = f"failed: the run returned no {self.spec.study.metric} (got {sorted(metrics)})"
            self._fail(trial, reason)
            raise TrialFailed(reason)
        value = float(value)
        if not math.isfinite(value):
            reason = f"non-finite loss: final {self.spec.study.metric} is {value}"
            self._fail(trial, reason)
            raise TrialFailed(reason)
        trial.set_user_attr("metrics", {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        return value

    @staticmethod
    def _fail(trial: optuna.Trial, reason: str, interrupted: bool = False) -> None:
        with contextlib.suppress(Exception):  # recording the reason must never hide the error itself
            trial.set_user_attr("fail_reason", reason)
            if interrupted:
                trial.set_user_attr("interrupted", True)


# ----------------------------------------------------------------------------- workers


def work(spec: SweepSpec, *, worker: int = 0, storage=None, run_fn: Callable[..., dict] | None = None) -> dict:
    """One worker: run trials until the study holds n_trials (or timeout). Returns the tally."""
    storage = storage if storage is not None else make_storage(storage_url(spec))
    study = open_study(spec, storage)
    run_fn = run_fn or import_objective(spec.study.objective)
    claim = ClaimLock(study_dir(spec) / ".claim.lock")
    reap_dead_local_trials(study, storage)
    trim_checkpoints(study, spec)
    optuna.logging.set_verbosity(optuna.logging.INFO)
    trial_log = logging.getLogger("optuna.study._optimize")  # where optuna logs a failed trial
    if not any(isinstance(f, _QuietInterrupt) for f in trial_log.filters):
        trial_log.addFilter(_QuietInterrupt())
    start, n = time.monotonic(), spec.study.n_trials
    while True:
        if spec.study.timeout and time.monotonic() - start >= spec.study.timeout:
            print(f"[sweep] worker {worker}: timeout ({spec.study.timeout:g} s): no new trials")
            break
        objective = TrialObjective(spec, run_fn, n_trials=n, on_start=claim.release, worker=worker)
        claim.acquire()
        try:
            t = tally(study)
            if t["counted"] - t["waiting"] >= n:  # enqueued (waiting) trials still need a worker
                break
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
        except KeyboardInterrupt:
            # here, not inside the trial: the interrupt may land anywhere (a storage write, the
            # pruning hook), and the trial's own fail_reason may not have been recorded
            if objective.current is not None:
                requeue(study, *objective.current)
            raise
        finally:
            claim.release()
            free_memory()
        if objective.stop:
            break
    return tally(study)


STORAGE_ENV = "PREFPIPE_SWEEP_STORAGE"  # how a spawned worker gets --storage: never on argv (ps shows argv)


def launch_workers(spec: SweepSpec, workers: int, extra_args: list[str], storage: str | None = None) -> int:
    """Start `workers` processes of `python -m src.sweep` on this machine; wait for all.
    `storage` (a URL that may hold a password) goes to them in the environment."""
    if not spec.source or not Path(spec.source).exists():
        raise ValueError("--workers needs a sweep YAML file (--config)")
    cpus = os.cpu_count() or 1
    gpus = 0
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        with contextlib.suppress(Exception):
            import torch
            gpus = torch.cuda.device_count()
    procs = []
    for i in range(workers):
        env = dict(os.environ)
        threads = str(max(1, cpus // workers))  # don't oversubscribe the CPU cores
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        if storage:
            env[STORAGE_ENV] = storage
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)  # one GPU per worker, round robin
        cmd = [sys.executable, "-m", "src.sweep", "--config", spec.source, *extra_args,
               "--workers", "1", "--worker-index", str(i), "--no-report"]
        procs.append(subprocess.Popen(cmd, env=env))
    rcs = []
    try:
        rcs = [p.wait() for p in procs]
    except KeyboardInterrupt:  # the workers got the same SIGINT: let them record their trials
        rcs = [p.wait() for p in procs]
        raise
    bad = [(i, rc) for i, rc in enumerate(rcs) if rc != 0]
    for i, rc in bad:
        print(f"[sweep] worker {i} exited with status {rc}", file=sys.stderr)
    return 1 if bad else 0
