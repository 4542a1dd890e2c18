"""LoRA classifier checkpoints hold adapters + head (not the base), reload to identical
logits, refuse files that do not fit, and merge into a plain backbone."""
from __future__ import annotations

import os

import pytest
import torch

from src.engine.batching import pad_sequences
from src.errors import UsageError
from src.pref.modeling import adapters as ad
from src.pref.modeling.backbone import LoraSpec, load_backbone
from src.pref.modeling.model import PrefModel

SPEC = LoraSpec(r=2, alpha=4, dropout=0.0)


def _model(name="tiny-llama", spec=SPEC, seed=0, head="mlp"):
    torch.manual_seed(seed)
    b = load_backbone(name, lora=spec, log=None)
    m = PrefModel(b.model, arch="cross", pooling="mean", head_hidden=16, style=False, chunks=1, head=head)
    return m, b


def _batch(tok):
    rows = [[5, 6, 7, 8, 9], [10, 11, 12], [13] * 9, [20, 30]]
    return pad_sequences(rows, tok.pad_token_id)


@pytest.mark.parametrize("name,head", [("tiny-llama", "mlp"), ("tiny-gemma2", "mlp"), ("tiny-llama", "linear")])
def test_checkpoint_is_adapter_and_head_and_reloads_identically(tmp_path, name, head):
    m, b = _model(name, head=head)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.05)  # trained-looking adapters (peft starts B at zero)
    ids, mask = _batch(b.tokenizer)
    m.eval()
    with torch.no_grad():
        ref = m(ids, mask, both_orders=True)
    nbytes = ad.save_own_weights(m, tmp_path / "model.safetensors")
    ad.write_meta(tmp_path, base=name, lora=SPEC, decoder=True, pooling="mean", attn=b.info["attn"],
                  targets=b.info["lora_targets"])
    base_bytes = os.path.getsize(os.path.join(b.path, "model.safetensors"))
    assert os.path.getsize(tmp_path / "model.safetensors") < base_bytes / 10
    assert nbytes < base_bytes / 10

    meta = ad.read_meta(tmp_path)
    b2 = ad.load_base_for(meta)
    m2 = PrefModel(b2.model, arch="cross", pooling="mean", head_hidden=16, style=False, chunks=1, head=head)  # head random
    ad.load_own_weights(m2, tmp_path / "model.safetensors")
    m2.eval()
    with torch.no_grad():
        got = m2(ids, mask, both_orders=True)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])

    merged = ad.merge_into(m2)
    assert not ad.is_lora_model(merged)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids, mask, both_orders=True)[0], ref[0], atol=1e-5, rtol=1e-5)


def test_adapter_of_another_shape_or_head_is_refused(tmp_path):
    m, _ = _model()
    ad.save_own_weights(m, tmp_path / "w.safetensors")
    other, _ = _model(spec=LoraSpec(r=2, alpha=4, dropout=0.0, targets=["q_proj"]))
    with pytest.raises(UsageError, match="does not match"):
        ad.load_own_weights(other, tmp_path / "w.safetensors")
    linear, _ = _model(head="linear")  # an MLP head's weights do not load into a linear head
    with pytest.raises(UsageError, match="does not match"):
        ad.load_own_weights(linear, tmp_path / "w.safetensors")


def test_merge_of_a_full_finetune_is_one_line_error():
    b = load_backbone("tiny-qwen2", log=None)
    m = PrefModel(b.model, arch="cross", pooling="mean", head_hidden=16, style=False)
    with pytest.raises(UsageError, match="not a LoRA run"):
        ad.merge_into(m)


def test_missing_base_is_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match="base model"):
        ad.load_base_for({"base": "/nonexistent/base-folder", "lora": None})
