"""Decoder LLMs at prediction/training time without a GPU: quantised prediction is refused
in one line before any work where bitsandbytes cannot run, the bitsandbytes config is the QLoRA/LLM.int8 recipe,
one quantised copy is loaded per GPU; Gemma-2/3 never run in fp16 unasked; softcapping
configs get an attention kernel that softcaps."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from src.device import check_precision, choose_precision, fp16_overflow_family
from src.errors import UsageError
from src.models import resolve
from src.pref.modeling import backbone as bb
from src.pref.inference import predict as pp


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# --- quantised prediction ----------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--load-in-4bit", "--load-in-8bit"])
def test_predict_quantized_where_bitsandbytes_cannot_run_is_one_line_error_before_any_work(tmp_path, capsys,
                                                                                           monkeypatch, flag):
    """A device bitsandbytes cannot use (simulated: its probe fails) is refused before the
    missing run or data file is even looked at."""
    from src.predict import main
    monkeypatch.setattr("src.pref.modeling.quantize.bnb_unsupported", lambda dev: "no kernel for it")
    out = tmp_path / "sub.csv"
    rc = main(["--run", str(tmp_path / "no-run"), "--data", str(tmp_path / "missing.csv"), "--out", str(out),
               "--device", "cpu", flag])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err  # not the missing file or run
    assert f"{flag}: bitsandbytes cannot run on this run's device cpu (no kernel for it)" in err[0], err
    assert not out.exists()


def _fake_cuda_with_bnb(monkeypatch, have_bnb=True):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if have_bnb else None) if name == "bitsandbytes" else real(name, *a))
    monkeypatch.setattr("src.pref.modeling.quantize.bnb_unsupported", lambda dev: None)  # as on a CUDA box


def _run_dir(tmp_path, name, lora):
    best = tmp_path / name / "checkpoint" / "best"
    best.mkdir(parents=True)
    (best / "model.safetensors").write_bytes(b"")
    (best / "config.yaml").write_text("model: tiny-llama\n")
    if lora:
        (best / "backbone.json").write_text(json.dumps({"base": "tiny-llama", "lora": {"r": 2}}))
    return str(tmp_path / name)


def test_quantized_prediction_needs_bitsandbytes_and_an_adapter_run(tmp_path, monkeypatch):
    adapter, full = _run_dir(tmp_path, "lora", True), _run_dir(tmp_path, "full", False)
    _fake_cuda_with_bnb(monkeypatch, have_bnb=False)
    with pytest.raises(UsageError) as e:
        pp.check_quantized_runs([adapter], load_in_4bit=False, load_in_8bit=True, device="cuda")
    assert "pip install bitsandbytes" in _one_line(e)
    _fake_cuda_with_bnb(monkeypatch)
    assert pp.check_quantized_runs([adapter], load_in_4bit=True, load_in_8bit=False, device="cuda:1") == "4bit"
    assert pp.check_quantized_runs([full], load_in_4bit=False, load_in_8bit=False, device="cpu") is None
    with pytest.raises(UsageError) as e:
        pp.check_quantized_runs([adapter, full], load_in_4bit=False, load_in_8bit=True, device="cuda")
    assert "not an adapter (LoRA) run" in _one_line(e) and "full" in str(e.value)


def test_cuda_quantization_config_is_the_recipe_without_loading(monkeypatch):
    q4 = bb.quantized_load_kwargs("4bit", "cuda:1", torch.float16)
    c = q4["quantization_config"]
    assert c.load_in_4bit and not c.load_in_8bit
    assert c.bnb_4bit_quant_type == "nf4" and c.bnb_4bit_use_double_quant
    assert c.bnb_4bit_compute_dtype == torch.float16 and q4["dtype"] == torch.float16
    assert q4["device_map"] == {"": 1}  # that GPU, the whole model
    train = bb.quantized_load_kwargs("4bit", "cuda")  # training: bf16 compute, this rank's GPU
    assert train["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16 and train["device_map"] == {"": 0}
    monkeypatch.setenv("LOCAL_RANK", "3")
    q8 = bb.quantized_load_kwargs("8bit", "cuda", torch.float16)
    assert q8["quantization_config"].load_in_8bit and not q8["quantization_config"].load_in_4bit
    assert q8["device_map"] == {"": 3}


def test_one_quantized_copy_loaded_per_gpu_in_the_prediction_precision(tmp_path, monkeypatch):
    """load_quantized loads (never deep-copies) a copy per device, with the compute dtype of
    the chosen precision, and puts our head in that dtype (bitsandbytes is faked by the loader)."""
    from src.pref.modeling.model import PrefModel
    calls = []

    def fake_load(path, **kw):
        calls.append(kw)
        b = bb.load_backbone("tiny-llama", log=None)
        return PrefModel(b.model, arch="cross", pooling="last"), b.tokenizer, None, 1.0

    monkeypatch.setattr("src.pref.checkpoint.load_pref_checkpoint", fake_load)
    monkeypatch.setattr(pp, "resolve_devices", lambda device, dp: ["cpu", "cpu"])
    run = _run_dir(tmp_path, "lora", True)
    q = pp.load_quantized(run, "8bit", device="cuda", precision="fp16")
    assert [c["load_in_8bit"] for c in calls] == [True, True] and not any(c["load_in_4bit"] for c in calls)
    assert {c["compute_dtype"] for c in calls} == {torch.float16} and [c["device"] for c in calls] == ["cpu", "cpu"]
    assert len(q.models) == 2 and q.models[0] is not q.models[1]
    assert all(p.dtype == torch.float16 for m in q.models for p in m.head.parameters())
    assert q.precision == "fp16" and q.bits == "8bit"


# --- fp16 guard -----------------------------------------------------------------------

@pytest.mark.parametrize("name, family", [
    ("google/gemma-2-9b-it", "Gemma-2/3"), ("gemma-2-2b-it", "Gemma-2/3"), ("tiny-gemma2", "Gemma-2/3"),
    ("gemma2", "Gemma-2/3"), ("gemma3_text", "Gemma-2/3"), ("google/gemma-3-12b-it", "Gemma-2/3"),
    ("microsoft/deberta-v3-base", "DeBERTa-v3"),
    ("google/gemma-7b", None), ("gemma4", None), ("llama-3.1-8b-instruct", None), ("qwen2", None),
    ("tiny-llama", None)])
def test_fp16_overflow_families(name, family):
    assert fp16_overflow_family(name) == family


def test_fp16_training_of_gemma_refused_in_one_line_before_work():
    from src.pref.config import PrefConfig
    from src.pref.train import check_before_work
    with pytest.raises(UsageError) as e:
        check_before_work(PrefConfig(model="tiny-gemma2", precision="fp16", lora=True, arch="cross"))
    assert "Gemma-2/3 overflows in fp16" in _one_line(e) and "--precision bf16" in str(e.value)
    check_before_work(PrefConfig(model="tiny-gemma2", precision="fp32", lora=True, arch="cross"))
    check_before_work(PrefConfig(model="tiny-llama", precision="fp16", lora=True, arch="cross"))
    with pytest.raises(UsageError):  # a local folder of any name: by its model_type
        check_precision("fp16", "runs/my-model", "gemma2")


@pytest.mark.parametrize("capability, model, want", [
    ((7, 5), "gemma2", "fp32"), ((7, 5), "gemma3_text runs/x", "fp32"), ((7, 5), "llama", "fp16"),
    ((8, 0), "gemma2", "bf16"), ((7, 0), "deberta-v2", "fp32")])
def test_prediction_precision_on_a_t4_avoids_fp16_for_gemma(monkeypatch, capability, model, want):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    prec, why = choose_precision("cuda:0", "auto", model=model)
    assert prec == want
    if want == "fp32":
        assert "overflows in fp16" in why and "no native bf16" in why
    assert choose_precision("cuda:0", "fp16", model=model)[0] == "fp16"  # an explicit request is honoured


# --- attention kernels ---------------------------------------------------------------------

def test_softcapping_configs_default_to_eager_and_refuse_sdpa():
    from transformers import AutoConfig, Gemma3TextConfig
    gemma2 = AutoConfig.from_pretrained(resolve("tiny-gemma2"))
    assert bb.attention_softcap(gemma2) == gemma2.attn_logit_softcapping is not None
    assert bb.check_attention(None, "gemma2", "cpu", bb.attention_softcap(gemma2)) == "eager"
    with pytest.raises(UsageError) as e:
        bb.check_attention("sdpa", "gemma2", "cpu", bb.attention_softcap(gemma2))
    assert "softcaps its attention logits" in _one_line(e)
    with pytest.raises(UsageError, match="softcaps"):  # refused before weights load, not transformers' ValueError
        bb.load_backbone("tiny-gemma2", attn="sdpa", log=None)
    gemma3 = Gemma3TextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              num_key_value_heads=1, head_dim=16, vocab_size=128)
    assert bb.attention_softcap(gemma3) is None  # QK-norm instead: sdpa is fine
    assert bb.check_attention(None, gemma3.model_type, "cpu", bb.attention_softcap(gemma3)) == "sdpa"
    # any config that sets a softcap is treated the same way, whatever its model type
    assert bb.check_attention(None, "llama", "cpu", 30.0) == "eager"
