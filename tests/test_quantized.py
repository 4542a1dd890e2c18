"""QLoRA (nf4) and 8-bit bases, and the 8-bit optimizer, on the CPU through bitsandbytes (>= 0.50
runs them on x86-64 with AVX2): training moves only the adapters and the head, a quantised run's
final figures are the quantised model's, quantised prediction stays near fp32, and what cannot
run is refused in one line before any work (a device bitsandbytes cannot use is simulated by
making its probe fail; a DeepSpeed config on CPU by accelerate's launch variable)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from src.errors import UsageError
from src.pref.modeling import backbone as bb
from src.pref.modeling import quantize as qz
from src.pref.train import run
from tests.quant_helpers import one_line, tiny_lora_cfg, write_small_csv

pytestmark = pytest.mark.skipif(qz.bnb_unsupported("cpu") is not None,
                                reason=f"bitsandbytes cannot run on this CPU: {qz.bnb_unsupported('cpu')}")
QUANT_LAYERS = ("Linear4bit", "Linear8bitLt")  # bitsandbytes' own (peft's LoRA wrappers share the names)


def _bnb_layers(model) -> list[tuple[str, torch.nn.Module]]:
    bnb = qz.import_bitsandbytes()
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))]
BITS = {"4bit": dict(load_in_4bit=True), "8bit": dict(load_in_8bit=True)}


_one_line, _cfg = one_line, tiny_lora_cfg


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory) -> Path:
    return write_small_csv(tmp_path_factory.mktemp("quant_data"))


def _quantised_state(model) -> dict[str, torch.Tensor]:
    """The stored (packed) weights of every bitsandbytes layer and their scales."""
    out = {}
    for name, mod in _bnb_layers(model):
        w = mod.weight
        out[name] = w.data.clone()
        if getattr(w, "quant_state", None) is not None:  # nf4: block absmax
            out[name + ".scale"] = w.quant_state.absmax.clone()
        else:  # int8: row scales (moved from the weight to the layer's state on the first forward)
            out[name + ".scale"] = (w.SCB if getattr(w, "SCB", None) is not None else mod.state.SCB).clone()
    return out


# --- training on a quantised base ------------------------------------------------------------

@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_qlora_trains_on_cpu_adapters_only(bits):
    """Every LoRA tensor gets a nonzero gradient, the loss falls, the quantised weights do not
    move, and an eval between steps leaves the training arithmetic as it was (bitsandbytes'
    CPU bf16 repacking of 4-bit weights is kept off)."""
    from src.pref.modeling.model import PrefModel
    torch.manual_seed(0)
    b = bb.load_backbone("tiny-llama", lora=bb.LoraSpec(r=4, alpha=8, dropout=0.0), compute_dtype=torch.float32,
                         log=None, **BITS[bits])
    layers = [m for _, m in _bnb_layers(b.model)]
    assert layers and all(type(m).__name__ == QUANT_LAYERS[bits == "8bit"] for m in layers)
    if bits == "4bit":  # compute dtype = the run's precision (fp32 here), not bitsandbytes' bf16 default
        assert {m.compute_dtype for m in layers} == {torch.float32}
    model = PrefModel(b.model, arch="cross", pooling="last", head_hidden=8, dropout=0.0)
    frozen = _quantised_state(model)
    ids = torch.randint(5, 120, (8, 16))
    mask = torch.ones_like(ids)
    mask[:3, 12:] = 0
    style = torch.zeros(4, 2, model.style_mean.numel())
    y = torch.tensor([0, 1, 2, 0])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    def step():
        model.train()
        opt.zero_grad()
        ab, ba = model(ids, mask, style)
        loss = torch.nn.functional.cross_entropy(ab, y) + torch.nn.functional.cross_entropy(ba, y.flip(0))
        loss.backward()
        return loss

    losses = [float(step().detach())]
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    # step 1: lora_B starts at zero, so only the B matrices have a gradient yet
    assert [n for n, p in lora.items() if "lora_B" in n and float(p.grad.abs().max()) == 0] == []
    opt.step()
    for i in range(7):
        loss = step()
        if i == 0:  # from here on every adapter tensor, A and B, gets a nonzero gradient
            assert [n for n, p in lora.items() if p.grad is None or float(p.grad.abs().max()) == 0] == []
            grads = {n: p.grad.clone() for n, p in lora.items()}
            model.eval()
            with torch.inference_mode():
                model(ids, mask, style)  # an eval between steps (4-bit: bitsandbytes would repack to bf16 gemv)
            again = step()
            assert float(again.detach()) == float(loss.detach())
            for n, p in lora.items():
                assert torch.equal(p.grad, grads[n]), n
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses
    after = _quantised_state(model)
    assert after.keys() == frozen.keys()
    for k in frozen:
        assert torch.equal(after[k], frozen[k]), k


@pytest.mark.slow
@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_quantized_run_final_metrics_are_the_quantized_models(small_csv, tmp_path, bits):
    """metrics.json and val_predictions.csv come from the quantised model the evals scored
    (before: re-predicted on the full-precision base). The checkpoint holds adapters + head."""
    from src.pref.checkpoint import load_pref_checkpoint
    from src.pref.inference.calibration import average_probs, log_loss
    from src.pref.inputs.encode import encode_pairs
    from src.pref.inference.predict import predict_logits
    out = tmp_path / bits
    m = run(_cfg(small_csv, out, **BITS[bits]))
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = [e for e in evals if e["kind"] == "eval" and e["step"] == m["best_step"]][-1]
    for key in ("val_log_loss_uncalibrated", "val_log_loss", "val_accuracy"):
        assert m[key] == pytest.approx(best[key], abs=1e-6), key
    saved = load_file(out / "checkpoint" / "best" / "model.safetensors")
    assert any("lora_A" in k for k in saved) and any(k.startswith("head.") for k in saved)
    assert all("lora_" in k or not k.startswith("encoder.") for k in saved), sorted(saved)[:5]
    meta = json.loads((out / "checkpoint" / "best" / "backbone.json").read_text())
    assert meta["base"] == "tiny-llama" and meta["lora"]["r"] == 2
    # the control: the same checkpoint on the full-precision base scores differently, so the
    # equality above is the quantised model's and not a coincidence of the two
    full, tok, cfg, _ = load_pref_checkpoint(out)
    import pandas as pd
    val = pd.read_csv(out / "val_predictions.csv")
    from src.data.arena import read_pairs
    by_id = {r.id: r for r in read_pairs(str(small_csv)).records}
    recs = [by_id[str(i)] for i in val["id"]]
    enc = encode_pairs(recs, tok, arch=cfg.arch, max_len=cfg.max_len, prompt_budget=cfg.prompt_budget, keep=cfg.keep,
                       both_orders=cfg.swap_aug)
    o = predict_logits(full, enc, device="cpu", both_orders=cfg.swap_aug)
    assert abs(log_loss(average_probs(o.ab, o.ba), enc.labels) - m["val_log_loss_uncalibrated"]) > 1e-5


@pytest.mark.slow
def test_quantized_predictions_within_tolerance_of_fp32(small_csv, tmp_path):
    """An fp32 LoRA run predicted with its base in 8-bit / 4-bit: probabilities within 0.02 /
    0.1 (absolute, per class) of the fp32 ones on these tiny random-weight models (measured
    about 0.003 / 0.04), and not identical (the base really is quantised); 4-bit in bf16 too."""
    from src.data.arena import read_pairs
    from src.pref.inference.ensemble import load_run
    from src.pref.inference.predict import predict_records
    out = tmp_path / "fp32"
    run(_cfg(small_csv, out, eval_every=0))
    recs = read_pairs(str(small_csv)).records[:24]
    ref = predict_records(load_run(out, device="cpu"), recs, device="cpu", precision="fp32").probs
    # bf16: the head is cast to it while the quantised base's pooled states come out fp32 (peft
    # upcasts norms and embeddings): before, "mat1 and mat2 must have the same dtype"
    for bits, tol, precision in (("8bit", 0.02, "fp32"), ("4bit", 0.1, "fp32"), ("4bit", 0.1, "bf16")):
        got = predict_records(load_run(out, quantize=bits, device="cpu", precision=precision), recs)
        assert got.stats["quantization"] == bits and got.stats["precision"] == precision
        diff = np.abs(got.probs - ref).max()
        assert 1e-6 < diff < tol, (bits, diff)


# --- refusals: one line, before any work -----------------------------------------------------------

def test_device_map_and_compute_dtype_per_device(monkeypatch):
    kw = qz.quantized_load_kwargs("4bit", "cpu", torch.float32)
    assert kw["device_map"] == {"": "cpu"}  # not 0: that means accelerator 0 to accelerate
    assert kw["quantization_config"].bnb_4bit_compute_dtype == torch.float32 and kw["dtype"] == torch.float32
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert qz.device_map("cuda") == {"": 2} and qz.device_map("cuda:1") == {"": 1}
    assert qz.device_map("xpu") == {"": "xpu:2"}


def test_the_probe_says_why_a_device_is_unsupported():
    assert qz.bnb_unsupported("cpu") is None
    why = qz.bnb_unsupported("tpu")
    assert why and "supports" in why and "\n" not in why
    if not torch.cuda.is_available():  # bitsandbytes lists cuda, but this torch has none: the probe finds out
        assert qz.bnb_unsupported("cuda") and "\n" not in qz.bnb_unsupported("cuda")


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_unsupported_device_is_refused_before_any_work(small_csv, tmp_path, monkeypatch, bits):
    monkeypatch.setattr(qz, "bnb_unsupported", lambda device_type: "no kernel for it")
    with pytest.raises(UsageError) as e:
        bb.load_backbone("tiny-llama", lora=bb.LoraSpec(), log=None, **BITS[bits])
    assert _one_line(e) == (f"--load-in-{bits}: bitsandbytes cannot run on this run's device cpu (no kernel for it); "
                            "drop the flag (full-precision LoRA) or use a device it supports")
    out = tmp_path / "run"
    with pytest.raises(UsageError, match=f"--load-in-{bits}: bitsandbytes cannot run"):
        run(_cfg(small_csv, out, **BITS[bits]))
    assert not out.exists()
