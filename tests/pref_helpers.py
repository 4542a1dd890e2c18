"""A tiny BERT (random weights, 2 layers) with the embedded MiniLM tokenizer,
saved as a local HF folder so `--model <folder>` exercises the real loading
path in milliseconds. Dropout is off so runs are comparable bit for bit."""
from __future__ import annotations

from pathlib import Path


def make_tiny_encoder(folder: Path, hidden: int = 32, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from src.models import resolve
    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(resolve("minilm"))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=512,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
