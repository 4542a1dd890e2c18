"""The engine's bitsandbytes pieces and device refusals: `--optim adamw8bit` (bitsandbytes
AdamW8bit, runs on x86-64 CPUs) trains and resumes exactly; it is refused in one line where
bitsandbytes cannot run (simulated: its probe fails); a DeepSpeed accelerate config on a CPU
run is refused in one line instead of silently training as plain DDP (no deepspeed install
needed: accelerate's launch variable is what the engine reads)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from src.engine.bnb import bnb_unsupported
from src.engine.checkpoint import load_resume_state
from src.errors import UsageError
from src.pref.config import PrefConfig
from src.pref.train import run
from tests.quant_helpers import one_line, tiny_lora_cfg, write_small_csv


_one_line, _cfg = one_line, tiny_lora_cfg


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory) -> Path:
    return write_small_csv(tmp_path_factory.mktemp("bnb_data"))


# --- the 8-bit optimizer ------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(bnb_unsupported("cpu") is not None, reason="bitsandbytes cannot run on this CPU")
def test_adamw8bit_trains_and_resumes_exactly(small_csv, tmp_path):
    kw = dict(optim="adamw8bit", eval_every=4)
    full = run(_cfg(small_csv, tmp_path / "full", **kw))
    part = _cfg(small_csv, tmp_path / "parts", stop_after_steps=5, **kw)
    assert "stopped_at_step" in run(part)
    state = load_resume_state(tmp_path / "parts" / "checkpoint" / "last")["optimizer"]
    def tensors(x):  # bitsandbytes nests its state under '__bnb_optimizer_quant_state__'
        if torch.is_tensor(x):
            yield x
        elif isinstance(x, dict):
            for v in x.values():
                yield from tensors(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                yield from tensors(v)
    # 8-bit moments for the tensors above bitsandbytes' 4096-element floor (the head's first layer)
    assert torch.uint8 in {t.dtype for t in tensors(state["state"])}
    resumed = run(replace(part, stop_after_steps=0), resume=True)
    for key in ("val_log_loss", "val_log_loss_uncalibrated", "best_step", "steps"):
        assert resumed[key] == pytest.approx(full[key], abs=1e-6), key
    evals = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    val = [e["val_log_loss_uncalibrated"] for e in evals if e["kind"] == "eval"]
    # it learns: the held-out loss ends below where it started and below the class prior (eval by eval
    # it may wobble: a 2-layer random decoder on 96 rows went 1.049, 1.071, 1.044 in a full-suite run)
    assert val[-1] < val[0] and val[-1] < full["val_log_loss_class_prior"], val


# --- refusals ---

def test_adamw8bit_where_bitsandbytes_cannot_run_is_refused(small_csv, tmp_path, monkeypatch):
    monkeypatch.setattr("src.engine.bnb.bnb_unsupported", lambda device_type: "no kernel for it")
    out = tmp_path / "run"
    with pytest.raises(UsageError) as e:
        run(_cfg(small_csv, out, optim="adamw8bit"))
    assert "--optim adamw8bit: bitsandbytes cannot run" in _one_line(e) and "--optim adamw" in str(e.value)
    assert not out.exists()


def test_deepspeed_config_on_cpu_is_refused_not_run_as_ddp(small_csv, tmp_path, monkeypatch):
    """`accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml` sets this variable;
    Accelerator(cpu=True) would drop the plugin and train plain DDP. No deepspeed install needed."""
    from src.engine.loop import make_accelerator
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    out = tmp_path / "run"
    with pytest.raises(UsageError) as e:
        run(_cfg(small_csv, out, device="cpu"))
    assert "DeepSpeed" in _one_line(e) and "plain DDP" in str(e.value)
    assert not out.exists()
    with pytest.raises(UsageError, match="DeepSpeed"):  # the generative stage builds its Accelerator here too
        make_accelerator(_cfg(small_csv, out, device="cpu"))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "false")
    make_accelerator(_cfg(small_csv, out, device="cpu"))  # without it: the ordinary CPU accelerator


def test_both_stages_take_the_optimizer_choice_and_default_to_adamw():
    """--optim is a TrainSettings knob: the classifier and the generative stage get it (flat
    key or flag), the default stays torch AdamW, an unknown optimizer is one line."""
    from src.config import from_dict
    from src.gen.config import GenConfig
    from src.engine.loop import make_optimizer
    for cls in (PrefConfig, GenConfig):
        assert from_dict(cls, {}).optim == "adamw"
        cfg = from_dict(cls, {"optim": "adamw8bit"})
        assert cfg.optim == "adamw8bit" and cfg.train.optim == "adamw8bit"
        with pytest.raises(UsageError, match="optim: 'sgd' is not one of adamw, adamw8bit"):
            from_dict(cls, {"optim": "sgd"})
    p = [torch.nn.Parameter(torch.zeros(8))]
    assert type(make_optimizer(from_dict(PrefConfig, {}), [{"params": p}], "cpu")) is torch.optim.AdamW
    if bnb_unsupported("cpu") is None:
        opt = make_optimizer(from_dict(PrefConfig, {"optim": "adamw8bit"}), [{"params": p}], "cpu")
        assert type(opt).__name__ == "AdamW8bit"
