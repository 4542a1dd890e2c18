"""Helpers shared by the prediction tests (the trained-run fixtures themselves are in conftest.py)."""
from __future__ import annotations

from pathlib import Path


def write_test_csv(path: Path, rows: int = 24, seed: int = 5, *, id_start: int = 500, labels: bool = False) -> Path:
    """A synthetic file in Kaggle's test schema (or train schema with labels=True)."""
    from src.data.synthetic import make_rows, write_csv
    write_csv(make_rows(rows, seed=seed, id_start=id_start), path, schema="train" if labels else "test")
    return path
