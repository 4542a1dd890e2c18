"""Encoder loading and the checks on its config. Names (aliases, the embedded `minilm`, hub
ids, folders) are resolved by `src.models.resolve`, the one owner of model names.

A model that cannot be loaded (no connection, a gated or missing repo, no
disk space for the download, offline without a cached copy) is one
`ModelLoadError` line naming the model and the ways out, not a traceback.
"""
from __future__ import annotations

import errno
import os

from ..errors import UsageError
from ..models import ModelLoadError, resolve
from ..models.names import WAY_OUT

__all__ = ["ModelLoadError", "load_encoder", "encoder_config", "check_max_len", "max_positions"]

_HUB_MODULES = ("huggingface_hub", "requests", "urllib3", "httpx", "httpx2", "httpcore")


def _why(e: BaseException) -> str | None:
    """A one-line reason when `e` is a loading failure we can explain, else None (re-raise)."""
    name = type(e).__name__
    module = type(e).__module__.split(".")[0]
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "no space left on the disk for the download (free space or set HF_HOME to a bigger disk)"
    if name == "GatedRepoError":
        return "the repo is gated: accept its terms on huggingface.co and log in (huggingface-cli login)"
    if name in ("RepositoryNotFoundError", "RevisionNotFoundError"):
        return "no such repo on the hub (a typo, or a private repo without a login)"
    if name in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
        return "not in the local cache and the hub cannot be reached"
    if isinstance(e, (ConnectionError, TimeoutError)) or "Connect" in name or "Timeout" in name:
        return "could not reach the Hugging Face hub (no connection, a proxy or a firewall)"
    if isinstance(e, OSError) or module in _HUB_MODULES:
        first = str(e).strip().splitlines()[0] if str(e).strip() else name
        return f"{first[:200]}"
    return None


def _load(name: str, load):
    """`load(path)` for the model `name` (alias, hub id or folder): the one place that
    refuses a hub id under HF_HUB_OFFLINE=1 and turns a loading failure into one
    `ModelLoadError` line (anything `_why` cannot explain is re-raised as it is)."""
    path = resolve(name)
    shown = name if path == name else f"{name} ({path})"
    if not os.path.isdir(path) and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelLoadError(f"model '{shown}' is not a local folder and HF_HUB_OFFLINE=1: "
                             f"{WAY_OUT}")
    try:
        return load(path)
    except Exception as e:  # noqa: BLE001  (narrowed by _why; anything else is re-raised)
        why = _why(e)
        if why is None:
            raise
        raise ModelLoadError(f"model '{shown}' could not be loaded: {why}; {WAY_OUT}") from e


def load_encoder(name: str, *, trust_remote_code: bool = False):
    """(encoder, tokenizer) from an alias, hub id or folder."""
    from transformers import AutoModel, AutoTokenizer

    def load(path: str):
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        return AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code), tokenizer
    return _load(name, load)


def encoder_config(name: str, *, trust_remote_code: bool = False):
    """The encoder's config alone (small, no weights): what checks before training need."""
    from transformers import AutoConfig
    return _load(name, lambda path: AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code))


def max_positions(enc_cfg) -> int | None:
    """Longest sequence the encoder takes, None when unbounded (relative positions, e.g. DeBERTa-v3)."""
    if getattr(enc_cfg, "position_embedding_type", "absolute") != "absolute":
        return None
    if str(getattr(enc_cfg, "model_type", "")).startswith("deberta"):
        return None
    return getattr(enc_cfg, "max_position_embeddings", 0) or None


def check_max_len(enc_cfg, max_len: int, *, what: str = "") -> None:
    """Refuse a --max-len longer than the encoder's positions (training and prediction alike)."""
    limit = max_positions(enc_cfg)
    if limit is not None and max_len > limit:
        where = f" ({what})" if what else ""
        raise UsageError(f"--max-len {max_len} is longer than the encoder's {limit} positions{where}: "
                         f"use --max-len {limit} or less")

