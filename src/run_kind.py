"""What kind of run a folder holds, so that a run of the wrong kind given to `generate`,
`predict` or `export` is refused in one line that names what it is (`generate --run
<classifier run>` used to end in "You need to have sentencepiece or tiktoken installed").

Both stages call it on their refusal path, so it imports neither: it reads each stage's
checkpoint marker (pref: weights + config in checkpoint/best; gen: its meta file), whose
names the run-dir layout owner (engine/rundir.py) holds.
"""
from __future__ import annotations

import os
from pathlib import Path

from .engine.rundir import BEST, BEST_PATH, CONFIG, GEN_CHECKPOINT_META, WEIGHTS, RunDir

CLASSIFIER = "a classifier run (python -m src.train_pref; predict with python -m src.predict --run, export with python -m src.export --run)"
KFOLD = "a K-fold classifier run dir (python -m src.train_pref --folds K; predict with python -m src.predict --run)"
GENERATIVE = "a generative run (python -m src.train_gen; sample from it with python -m src.generate --run)"
SWEEP = "a sweep folder (python -m src.sweep; its trials are runs under trials/<n>/, best_config.yaml trains the winner)"
UNFINISHED = "a run dir without a finished checkpoint (no checkpoint/best yet: --resume it, or wait for its first eval)"


def _classifier_checkpoint(folder: Path) -> bool:
    """pref/checkpoint.py's best-checkpoint marker: weights and the run config side by side."""
    return (folder / WEIGHTS).is_file() and (folder / CONFIG).is_file()


def _is_classifier(p: Path) -> bool:  # a run dir, its checkpoint/, or checkpoint/best (pref's `locate`)
    return any(_classifier_checkpoint(d) for d in (p / BEST_PATH, p / BEST, p))


def _is_generative(p: Path) -> bool:  # a run dir or its checkpoint (gen's `find_checkpoint`)
    return any((d / GEN_CHECKPOINT_META).is_file() for d in (p, p / BEST_PATH))


def run_kind(path: str | os.PathLike) -> str | None:
    """One of the descriptions above, or None for a folder that is none of them (an HF model
    folder, an empty or missing path). It reads the markers the layout owner names
    (engine/rundir.py) instead of importing either stage: both stages call it."""
    p = Path(path)
    if not p.is_dir():
        return None
    if _is_classifier(p):
        return CLASSIFIER
    if _is_generative(p):
        return GENERATIVE
    if any(_is_classifier(d) for d in p.glob("fold*") if d.is_dir()):
        return KFOLD
    if (p / "study.db").exists() or (p / "trials").is_dir():
        return SWEEP
    rd = RunDir(p)
    if rd.config.exists() and rd.metrics_log.exists():
        return UNFINISHED
    return None


def wrong_kind(path: str | os.PathLike, wanted: str, kind: str | None = None) -> str | None:
    """`path: it is <kind>, not <wanted>` when the folder is a known kind, else None."""
    kind = kind if kind is not None else run_kind(path)
    return None if kind is None else f"{path} is {kind}, not {wanted}"
