"""Decoder backbones (tiny Llama / Qwen2 / Gemma-2 built in-process, loaded from a folder):
last-token pooling independent of padding and batch neighbours, pad handling, LoRA
targets, gradient checkpointing, and the one-line refusals."""
from __future__ import annotations

import pytest
import torch

from src.engine.batching import pad_sequences
from src.errors import UsageError
from src.models.tiny import TINY_DECODERS, build_tiny_decoder, tiny_decoder_path
from src.pref.modeling import backbone as bb

FAMILIES = list(TINY_DECODERS)


@pytest.fixture(scope="module", params=FAMILIES + ["gpt2-folder"])
def loaded(request, tmp_path_factory):
    torch.manual_seed(0)
    name = request.param
    if name == "gpt2-folder":  # learned absolute positions: left padding needs position ids from the mask
        from src.models.tiny import build_tiny, save_tiny
        name = str(tmp_path_factory.mktemp("gpt2"))
        save_tiny(*build_tiny(), name)
    return bb.load_backbone(name, log=None)


def _rows(tok, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = [5, 17, 9, 40, 2, 23][:n]
    return [[int(x) for x in torch.randint(10, len(tok) - 1, (k,), generator=g)] for k in lens]


def _pooled(b: bb.Backbone, rows, *, side="right", width=None, how="last"):
    ids, mask = pad_sequences(rows, b.tokenizer.pad_token_id, side=side, width=width)
    with torch.no_grad():
        h = bb.hidden_states(b.model.eval(), ids, mask, b.decoder)
    return bb.pool(h, mask, how)


@pytest.mark.parametrize("how", ["last", "mean"])
def test_pooled_row_independent_of_padding_and_neighbours(loaded, how):
    rows = _rows(loaded.tokenizer)
    alone = torch.stack([_pooled(loaded, [r], how=how)[0] for r in rows])
    for side in ("right", "left"):
        batched = _pooled(loaded, rows, side=side, width=64, how=how)  # extra padding beyond the longest
        torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    other = _rows(loaded.tokenizer, 6, seed=1)  # different batch neighbours, longer batch
    mixed = _pooled(loaded, [rows[1]] + other, side="left", how=how)[0]
    torch.testing.assert_close(mixed, alone[1], atol=1e-5, rtol=0)


def test_decoder_detection_and_attention_defaults(loaded):
    assert loaded.decoder
    assert loaded.info["attn"] == ("eager" if loaded.info["model_type"] == "gemma2" else "sdpa")
    assert loaded.tokenizer.pad_token_id is not None
    if loaded.info["model_type"] != "gpt2":
        assert loaded.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


def test_pad_is_eos_and_a_row_ending_in_eos_pools_its_last_token():
    b = bb.load_backbone("tiny-llama", log=None)  # Llama-3-like: no pad token of its own
    assert "padding with EOS" in b.info["pad"]
    eos = b.tokenizer.eos_token_id
    assert b.tokenizer.pad_token_id == eos
    rows = [[11, 12, 13, eos], [11, 12]]
    ids, mask = pad_sequences(rows, eos)
    assert bb.last_token_index(mask).tolist() == [3, 1]
    # transformers' id comparison (ids != pad) would take position 2 for row 0: the EOS is not pad
    hf_style = (torch.arange(ids.shape[1]) * (ids != eos)).argmax(-1)
    assert hf_style.tolist() == [2, 1]


def test_is_decoder_config_keeps_bert_like_models_encoders():
    from transformers import BertConfig, DebertaV2Config, Gemma2Config, LlamaConfig, Phi3Config, Qwen2Config
    assert not bb.is_decoder_config(BertConfig()) and not bb.is_decoder_config(DebertaV2Config())
    assert all(bb.is_decoder_config(c()) for c in (LlamaConfig, Gemma2Config, Qwen2Config, Phi3Config))


def test_tiny_decoders_are_deterministic_across_builds(tmp_path):
    from safetensors.torch import load_file
    a = load_file(f"{tiny_decoder_path('tiny-qwen2', root=tmp_path / 'a')}/model.safetensors")
    b = load_file(f"{tiny_decoder_path('tiny-qwen2', root=tmp_path / 'b')}/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    t1, t2 = build_tiny_decoder("tiny-gemma2")[1], build_tiny_decoder("tiny-gemma2")[1]
    assert t1.get_vocab() == t2.get_vocab()


@pytest.mark.parametrize("name", FAMILIES)
def test_lora_defaults_to_every_linear_layer(name):
    b = bb.load_backbone(name, lora=bb.LoraSpec(r=4, alpha=8, dropout=0.0), log=None)
    assert set(b.info["lora_targets"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                           "down_proj"}
    lin = [m for n, m in b.model.base_model.model.named_modules()
           if type(m).__name__ == "Linear" and hasattr(m, "lora_A")]
    expect = sum(4 * (m.in_features + m.out_features) for m in lin)
    trainable, total = bb.trainable_parameters(b.model)
    assert trainable == expect and 0 < trainable < total
    names = {n for n, p in b.model.named_parameters() if p.requires_grad}
    assert names and all("lora_" in n for n in names)


def test_lora_target_that_matches_nothing_is_one_line_error():
    with pytest.raises(UsageError) as e:
        bb.load_backbone("tiny-llama", lora=bb.LoraSpec(targets=["q_proj", "qkv_proj"]), log=None)
    msg = str(e.value)
    assert "\n" not in msg and "'qkv_proj'" in msg and "q_proj" in msg.split("layers:")[1]
    b = bb.load_backbone("tiny-llama", lora=bb.LoraSpec(targets=["q_proj", "v_proj"]), log=None)
    assert b.info["lora_targets"] == ["q_proj", "v_proj"]


def test_checkpointing_without_reentrancy_reaches_the_adapters():
    """Same LoRA gradients with and without gradient checkpointing, and none of them zero:
    the frozen embedding output does not block them (use_reentrant=False)."""
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        b = bb.load_backbone("tiny-gemma2", lora=bb.LoraSpec(r=4, dropout=0.0), gradient_checkpointing=ckpt,
                             log=None)
        for n, p in b.model.named_parameters():
            if "lora_B" in n:  # peft initialises B to zero: give A a gradient too
                torch.nn.init.normal_(p, std=0.02)
        b.model.train()
        ids, mask = pad_sequences(_rows(b.tokenizer), b.tokenizer.pad_token_id, side="left")
        bb.pool(bb.hidden_states(b.model, ids, mask, True), mask, "last").pow(2).sum().backward()
        grads.append({n: p.grad.clone() for n, p in b.model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert grads[0][n].abs().sum() > 0, n
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-5, rtol=1e-4)


def test_cls_pooling_on_decoder_is_refused():
    with pytest.raises(UsageError, match="first token"):
        bb.check_pooling("cls", decoder=True)
    bb.check_pooling("cls", decoder=False)
    assert bb.default_pooling(True) == "last" and bb.default_pooling(False) == "mean"


@pytest.mark.parametrize("kw, needle", [
    (dict(load_in_4bit=True, load_in_8bit=True), "exclusive"),
    (dict(attn="flash_attention_2"), "flash-attn"),
    (dict(attn="fast"), "--attn must be"),
])
def test_refusals_are_one_line_usage_errors(kw, needle):
    with pytest.raises(UsageError) as e:
        bb.load_backbone("tiny-llama", device="cpu", log=None, **kw)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_unknown_model_offline_is_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match="not a local folder"):
        bb.load_backbone("someone/not-cached-9b", log=None)


def test_qlora_recipe():
    q = bb.quantization_config("4bit")
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    assert bb.quantization_config("8bit").load_in_8bit


def test_fsdp_config_is_valid_for_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file
    cfg = load_config_from_file("configs/accelerate/fsdp.yaml")
    assert str(cfg.distributed_type).endswith("FSDP")
    assert cfg.fsdp_config["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"  # sharded optimizer state on resume
    assert cfg.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"


def test_config_glue_reads_knobs_and_checks_pooling():
    from types import SimpleNamespace
    cfg = SimpleNamespace(model="tiny-qwen2", lora=True, lora_r=2, lora_alpha=4, lora_dropout=0.0,
                          lora_targets="q_proj, v_proj", pooling="last", gradient_checkpointing=False)
    b = bb.backbone_from_config(cfg, log=None)
    assert b.info["lora_targets"] == ["q_proj", "v_proj"]
    mults = bb.lr_multipliers(b.model, 20.0, 2.0)
    lora = [n for n, p in b.model.named_parameters() if p.requires_grad]
    assert mults.pop("head.") == 20.0 and sorted(mults) == sorted(lora) and set(mults.values()) == {2.0}
    with pytest.raises(UsageError, match="first token"):
        bb.backbone_from_config(SimpleNamespace(model="tiny-qwen2", pooling="cls"), log=None)


def _transformers_warnings():
    import logging
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep(level=logging.WARNING)
    logging.getLogger("transformers").addHandler(handler)
    return records, handler


def test_a_decoder_loads_without_the_lm_head_load_report_and_other_keys_still_report(tmp_path):
    """Every tiny-decoder run printed a transformers 'LOAD REPORT ... lm_head.weight |
    UNEXPECTED' table: the bare model never uses the causal LM's head. Only those keys are
    ignored, for that load: a stray key is still reported, and the class is left as it was."""
    import logging
    import shutil

    from safetensors.torch import load_file, save_file
    from transformers import LlamaModel
    folder = tmp_path / "llama"
    shutil.copytree(tiny_decoder_path("tiny-llama"), folder)
    records, handler = _transformers_warnings()
    try:
        bb.load_backbone(str(folder), log=None)
        assert not [r for r in records if "LOAD REPORT" in r]
        weights = load_file(str(folder / "model.safetensors"))
        weights["model.stray.weight"] = torch.zeros(2)
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
        bb.load_backbone(str(folder), log=None)
        report = "\n".join(r for r in records if "LOAD REPORT" in r)
        assert "stray" in report and "lm_head" not in report
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert "_keys_to_ignore_on_load_unexpected" not in LlamaModel.__dict__
