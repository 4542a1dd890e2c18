"""LoRA decoder classifiers through the whole training path (tiny decoders, CPU):
interrupted + --resume equals uninterrupted, resume checkpoints hold adapters + head only,
2-process DDP equals single-process accumulation, --init-from warm-starts a LoRA run."""
from __future__ import annotations

import multiprocessing
import os
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
from src.models.tiny import tiny_decoder_path
from src.pref.inputs.collate import collate
from src.pref.config import PrefConfig
from src.pref.inputs.encode import encode_pairs
from src.pref.task import PrefTask
from src.pref.train import build, run

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
@pytest.mark.slow  # LoRA training runs (interrupted + resumed, warm start, forked DDP ranks)
def test_lora_interrupted_then_resumed_equals_uninterrupted(small_csv, tmp_path, family):
    # lora_dropout > 0 on purpose: resume must restore the RNG the adapters' dropout draws from
    # head_hidden 8: on a 2-layer, 64-wide base the head is a good part of what trains (r=2 adapters
    # 16 KB, a 16-wide head 18 KB against 398 KB of tiny-gemma2 weights); real bases are 10^4x larger
    kw = dict(model=family, lora_dropout=0.1, head_hidden=8)
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


@pytest.mark.slow  # LoRA training runs (interrupted + resumed, warm start, forked DDP ranks)
def test_two_cpu_processes_agree_with_single_process_accumulation_lora_decoder(small_csv, tmp_path):
    """DDP over gloo with a LoRA tiny decoder (frozen base, gradient checkpointing on, the
    default): 2 processes x 1 micro-batch == 1 process x 2 accumulated micro-batches.
    The ranks are forked from this process, not started by torchrun: three fresh interpreters
    cost ~75 s of imports on a loaded 2-core box, a fork none (the torchrun + CLI path is
    covered by the encoder test in test_pref_train.py). Each rank builds its own tiny-qwen2
    folder after the process group exists, as under torchrun."""
    cfg = _cfg(small_csv, tmp_path / "ddp", model="tiny-qwen2", lora_dropout=0.0, max_len=40, prompt_budget=10,
               batch_size=4, lr=5e-3, schedule="constant", warmup_ratio=0.0, stop_after_steps=2, seed=1,
               eval_every=0)
    port = _free_port()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_ddp_rank, args=(rank, 2, port, cfg, tmp_path / f"rank{rank}.err")) for rank in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    errors = "".join(f.read_text()[-1500:] for f in sorted(tmp_path.glob("rank*.err")))
    assert [p.exitcode for p in procs] == [0, 0], errors
    assert run(replace(cfg, out=str(tmp_path / "single"), grad_accum=2)) == {"stopped_at_step": 2}
    a = load_file(tmp_path / "ddp" / "checkpoint" / "last" / "model.safetensors")
    b = load_file(tmp_path / "single" / "checkpoint" / "last" / "model.safetensors")
    assert a.keys() == b.keys() and any("lora_B" in k for k in a) and not any("base_layer" in k for k in a)
    assert all(float(a[k].abs().max()) > 0 for k in a if "lora_B" in k)  # the adapters trained (peft starts B at 0)
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=2e-5, err_msg=k)


def _ddp_rank(rank: int, world: int, port: int, cfg: PrefConfig, err: Path) -> None:
    """One DDP rank in a forked child: torchrun's environment, fresh accelerate state, and no
    tiny folder inherited from the parent (each rank builds its own, as a torchrun rank does)."""
    import traceback
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    try:
        from accelerate.state import AcceleratorState
        import src.models.tiny as tiny
        AcceleratorState._reset_state(reset_partial_state=True)
        tiny._built.clear()
        out = run(cfg)
        assert out == {"stopped_at_step": 2}, out
        import torch.distributed as dist
        assert dist.is_initialized() and dist.get_world_size() == world
    except BaseException:
        err.write_text(f"rank {rank}:\n{traceback.format_exc()}")
        os._exit(1)
    os._exit(0)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lora_stage1(small_csv, tmp_path_factory) -> tuple[PrefConfig, Path]:
    """A short LoRA tiny-qwen2 run to warm-start from (its adapters have moved off peft's zero B)."""
    out = tmp_path_factory.mktemp("lora_stage1") / "stage1"
    first = _cfg(small_csv, out, model="tiny-qwen2", lora_dropout=0.0, eval_every=0, epochs=0.4)
    run(first)
    return first, out


@pytest.mark.slow  # LoRA training runs (interrupted + resumed, warm start, forked DDP ranks)
def test_init_from_a_lora_run_first_step_loss_equal_and_fresh_optimizer(small_csv, lora_stage1, tmp_path):
    first, stage1 = lora_stage1
    from src.pref.checkpoint import load_pref_checkpoint
    src_model, tok, _, _ = load_pref_checkpoint(stage1)
    assert any(float(v.abs().max()) > 0 for k, v in src_model.state_dict().items() if "lora_B" in k)
    second = replace(first, out=str(tmp_path / "stage2"), init_from=str(stage1), seed=11)
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
    assert run(replace(second, stop_after_steps=1)) == {"stopped_at_step": 1}
    state = load_resume_state(tmp_path / "stage2" / "checkpoint" / "last")
    assert state["progress"]["step"] == 1 and state["scheduler"]["last_epoch"] == 1
    assert all(float(s["step"]) == 1 for s in state["optimizer"]["state"].values())  # Adam from step 0


@pytest.mark.parametrize("change, match", [
    (dict(model="tiny-llama"), "base model 'tiny-qwen2'"),  # same module names and shapes: would load silently
    (dict(lora=False), "is a LoRA run"),
    (dict(lora_r=4), "lora_r is 2"),
    (dict(lora_alpha=8), "lora_alpha is 4"),
    (dict(lora_targets="q_proj,v_proj"), "lora_targets"),
])
def test_init_from_a_lora_run_refuses_another_base_or_adapter_shape(lora_stage1, tmp_path, change, match):
    first, stage1 = lora_stage1
    second = replace(first, out=str(tmp_path / "stage2"), init_from=str(stage1), **change)
    with pytest.raises(UsageError, match=f"--init-from .*{match}") as e:
        build(second)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "stage2").exists()
