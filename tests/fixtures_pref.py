"""One tiny trained classifier run, shared by every test module that imports `tiny_run`.

Trained once per pytest process (minilm, 150 synthetic rows, max_len 64, one
epoch): the fixture is defined in each importing module, so the run itself is
cached here at module level and the second module gets the same folder.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_CACHE: dict[str, Path] = {}


def train_tiny_run(folder: Path) -> Path:
    from src.data.synthetic import make_rows, write_csv
    from src.pref.config import PrefConfig
    from src.pref.train import run
    data = folder / "train.csv"
    write_csv(make_rows(150, seed=11), data)
    cfg = PrefConfig(model="minilm", data=str(data), out=str(folder / "run"), epochs=1, max_len=64,
                     prompt_budget=16, batch_size=16, progress=False, seed=0)
    run(cfg)
    return folder / "run"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    if "run" not in _CACHE:
        _CACHE["run"] = train_tiny_run(tmp_path_factory.mktemp("tiny_pref_run"))
    return _CACHE["run"]


def write_test_csv(path: Path, rows: int = 24, seed: int = 5, *, id_start: int = 500, labels: bool = False) -> Path:
    """A synthetic file in Kaggle's test schema (or train schema with labels=True)."""
    from src.data.synthetic import make_rows, write_csv
    write_csv(make_rows(rows, seed=seed, id_start=id_start), path, schema="train" if labels else "test")
    return path
