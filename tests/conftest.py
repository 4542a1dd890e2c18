"""Shared fixtures. Nothing here touches the network: models are the embedded
MiniLM package or tiny ones built in-process; data is synthetic or ../shared."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test that reaches for the hub fails fast instead of hanging
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Property tests assert behaviour, not speed: hypothesis's 200 ms per-example deadline failed
# test_fast_csv under a fully loaded 2-core box (its first example imports the reader) and
# passed alone. Speed is what scripts/bench_*.py measure.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("prefpipe", deadline=None)
_hypothesis_settings.load_profile("prefpipe")

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


def train_pref_run(folder: Path, model: str) -> Path:
    """One small classifier run (150 synthetic rows, max_len 64, one epoch) in `folder`/run."""
    from src.data.synthetic import make_rows, write_csv
    from src.pref.config import PrefConfig
    from src.pref.train import run
    data = folder / "train.csv"
    write_csv(make_rows(150, seed=11), data)
    cfg = PrefConfig(model=model, data=str(data), out=str(folder / "run"), epochs=1, max_len=64,
                     prompt_budget=16, batch_size=16, progress=False, seed=0)
    run(cfg)
    return folder / "run"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A trained classifier run on a tiny random 2-layer BERT (the MiniLM tokenizer): every file a run
    writes, in about a second. Shared by the whole session; tests copy it before changing anything."""
    from tests.pref_helpers import make_tiny_encoder
    encoder = make_tiny_encoder(tmp_path_factory.mktemp("tiny_encoder") / "bert")
    return train_pref_run(tmp_path_factory.mktemp("tiny_pref_run"), str(encoder))


@pytest.fixture(scope="session")
def minilm_run(tmp_path_factory) -> Path:
    """The same run on the embedded MiniLM, for tests of what ships with a real encoder (the Kaggle
    export bundles it). Slow: only `slow` tests use it."""
    return train_pref_run(tmp_path_factory.mktemp("minilm_pref_run"), "minilm")
