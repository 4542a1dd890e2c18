"""Generative fine-tuning on the tiny in-process GPT-2 (CPU, one thread, seconds each):

- SFT and CLM runs write the run dir and perplexity falls;
- conditional EOS teaches the model to stop; pad == eos (padding masked by id) does not;
- LoRA and full runs resumed mid-way, or trained in parts, end exactly where an
  uninterrupted run ends; --skip-batches steps over a batch;
- a LoRA resume checkpoint holds only what trains;
- the merged LoRA model generates the same tokens as base + adapter.
"""
from __future__ import annotations

import csv
import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from src.gen.config import GenConfig
from src.gen.dataset import load_tokenized
from src.gen.train import run

pytestmark = pytest.mark.slow

BASE = dict(model="tiny", device="cpu", precision="fp32", num_threads=1, progress=False, batch_size=8,
            max_len=96, sample_count=1, sample_max_new_tokens=8, seed=0)


@pytest.fixture(scope="module")
def chat_data(tmp_path_factory) -> Path:
    """A small prepared chat dataset (synthetic, tiny tokenizer), shared by the runs."""
    from src.gen.prepare_chat import PrepareChatConfig, prepare
    out = tmp_path_factory.mktemp("gen") / "data"
    prepare(PrepareChatConfig(synthetic_episodes=80, tokenizer="tiny", val_frac=0.15,
                              tokenize={"max_len": 96}), str(out))
    return out


def cfg(tmp: Path, name: str, data: Path, **kw) -> GenConfig:
    return GenConfig(**{**BASE, "data": str(data), "out": str(tmp / name), **kw})


