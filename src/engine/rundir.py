"""The run directory: the one module that spells the name of every file a run writes.

    RUN/
      config.yaml            the resolved config (rerun or resume with --config it)
      data_report.json       what the reader made of the data (rows, quarantine, label counts)
      prior.json             class prior of the training rows (classifier)
      metrics.jsonl          one line per log/eval step (rewound on --resume)
      metrics.json           final metrics
      val_predictions.csv    validation rows predicted by checkpoint/best (classifier)
      oof_predictions.csv    out-of-fold predictions of a K-fold run (classifier)
      initial_eval.json  samples.jsonl  val_losses.csv  data/  base/   generative runs
      plots/                 loss curves, reliability, confusion matrix, perplexity
      checkpoint/best/       what prediction / generation needs (the stage's save_best)
      checkpoint/last/       what --resume needs (training_state.pt + weights; the engine's)
      fold<k>/               one run dir per fold (--folds K --fold -1)

Stages ask a `RunDir` for paths instead of joining strings, so a file is renamed here
once. `RunDir.start` owns the states of a folder when a run begins: a new run into a
folder that already holds one is refused unless asked to overwrite, `--resume` needs
something to resume, and a run that fails before training starts leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import UsageError

CONFIG = "config.yaml"
DATA_REPORT = "data_report.json"
PRIOR = "prior.json"
METRICS_LOG = "metrics.jsonl"
METRICS = "metrics.json"
VAL_PREDICTIONS = "val_predictions.csv"
OOF_PREDICTIONS = "oof_predictions.csv"
INITIAL_EVAL = "initial_eval.json"
SAMPLES = "samples.jsonl"
VAL_LOSSES = "val_losses.csv"
GEN_CHECKPOINT_META = "gen_checkpoint.json"  # marks a generative checkpoint folder (gen/checkpoint.py writes it)
WEIGHTS = "model.safetensors"  # a classifier checkpoint's weights (pref/checkpoint.py)
RESUME_STATE = "training_state.pt"
# the folder under last/ that holds accelerate's save_state (every rank's shards) under DeepSpeed/FSDP
SHARDED_STATE = "sharded"
CHECKPOINT, BEST, LAST, PLOTS = "checkpoint", "best", "last", "plots"
BEST_PATH = Path(CHECKPOINT) / BEST  # relative: a run dir's best checkpoint
# What a finished or started run leaves at the top of its folder: the marks of "a run lives here"
# (used to refuse silent overwrites) and what --overwrite removes (nothing else is touched).
RUN_FILES = (CONFIG, DATA_REPORT, PRIOR, METRICS_LOG, METRICS, VAL_PREDICTIONS, OOF_PREDICTIONS,
             INITIAL_EVAL, SAMPLES, VAL_LOSSES)
RUN_FOLDERS = (CHECKPOINT, PLOTS)


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    def __truediv__(self, name: str) -> Path:  # a stage's own extra file (e.g. the teacher cache)
        return self.root / name

    # --- files ---------------------------------------------------------------------------
    config = property(lambda self: self.root / CONFIG)
    data_report = property(lambda self: self.root / DATA_REPORT)
    prior = property(lambda self: self.root / PRIOR)
    metrics_log = property(lambda self: self.root / METRICS_LOG)
    metrics = property(lambda self: self.root / METRICS)
    val_predictions = property(lambda self: self.root / VAL_PREDICTIONS)
    oof_predictions = property(lambda self: self.root / OOF_PREDICTIONS)
    initial_eval = property(lambda self: self.root / INITIAL_EVAL)
    samples = property(lambda self: self.root / SAMPLES)
    val_losses = property(lambda self: self.root / VAL_LOSSES)
    data = property(lambda self: self.root / "data")  # a generative run's prepared data
    base = property(lambda self: self.root / "base")  # a tiny LoRA base no hub has
    merged = property(lambda self: self.root / "merged")  # --merge output
    plots = property(lambda self: self.root / PLOTS)
    checkpoint = property(lambda self: self.root / CHECKPOINT)
    best = property(lambda self: self.root / BEST_PATH)
    last = property(lambda self: self.root / CHECKPOINT / LAST)

    def plot(self, name: str) -> Path:
        return self.plots / name

    def predictions(self) -> tuple[Path, Path]:
        """Where a run's held-out predictions are, in the order to prefer them: a K-fold run
        dir's out-of-fold file, then a hold-out run's validation file."""
        return self.oof_predictions, self.val_predictions

    def fold(self, k: int) -> "RunDir":
        return RunDir(self.root / f"fold{k}")

    def folds(self) -> list["RunDir"]:
        found = [d for d in self.root.glob("fold*") if d.is_dir() and d.name[4:].isdigit()]
        return [RunDir(d) for d in sorted(found, key=lambda d: int(d.name[4:]))]

    # --- states --------------------------------------------------------------------------
    def holds_run(self) -> bool:
        """A run (finished, stopped or crashed) lives here."""
        return (any((self.root / n).exists() for n in RUN_FILES + RUN_FOLDERS)
                or any(f.holds_run() for f in self.folds()))

    def has_resume_state(self) -> bool:
        """A complete checkpoint/last (read-only: a crash cut between two renames counts too)."""
        from ..files import complete_dir
        folder = complete_dir(self.last)
        return folder is not None and (folder / RESUME_STATE).exists()

    def resumable(self) -> bool:
        """Something --resume can continue: this run's checkpoint, or a K-fold run's folds."""
        return self.has_resume_state() or any(f.resumable() or f.metrics.exists() for f in self.folds())

    def clear(self) -> None:
        """Remove the files a run writes (for --overwrite); anything else in the folder stays."""
        for name in RUN_FILES:
            (self.root / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(self.root / name, ignore_errors=True)
        for f in self.folds():
            shutil.rmtree(f.root, ignore_errors=True)

    @contextlib.contextmanager
    def start(self, *, resume: bool, overwrite: bool = False, continuing: bool = False) -> Iterator["Start"]:
        """Check the folder's state for this invocation, then run the block. `continuing`: a
        later part of a run in parts (it continues without --resume). When the block fails
        before `started.begun()` (bad data, a model that does not load), what it created is
        removed, so a failed start leaves the folder as it found it (none, when there was none).
        Under torchrun / accelerate launch only the main process checks and cleans up (the other
        ranks write nothing before training starts, so they cannot make it see a run)."""
        if not is_main_process():
            yield Start()
            return
        if resume and not self.resumable():
            raise UsageError(f"{self.root}: nothing to resume (no complete {LAST_REL} here); "
                             "start the run without --resume")
        if not resume and not continuing and self.holds_run():
            if not overwrite:
                raise UsageError(f"{self.root} already holds a run ({self._evidence()}); continue it with "
                                 "--resume, replace it with --overwrite, or choose another --out")
            self.clear()
        before = set(self.root.iterdir()) if self.root.is_dir() else None
        started = Start()
        try:
            yield started
        except BaseException:
            if not started.is_begun and not resume and not continuing:
                self._undo(before)
            raise

    def _evidence(self) -> str:
        for name in (CONFIG, METRICS, CHECKPOINT):
            if (self.root / name).exists():
                return f"{name} exists"
        return "run files exist"

    def _undo(self, before: set[Path] | None) -> None:
        if before is None:
            shutil.rmtree(self.root, ignore_errors=True)
            return
        for p in set(self.root.iterdir()) - before if self.root.is_dir() else ():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


LAST_REL = f"{CHECKPOINT}/{LAST}"


def is_main_process() -> bool:
    """Rank 0 of a launched job (torchrun / accelerate launch set RANK), or a plain process.
    Read from the environment: the folder's state is settled before any Accelerator exists."""
    return os.environ.get("RANK", "0") == "0"


class Start:
    """Handed out by `RunDir.start`: call `begun()` once training starts, after which a
    failure keeps the folder (it holds what --resume needs)."""
    is_begun = False

    def begun(self) -> None:
        self.is_begun = True
