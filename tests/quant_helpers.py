"""What the bitsandbytes tests share: a small synthetic file and a seconds-fast LoRA tiny-llama
run config (tests/test_quantized.py, tests/test_engine_bnb.py)."""
from __future__ import annotations

from pathlib import Path

from src.data.synthetic import make_rows, write_csv
from src.pref.config import PrefConfig


def one_line(e) -> str:
    """The message of a pytest.raises excinfo, checked to be one line."""
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def write_small_csv(folder: Path) -> Path:
    path = folder / "train.csv"
    write_csv(make_rows(96, seed=7), path)
    return path


def tiny_lora_cfg(data, out, **kw) -> PrefConfig:
    base = dict(model="tiny-llama", data=str(data), out=str(out), arch="siamese", max_len=48, prompt_budget=12,
                batch_size=8, epochs=1, lr=2e-3, head_lr_mult=5, head_hidden=16, head_dropout=0.0, select_frac=0.0,
                precision="fp32", progress=False, eval_every=3, seed=3, lora=True, lora_r=2, lora_alpha=4,
                lora_dropout=0.0)
    base.update(kw)
    return PrefConfig(**base)