@pytest.mark.parametrize("objective", ["sft", "clm"])
def test_tiny_run_writes_the_run_dir_and_perplexity_falls(tmp_path, chat_data, objective):
    m = run(cfg(tmp_path, objective, chat_data, objective=objective, finetune="full", epochs=3, lr=3e-3, eval_every=8))
    d = tmp_path / objective
    for f in ("config.yaml", "metrics.jsonl", "metrics.json", "initial_eval.json", "val_losses.csv", "samples.jsonl",
              "plots/loss_curves.png", "plots/perplexity.png", "checkpoint/best/gen_checkpoint.json",
              "checkpoint/last/training_state.pt"):
        assert (d / f).exists(), f
    saved = json.loads((d / "metrics.json").read_text())
    assert {"eval_loss", "eval_perplexity", "train_tokens_per_s"} <= set(saved)
    assert saved["eval_perplexity"] < 0.25 * saved["initial_eval_perplexity"]
    assert 100 < saved["peak_rss_mb"] < 64 * 1024  # both stages record the process's peak memory
    assert m["eval_perplexity"] == pytest.approx(np.exp(m["eval_loss"]))
    lines = [r for ln in (d / "metrics.jsonl").read_text().splitlines() if (r := json.loads(ln))["kind"] == "eval"]
    assert len(lines) >= 2 and lines[-1]["eval_perplexity"] < lines[0]["eval_perplexity"]
    with open(d / "val_losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) >= {"id", "source", "tokens", "loss"} and len(rows) == saved["n_val"]
    losses = [float(r["loss"]) for r in rows]
    assert losses == sorted(losses, reverse=True)  # worst first
    samples = [json.loads(ln) for ln in (d / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {ln["step"] for ln in lines}
    # the loss is over label tokens (after the causal shift): responses only for SFT, everything for CLM
    val = load_tokenized(chat_data).val
    want = sum(int((r["labels"][1:] != -100).sum()) if objective == "sft" else len(r["input_ids"]) - 1 for r in val)
    assert saved["eval_tokens"] == want


def _one_exchange_rows(tok, eos_label: bool) -> list[dict]:
    from src.data.chat import BOT, USER, ChatEpisode, Turn
    from src.data.chat_synthetic import BOT_LINES, NAMES, PLACES, TOPICS, USER_LINES
    from src.gen import encode as E
    from src.gen import model as M
    from src.gen import render as R
    rng = random.Random(0)
    eps = []
    for i in range(192):
        t = rng.choice(TOPICS)
        reply = rng.choice(BOT_LINES).format(t=t, u=rng.choice(NAMES), p=rng.choice(PLACES))
        eps.append(ChatEpisode(id=f"e{i}", turns=[Turn(USER, rng.choice(USER_LINES).format(t=t)), Turn(BOT, reply)]))
    examples, _ = E.tokenize_episodes(eps, tok, R.tokenize_config({"max_len": 96}))
    rows = []
    for e in examples:
        ids, labels = np.array(e.input_ids), np.array(e.labels)
        if not eos_label:  # the old bug: pad == eos, and padding masked by id hides every EOS label
            labels[ids == tok.eos_token_id] = E.IGNORE
        rows.append({"input_ids": ids, "labels": labels, "id": e.id, "source": "s"})
    return rows


def _train_rows(tmp: Path, tok, model, rows: list[dict]):
    from src.engine.loop import make_accelerator, train
    from src.gen.task import GenTask
    c = GenConfig(**{**BASE, "finetune": "full", "lr": 6e-3, "batch_size": 16, "epochs": 4.0, "sample_count": 0})
    acc, _ = make_accelerator(c)
    train(c, GenTask(c, rows[:180], rows[180:], tok, tmp, "cpu"), model, tmp, acc)
    return model.eval()


def test_conditional_eos_stops_and_pad_equal_eos_never_does(tmp_path):
    from src.gen import encode as E
    from src.gen import model as M
    from src.gen import render as R
    from src.gen.sampling import generate, sampling_config
    from src.gen.task import response_start
    from src.models.tiny import build_tiny_model, build_tiny_tokenizer
    stops = {}
    for variant in ("conditional_eos", "pad_eq_eos"):
        tok = build_tiny_tokenizer()
        model = build_tiny_model(tok.vocab_size, tok.eos_token_id, seed=0)
        if variant == "conditional_eos":
            M.ensure_pad_token(model, tok)
        else:
            tok.pad_token = tok.eos_token
        rows = _one_exchange_rows(tok, eos_label=variant == "conditional_eos")
        model = _train_rows(tmp_path / variant, tok, model, rows)
        sc = sampling_config("greedy", max_new_tokens=32)
        gens = [generate(model, tok, r["input_ids"][:response_start(r["labels"])].tolist(), sc) for r in rows[180:]]
        stops[variant] = sum(g.stop_reason == "eos" for g in gens)
    assert stops["conditional_eos"] >= 10, stops  # of 12: it learned to end its reply
    assert stops["pad_eq_eos"] == 0, stops  # never saw EOS as a target: runs on to max_new_tokens


def _weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "checkpoint" / "last" / "model.safetensors"))


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_resume_and_parts_end_where_an_uninterrupted_run_ends(tmp_path, chat_data, finetune):
    kw = dict(finetune=finetune, epochs=2, lr=3e-3, eval_every=5, lora_r=4)
    whole = run(cfg(tmp_path, "whole", chat_data, **kw))
    first = run(cfg(tmp_path, "resumed", chat_data, stop_after_steps=7, **kw))
    assert first == {"stopped_at_step": 7, "part": 0}
    resumed = run(cfg(tmp_path, "resumed", chat_data, **kw), resume=True)
    run(cfg(tmp_path, "parts", chat_data, parts=3, part=1, **kw))
    run(cfg(tmp_path, "parts", chat_data, parts=3, part=2, **kw))
    parts = run(cfg(tmp_path, "parts", chat_data, parts=3, part=3, **kw))
    a = _weights(tmp_path / "whole")
    for other, m in (("resumed", resumed), ("parts", parts)):
        b = _weights(tmp_path / other)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=f"{other}: {k}")
        assert m["eval_loss"] == pytest.approx(whole["eval_loss"], abs=1e-6)
        assert m["steps"] == whole["steps"]
    if finetune == "lora":  # the resume checkpoint holds adapters and new token rows, not the frozen base
        assert all("lora_" in k or "trainable_tokens" in k for k in a), sorted(a)[:5]
    else:
        skipped = run(cfg(tmp_path, "skip", chat_data, stop_after_steps=7, **kw))
        assert skipped["stopped_at_step"] == 7
        skipped = run(replace(cfg(tmp_path, "skip", chat_data, **kw), skip_batches=1), resume=True)
        assert skipped["steps"] == whole["steps"] - 1


