"""What kind of run a folder holds, so that a run of the wrong kind given to `generate`,
`predict` or `export` is refused in one line that names what it is (`generate --run
<classifier run>` used to end in "You need to have sentencepiece or tiktoken installed").

It sits above both stages and reads each stage's own marker (pref's best checkpoint
layout, gen's checkpoint meta file) lazily, on the refusal path only, so neither stage
imports the other.
"""
from __future__ import annotations

import os
from pathlib import Path

CLASSIFIER = "a classifier run (python -m src.train_pref; predict with python -m src.predict --run, export with python -m src.export --run)"
KFOLD = "a K-fold classifier run dir (python -m src.train_pref --folds K; predict with python -m src.predict --run)"
GENERATIVE = "a generative run (python -m src.train_gen; sample from it with python -m src.generate --run)"
SWEEP = "a sweep folder (python -m src.sweep; its trials are runs under trials/<n>/, best_config.yaml trains the winner)"
UNFINISHED = "a run dir without a finished checkpoint (no checkpoint/best yet: --resume it, or wait for its first eval)"


def run_kind(path: str | os.PathLike) -> str | None:
    """One of the descriptions above, or None for a folder that is none of them (an HF model
    folder, an empty or missing path)."""
    from .gen.checkpoint import find_checkpoint
    from .pref.checkpoint import locate
    p = Path(path)
    if not p.is_dir():
        return None
    try:
        locate(p)
        return CLASSIFIER
    except FileNotFoundError:
        pass
    if find_checkpoint(p) is not None:
        return GENERATIVE
    if any(locate_ok(d) for d in p.glob("fold*") if d.is_dir()):
        return KFOLD
    if (p / "study.db").exists() or (p / "trials").is_dir():
        return SWEEP
    if (p / "config.yaml").exists() and (p / "metrics.jsonl").exists():
        return UNFINISHED
    return None


def locate_ok(folder: Path) -> bool:
    from .pref.checkpoint import locate
    try:
        locate(folder)
        return True
    except FileNotFoundError:
        return False


def wrong_kind(path: str | os.PathLike, wanted: str, kind: str | None = None) -> str | None:
    """`path: it is <kind>, not <wanted>` when the folder is a known kind, else None."""
    kind = kind if kind is not None else run_kind(path)
    return None if kind is None else f"{path} is {kind}, not {wanted}"
