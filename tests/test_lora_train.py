"""LoRA decoder classifiers through the whole training path (tiny decoders, CPU):
interrupted + --resume equals uninterrupted, resume checkpoints hold adapters + head only,
2-process DDP equals single-process accumulation, --init-from warm-starts a LoRA run."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from src.data.arena import read_pairs
from src.data.synthetic import make_rows, write_csv
from src.engine.checkpoint import load_resume_state
from src.errors import UsageError
from src.gen.tiny import tiny_decoder_path
from src.pref.collate import collate
from src.pref.config import PrefConfig
from src.pref.encode import encode_pairs
from src.pref.task import PrefTask
from src.pref.train import build, run

REPO = Path(__file__).resolve().parents[1]
LORA = dict(lora=True, lora_r=2, lora_alpha=4, lora_lr_mult=0.5)


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lora_data") / "train.csv"
    write_csv(make_rows(120, seed=7), path)
    return path


def _cfg(data, out, **kw) -> PrefConfig:
    base = dict(model="tiny-llama", data=str(data), out=str(out), arch="siamese", max_len=48, prompt_budget=12,
                batch_size=8, epochs=1, lr=2e-3, head_lr_mult=5, head_hidden=16, head_dropout=0.0, select_frac=0.0,
                precision="fp32", progress=False, eval_every=4, seed=3, **LORA)
    base.update(kw)
    return PrefConfig(**base)


def _base_bytes(name: str) -> int:
    return os.path.getsize(Path(tiny_decoder_path(name)) / "model.safetensors")


@pytest.mark.parametrize("family", ["tiny-llama", "tiny-gemma2"])
def test_lora_interrupted_then_resumed_equals_uninterrupted(small_csv, tmp_path, family):
    # lora_dropout > 0 on purpose: resume must restore the RNG the adapters' dropout draws from
    kw = dict(model=family, lora_dropout=0.1)
    full = run(_cfg(small_csv, tmp_path / "full", **kw))
    part = _cfg(small_csv, tmp_path / "parts", stop_after_steps=6, **kw)  # mid-epoch, off the eval grid (4)
    assert "stopped_at_step" in run(part)
    last = tmp_path / "parts" / "checkpoint" / "last"
    # the resume checkpoint holds what trains (adapters + head + its buffers), not the frozen base
    saved = load_file(last / "model.safetensors")
    assert saved and all("lora_" in k or not k.startswith("encoder.") for k in saved), sorted(saved)[:5]
    assert any("lora_A" in k for k in saved) and any(k.startswith("head.") for k in saved)
    assert os.path.getsize(last / "model.safetensors") < _base_bytes(family) / 10
    # adapters and head learn at their own rates (--lora-lr-mult, --head-lr-mult)
    lrs = sorted({g["initial_lr"] for g in load_resume_state(last)["optimizer"]["param_groups"]})
    assert lrs == pytest.approx([2e-3 * 0.5, 2e-3 * 5])

    resumed = run(replace(part, stop_after_steps=0), resume=True)
    for key in ("val_log_loss", "val_log_loss_uncalibrated", "val_accuracy", "best_step", "steps"):
        assert resumed[key] == pytest.approx(full[key], abs=1e-6), key
    for which in ("last", "best"):
        a = load_file(tmp_path / "full" / "checkpoint" / which / "model.safetensors")
        b = load_file(tmp_path / "parts" / "checkpoint" / which / "model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=1e-6, err_msg=f"{which}: {k}")
    b_final = load_file(tmp_path / "full" / "checkpoint" / "last" / "model.safetensors")
    assert any(float(v.abs().max()) > 0 for k, v in b_final.items() if "lora_B" in k)  # adapters did train


def test_two_cpu_processes_agree_with_single_process_accumulation_lora_decoder(small_csv, tmp_path):
    """DDP over gloo with a LoRA tiny decoder (frozen base, gradient checkpointing on, the
    default): 2 processes x 1 micro-batch == 1 process x 2 accumulated micro-batches."""
    common = ["--model", "tiny-qwen2", "--lora", "true", "--lora-r", "2", "--lora-alpha", "4",
              "--lora-dropout", "0", "--data", str(small_csv), "--max-len", "40",
              "--prompt-budget", "10", "--batch-size", "4", "--head-hidden", "16", "--precision", "fp32",
              "--head-dropout", "0", "--progress", "false", "--stop-after-steps", "2", "--seed", "1",
              "--lr", "5e-3", "--schedule", "constant", "--warmup-ratio", "0", "--select-frac", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(_free_port()), "-m", "src.train_pref", *common, "--out", str(tmp_path / "ddp")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "2 process(es)" in ddp.stdout, ddp.stdout[-2000:]
    single = subprocess.run([sys.executable, "-m", "src.train_pref", *common, "--grad-accum", "2",
                             "--out", str(tmp_path / "single")], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    a = load_file(tmp_path / "ddp" / "checkpoint" / "last" / "model.safetensors")
    b = load_file(tmp_path / "single" / "checkpoint" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and any("lora_B" in k for k in a) and not any("base_layer" in k for k in a)
    lora_b = [k for k in a if "lora_B" in k]
    assert all(float(a[k].abs().max()) > 0 for k in lora_b)  # it did train the adapters (peft starts B at 0)
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=2e-5, err_msg=k)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_init_from_a_lora_run_first_step_loss_equal_and_fresh_optimizer(small_csv, tmp_path):
    first = _cfg(small_csv, tmp_path / "stage1", model="tiny-qwen2", lora_dropout=0.0, eval_every=0)
    run(first)
    from src.pref.checkpoint import load_pref_checkpoint
    src_model, tok, _, _ = load_pref_checkpoint(tmp_path / "stage1")
    second = replace(first, out=str(tmp_path / "stage2"), init_from=str(tmp_path / "stage1"), seed=11)
    warm, _ = build(second)
    cold, _ = build(replace(second, init_from=""))
    a, b = src_model.state_dict(), warm.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # adapters, head, buffers, base
    recs = read_pairs(small_csv).records[:8]
    enc = encode_pairs(recs, tok, arch="siamese", max_len=48, prompt_budget=12)
    task = PrefTask(second, enc, enc, tok, "cpu")
    batch = collate(enc, list(range(8)), True)
    with torch.no_grad():
        l_src, l_warm, l_cold = (float(task.loss(m.eval(), batch)[0]) for m in (src_model, warm, cold))
    assert l_warm == pytest.approx(l_src, rel=1e-6)
    assert abs(l_cold - l_src) > 1e-3  # fresh adapters + head are not that run
    # the warm-started run trains with its own fresh optimizer and schedule
    m = run(replace(second, stop_after_steps=1))
    state = load_resume_state(tmp_path / "stage2" / "checkpoint" / "last")
    assert m == {"stopped_at_step": 1} and state["progress"]["step"] == 1 and state["scheduler"]["last_epoch"] == 1
    assert all(s["step"] == 1 for s in state["optimizer"]["state"].values())  # Adam moments from step 0, not stage 1's


@pytest.mark.parametrize("change, match", [
    (dict(model="tiny-llama"), "base model"),
    (dict(lora=False), "LoRA"),
    (dict(lora_r=4), "lora_r"),
])
def test_init_from_a_lora_run_refuses_another_base_or_adapter_shape(small_csv, tmp_path, change, match):
    first = _cfg(small_csv, tmp_path / "stage1", model="tiny-qwen2", lora_dropout=0.0, eval_every=0, epochs=0.2)
    run(first)
    second = replace(first, out=str(tmp_path / "stage2"), init_from=str(tmp_path / "stage1"), **change)
    with pytest.raises(UsageError, match=f"--init-from .*{match}") as e:
        build(second)
    assert "\n" not in str(e.value)