def test_parts_out_of_order_are_refused(tmp_path, chat_data):
    from src.gen.train import RunError
    with pytest.raises(RunError, match="finish part 1 first"):
        run(cfg(tmp_path, "p", chat_data, finetune="full", parts=2, part=2))


def test_merged_lora_generates_the_same_tokens(tmp_path, chat_data):
    from src.gen.checkpoint import load_checkpoint
    from src.gen.sampling import generate, sampling_config
    from src.train_gen import main
    run(cfg(tmp_path, "lora", chat_data, finetune="lora", epochs=1, lr=1e-2, lora_r=4, lora_dropout=0.0))
    assert main(["--merge", str(tmp_path / "lora")]) == 0
    adapter, tok, meta = load_checkpoint(tmp_path / "lora" / "checkpoint" / "best")
    merged, tok2, meta2 = load_checkpoint(tmp_path / "lora" / "merged")
    assert meta["finetune"] == "lora" and meta2["finetune"] == "full"
    assert any(float(p.abs().sum()) > 0 for n, p in adapter.named_parameters() if "lora_B" in n)  # it did train
    ids = tok("Lilah: What do you think about the old map?\nMarcus: ")["input_ids"]
    sc = sampling_config("greedy", max_new_tokens=24)
    out_a = generate(adapter.eval(), tok, ids, sc).token_ids
    out_m = generate(merged.eval(), tok2, ids, sc).token_ids
    assert out_a == out_m
    with torch.no_grad():
        x = torch.tensor([ids])
        torch.testing.assert_close(adapter(input_ids=x).logits, merged(input_ids=x).logits, rtol=1e-4, atol=1e-4)


def test_two_processes_equal_one_process_accumulating_two_micro_batches(tmp_path, chat_data):
    """DDP over gloo (torchrun): 2 processes x 1 micro-batch == 1 process x 2 accumulated
    micro-batches. Micro-batches hold different numbers of label tokens, so this holds only
    when the loss is normalised by the label tokens of the whole window, across processes."""
    import os
    import socket
    import subprocess
    import sys
    repo = Path(__file__).resolve().parents[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = ["--model", "tiny", "--data", str(chat_data), "--full", "--device", "cpu", "--precision", "fp32",
              "--batch-size", "4", "--stop-after-steps", "3", "--lr", "1e-2", "--schedule", "constant",
              "--warmup-ratio", "0", "--dropout", "0", "--sample-count", "0", "--progress", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(port), "-m", "src.train_gen", *common, "--out", str(tmp_path / "ddp")],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "src.train_gen", *common, "--grad-accum", "2",
                             "--out", str(tmp_path / "single")], cwd=repo, env=env, capture_output=True, text=True,
                            timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "single")
    init = json.loads((tmp_path / "single" / "initial_eval.json").read_text())
    assert json.loads((tmp_path / "ddp" / "initial_eval.json").read_text())["eval_loss"] == pytest.approx(init["eval_loss"])
    from src.models.tiny import build_tiny_model
    tok = load_tokenized(chat_data).tokenizer()
    start = build_tiny_model(tok.vocab_size, tok.eos_token_id, seed=0).state_dict()
    key = "transformer.h.0.attn.c_attn.weight"
    assert (a[key] - start[key]).abs().max() > 1e-3  # it did train
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=2e-5, msg=k)
