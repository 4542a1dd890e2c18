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


KAGGLE_NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "kaggle_inference.ipynb"


def run_kaggle_notebook(cwd: Path, monkeypatch, **env) -> str:
    """Run notebooks/kaggle_inference.ipynb headless from `cwd` (not the repo: the export must
    stand alone), with PREFPIPE_<KEY>=value for each keyword; check no cell raised and return
    what its cells printed."""
    import pytest
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for key, value in env.items():
        monkeypatch.setenv(f"PREFPIPE_{key.upper()}", str(value))
    nb = nbformat.read(KAGGLE_NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(cwd)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
