"""Load a trained classifier from a run dir or checkpoint folder, offline."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import from_dict, load_yaml
from ..engine.checkpoint import load_weights
from .config import PrefConfig
from .model import PrefModel


def best_folder(path: str | Path) -> Path:
    """Accept a run dir, its checkpoint/ folder, or checkpoint/best itself."""
    p = Path(path)
    for cand in (p / "checkpoint" / "best", p / "best", p):
        if (cand / "model.safetensors").exists() and (cand / "config.yaml").exists():
            return cand
    raise FileNotFoundError(f"{path}: no trained classifier here (expected checkpoint/best/model.safetensors)")


def build_pref_model(encoder, cfg: PrefConfig) -> PrefModel:
    return PrefModel(encoder, arch=cfg.arch, pooling=cfg.pooling, head_hidden=cfg.head_hidden,
                     dropout=cfg.head_dropout, style=cfg.style_features,
                     chunks=cfg.length_chunks)


def load_pref_checkpoint(path: str | Path):
    """(model in eval mode, tokenizer, config, temperature). Nothing is downloaded:
    the encoder is rebuilt from its saved config and filled from safetensors."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    folder = best_folder(path)
    cfg = from_dict(PrefConfig, load_yaml(folder / "config.yaml"), source=str(folder / "config.yaml"))
    enc_cfg = AutoConfig.from_pretrained(folder / "encoder")
    model = build_pref_model(AutoModel.from_config(enc_cfg), cfg)
    load_weights(model, folder / "model.safetensors")
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    cal = folder / "calibration.json"
    temperature = json.loads(cal.read_text())["temperature"] if cal.exists() else 1.0
    return model.eval(), tokenizer, cfg, temperature
