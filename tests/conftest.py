"""Shared fixtures. Nothing here touches the network: models are the embedded
MiniLM package or tiny ones built in-process; data is synthetic or ../shared."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test that reaches for the hub fails fast instead of hanging
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
REAL_DEV = REPO.parent / "shared" / "data" / "real_pairs_dev.csv"


@pytest.fixture(scope="session")
def real_dev_csv() -> Path:
    if not REAL_DEV.exists():
        pytest.skip("../shared/data/real_pairs_dev.csv not present")
    return REAL_DEV


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory) -> Path:
    """A 400-row synthetic arena CSV (train schema, with true probabilities)."""
    from src.data.synthetic import make_rows, write_csv
    path = tmp_path_factory.mktemp("synthetic") / "train.csv"
    write_csv(make_rows(400, seed=123), path)
    return path
