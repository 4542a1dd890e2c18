"""Refusals before any work and the probability floor (issue 13 items 5, 7, 11):
--max-len beyond the encoder's positions, a model the hub cannot give, and
probabilities that can never reach 0 in what is written."""
from __future__ import annotations

import errno

import numpy as np
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from src.errors import UsageError
from src.pref.inference import calibration as cal
from src.pref import registry
from src.train_pref import main as train_main
from tests.pref_helpers import make_tiny_encoder


def hub_is_reachable(monkeypatch) -> None:
    from src.models import names
    monkeypatch.setattr(names, "hub_reachable", lambda timeout=3.0: True)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(make_tiny_encoder(tmp_path_factory.mktemp("tiny_enc"), hidden=32))


# --- item 5: --max-len against the encoder's positions, at training ----------------------

def test_training_refuses_max_len_beyond_the_positions_before_writing_anything(tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    rc = train_main(["--model", tiny_model, "--max-len", "1024", "--out", str(out), "--demo-rows", "40",
                     "--epochs", "1", "--progress", "false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: --max-len 1024 is longer than the encoder's 512 positions")
    assert not out.exists()  # refused before the run dir, the data or the model


def test_max_len_check_is_shared_and_skips_relative_positions():
    from transformers import BertConfig, DebertaV2Config
    registry.check_max_len(BertConfig(max_position_embeddings=128), 128)
    with pytest.raises(UsageError, match="--max-len 129 is longer than the encoder's 128 positions"):
        registry.check_max_len(BertConfig(max_position_embeddings=128), 129)
    registry.check_max_len(DebertaV2Config(max_position_embeddings=512), 4096)  # relative positions: no limit


# --- item 11: a model the hub cannot give is one line -----------------------------------

def _hub_errors():
    import httpx2
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    resp = lambda code: httpx2.Response(code, request=httpx2.Request("GET", "https://huggingface.co/x"))  # noqa: E731
    return {
        "connection (OSError from transformers)": (OSError(
            "We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the "
            "cached files."), "couldn't connect"),
        "connection (requests)": (requests.ConnectionError("Max retries exceeded with url"), "could not reach"),
        "connection (httpx)": (httpx2.ConnectError("[Errno 101] Network is unreachable"), "could not reach"),
        "gated repo": (GatedRepoError("Access to model is restricted", response=resp(403)), "gated"),
        "missing repo": (RepositoryNotFoundError("404 Client Error", response=resp(404)), "no such repo"),
        "no disk space": (OSError(errno.ENOSPC, "No space left on device"), "no space left"),
    }


@pytest.mark.parametrize("kind", list(_hub_errors()))
def test_model_loading_failures_are_one_line_with_the_way_out(kind, monkeypatch):
    import transformers
    error, words = _hub_errors()[kind]

    def fail(*a, **k):
        raise error
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub_is_reachable(monkeypatch)  # the failures below come from the loaders, after the probe
    for cls in (transformers.AutoTokenizer, transformers.AutoModel, transformers.AutoConfig):
        monkeypatch.setattr(cls, "from_pretrained", fail)
    with pytest.raises(registry.ModelLoadError) as e:
        registry.load_encoder("distilbert")
    msg = str(e.value)
    assert "\n" not in msg and "'distilbert (distilbert-base-uncased)'" in msg and words in msg.lower()
    assert "--model minilm" in msg and "HF_HUB_OFFLINE=1" in msg and "local folder" in msg
    with pytest.raises(registry.ModelLoadError, match="distilbert") as c:
        registry.encoder_config("distilbert")
    assert str(c.value) == msg  # one translation for the weights and the config alone


def test_train_cli_gives_one_line_when_the_hub_is_unreachable(monkeypatch, tmp_path, capsys):
    import transformers

    def fail(*a, **k):
        raise requests.ConnectionError("Max retries exceeded")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub_is_reachable(monkeypatch)  # the failures below come from the loaders, after the probe
    for cls in (transformers.AutoTokenizer, transformers.AutoModel, transformers.AutoConfig):
        monkeypatch.setattr(cls, "from_pretrained", fail)
    assert train_main(["--model", "distilbert", "--out", str(tmp_path / "r"), "--demo-rows", "40"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: model 'distilbert") and "--model minilm" in err[0]


def test_a_hub_id_under_hf_hub_offline_is_the_same_line_for_weights_and_config(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lines = []
    for load in (registry.load_encoder, registry.encoder_config):
        with pytest.raises(registry.ModelLoadError) as e:
            load("distilbert")
        lines.append(str(e.value))
    assert lines[0] == lines[1] and "HF_HUB_OFFLINE=1" in lines[0] and "distilbert-base-uncased" in lines[0]


def test_other_errors_are_not_disguised(monkeypatch):
    import transformers

    def fail(*a, **k):
        raise KeyError("a bug, not a download problem")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub_is_reachable(monkeypatch)  # the failures below come from the loaders, after the probe
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fail)
    with pytest.raises(KeyError):
        registry.load_encoder("distilbert")


# --- item 7: the floor and a temperature that cannot reach 0 ----------------------------

@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scale=st.floats(0.0, 300.0), n=st.integers(1, 40))
def test_floored_probabilities_are_never_below_the_floor_and_sum_to_one(seed, scale, n):
    rng = np.random.default_rng(seed)
    p = cal.softmax(rng.normal(size=(n, 3)) * scale)
    f = cal.floor_probs(p)
    assert (f >= cal.PROB_FLOOR).all() and np.allclose(f.sum(1), 1.0, atol=1e-12)
    i, j = np.triu_indices(3, 1)
    assert (np.sign(f[:, i] - f[:, j]) * np.sign(p[:, i] - p[:, j]) >= 0).all()  # the order of the classes stays
    assert np.abs(f - p).max() <= 3 * cal.PROB_FLOOR + 1e-12


def test_fitted_temperature_cannot_drive_probabilities_to_zero():
    """A tiny, separable validation split: the unbounded optimum runs to T -> 0."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=6)
    ab = np.eye(3)[y] * 12.0 + rng.normal(scale=0.1, size=(6, 3))
    ba = np.eye(3)[[1, 0, 2]][y] * 12.0
    t = cal.fit_temperature(ab, ba, y)
    p = cal.average_probs(ab, ba, t)
    assert p.min() >= cal.PROB_FLOOR / 3  # before the floor is even applied
    assert cal.temperature_bounds(ab, ba)[0] <= t <= cal.T_MAX


def test_written_submission_rows_carry_the_floor(tmp_path):
    from src.pref.inference.submission import format_submission
    probs = np.array([[1.0, 0.0, 0.0], [1 - 4e-16, 4e-16, 0.0], [0.2, 0.3, 0.5]])
    rows = [line.split(",") for line in format_submission(["1", "2", "3"], probs).splitlines()[1:]]
    got = np.array([[float(x) for x in r[1:]] for r in rows])
    assert (got >= cal.PROB_FLOOR).all() and np.allclose(got.sum(1), 1, atol=1e-9)
    assert np.allclose(got[2], probs[2], atol=1e-5)
