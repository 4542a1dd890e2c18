"""DPO (src/gen/dpo.py, src/gen/dpo_data.py) on the tiny in-process GPT-2:

- the loss equals TRL's DPOTrainer loss on the same batch, and a hand computation;
- pairs: only the final reply carries labels, the prompt is generation's prompt, ties
  and identical pairs are skipped and counted;
- with LoRA the reference is the adapter-free base, and no second model exists;
- bad input (no pairs, only identical pairs) is one line and leaves no run dir;
- interrupted + --resume ends where an uninterrupted DPO run ends (slow).
"""
from __future__ import annotations

import gc
import json
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from src.gen.config import GenConfig
from src.gen.dpo import batch_dpo, dpo_loss, pair_batch, reference_logps, sequence_logps
from src.gen.encode import IGNORE
from src.models.tiny import build_tiny_model, build_tiny_tokenizer

GOOD = ["I have been wondering about {t} since this morning.", "Let me tell you what I know about {t}.",
        "{t} is a fine topic, I am glad you asked."]
BAD = ["no.", "whatever.", "go ask someone else."]
TOPICS = ["the old map", "the harbour", "the storm", "the library", "the garden", "the train"]


def arena_csv(path: Path, n: int, *, ties: int = 0, identical: int = 0, seed: int = 0) -> Path:
    """An arena CSV whose winner is always the helpful reply (on a random side)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n + ties + identical):
        t = rng.choice(TOPICS)
        good, bad = rng.choice(GOOD).format(t=t), rng.choice(BAD)
        a_wins = rng.random() < 0.5
        a, b = (good, bad) if a_wins else (bad, good)
        label = (1, 0, 0) if a_wins else (0, 1, 0)
        if i >= n + ties:
            b, label = a, (1, 0, 0)
        elif i >= n:
            label = (0, 0, 1)
        rows.append({"id": 1000 + i, "model_a": "", "model_b": "", "prompt": json.dumps([f"Tell me about {t} #{i}."]),
                     "response_a": json.dumps([a]), "response_b": json.dumps([b]), "winner_model_a": label[0],
                     "winner_model_b": label[1], "winner_tie": label[2]})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


BASE = dict(model="tiny", device="cpu", precision="fp32", num_threads=1, progress=False, batch_size=8, max_len=96,
            sample_count=1, sample_max_new_tokens=8, seed=0, objective="dpo", val_frac=0.2, lora_r=4,
            lora_dropout=0.0, dropout=0.0)


def dpo_cfg(tmp: Path, name: str, data: Path, **kw) -> GenConfig:
    return GenConfig(**{**BASE, "data": str(data), "out": str(tmp / name), **kw})


# --- the loss ---------------------------------------------------------------------------------

def test_dpo_loss_matches_a_hand_computation():
    pc, pr, rc, rr = (torch.tensor(v) for v in ([-3.0, -10.0], [-5.0, -2.0], [-4.0, -9.0], [-4.0, -4.0]))
    losses, r_c, r_r = dpo_loss(pc, pr, rc, rr, beta=0.5)
    # pair 0: chosen ratio +1, rejected ratio -1 -> -log sigmoid(0.5 * 2)
    assert losses[0].item() == pytest.approx(math.log1p(math.exp(-1.0)))
    # pair 1: chosen ratio -1, rejected ratio +2 -> -log sigmoid(0.5 * -3)
    assert losses[1].item() == pytest.approx(math.log1p(math.exp(1.5)))
    assert r_c.tolist() == pytest.approx([0.5, -0.5]) and r_r.tolist() == pytest.approx([-0.5, 1.0])


def test_dpo_loss_equals_trls_on_the_same_batch(tmp_path):
    """TRL's DPOTrainer tokenises and collates a tiny dataset; the same ids, through this
    stage's collate and loss (with a separate frozen reference), give TRL's loss."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer
    tok = build_tiny_tokenizer()
    tok.add_special_tokens({"pad_token": "<|pad|>"})
    model = build_tiny_model(len(tok), tok.eos_token_id, seed=0).eval()
    ref = build_tiny_model(len(tok), tok.eos_token_id, seed=1).eval()  # a reference unlike the policy
    ds = Dataset.from_list([{"prompt": f"User: what about {t}?\nBot:", "chosen": " " + GOOD[k % 3].format(t=t),
                             "rejected": " " + BAD[k % 3]} for k, t in enumerate(TOPICS[:4])])
    args = DPOConfig(output_dir=str(tmp_path), beta=0.3, report_to=[], per_device_train_batch_size=4, use_cpu=True)
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=ds, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        want = float(trainer.compute_loss(model, batch))
    n = batch["input_ids"].shape[0] // 2  # TRL's layout: [chosen..., rejected...]
    seqs = []
    for ids, am, cm in zip(batch["input_ids"], batch["attention_mask"], batch["completion_mask"]):
        k = int(am.sum())
        seqs.append({"input_ids": ids[:k].numpy(), "labels": torch.where(cm.bool(), ids, IGNORE)[:k].numpy()})
    rows = [{"chosen": seqs[i], "rejected": seqs[n + i]} for i in range(n)]
    ours = batch_dpo(model, pair_batch(rows, tok.pad_token_id), 0.3, ref)
    got = float(ours["losses"].detach().mean())
    assert got == pytest.approx(want, rel=1e-5)
    assert got != pytest.approx(math.log(2), abs=1e-3)  # policy != reference: a real test


# --- pairs ------------------------------------------------------------------------------------

def test_pairs_label_only_the_final_reply_and_prompt_equals_generation(tmp_path):
    from src.data.chat import USER, ChatEpisode, Turn
    from src.gen.dpo_data import load_dpo_data, prompt_of
    from src.gen.encode import encode_prompt
    from src.gen.render import tokenize_config
    data = arena_csv(tmp_path / "p.csv", 30, ties=4, identical=3)
    d = load_dpo_data(dpo_cfg(tmp_path, "x", data))
    tok = d.tokenizer
    assert d.report["inputs"][0]["skipped"] == {"tie": 4, "identical": 3}
    totals = d.report["totals"]
    dropped = sum(sum(e["dropped"].values()) for e in d.report["filters_on_chosen"])
    assert totals["pairs_read"] == 30 and totals["pairs_after_filters"] == 30 - dropped - totals["duplicate_pairs"]
    assert totals["train_pairs"] + totals["val_pairs"] == totals["pairs_after_filters"] and totals["val_pairs"] > 0
    csv = pd.read_csv(data).set_index("id")
    for row in d.train + d.val:
        rec = csv.loc[int(row["id"].split(":")[1])]
        for side in ("chosen", "rejected"):
            ids, labels = row[side]["input_ids"], row[side]["labels"]
            trained = np.flatnonzero(labels != IGNORE)
            assert trained.size and (trained == np.arange(trained[0], len(ids))).all()  # one final run of labels
            assert ids[-1] == tok.eos_token_id and labels[-1] == tok.eos_token_id
            reply = tok.decode(ids[trained[0]:-1])
            a, b = json.loads(rec["response_a"])[0], json.loads(rec["response_b"])[0]
            winner, loser = (a, b) if rec["winner_model_a"] == 1 else (b, a)
            assert reply.strip() == (winner if side == "chosen" else loser)
        # the prompt DPO scores the replies after is the prompt generation builds for it
        ep = ChatEpisode(id="g", turns=[Turn(USER, json.loads(rec["prompt"])[0])])
        assert prompt_of(row) == encode_prompt(ep, tok, tokenize_config(d.meta["tokenize"]))


@pytest.mark.parametrize("ties,identical,why", [(12, 0, "12 tie"), (0, 12, "12 identical")])
def test_a_file_without_pairs_is_one_line_and_no_run_dir(tmp_path, capsys, ties, identical, why):
    from src.errors import UsageError
    from src.gen.train import run
    from src.train_gen import main
    data = arena_csv(tmp_path / "bad.csv", 0, ties=ties, identical=identical)
    with pytest.raises(UsageError, match=f"bad.csv: no preference pairs.*{why}"):
        run(dpo_cfg(tmp_path, "run", data))
    assert not (tmp_path / "run").exists()
    assert main(["--model", "tiny", "--objective", "dpo", "--data", str(data), "--out", str(tmp_path / "cli"),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and why in err
    assert not (tmp_path / "cli").exists()


# --- the reference ----------------------------------------------------------------------------

def _gpt2_models() -> int:
    from transformers import GPT2LMHeadModel
    gc.collect()
    return sum(isinstance(o, GPT2LMHeadModel) for o in gc.get_objects())


def test_lora_reference_is_the_adapter_free_base_with_no_second_model(tmp_path):
    from src.gen.dpo_data import load_dpo_data
    from src.gen.model import apply_lora, ensure_pad_token
    d = load_dpo_data(dpo_cfg(tmp_path, "x", arena_csv(tmp_path / "p.csv", 20)))
    tok = d.tokenizer
    base = build_tiny_model(tok.vocab_size, tok.eos_token_id, seed=0)
    ensure_pad_token(base, tok)
    batch = pair_batch(d.train[:4], tok.pad_token_id)
    tensors = {k: v for k, v in batch.items() if torch.is_tensor(v)}
    with torch.no_grad():
        base_logps = sequence_logps(base.eval(), tensors)
    before = _gpt2_models()
    model = apply_lora(base, dpo_cfg(tmp_path, "x", "p.csv", lora_r=4), [])
    with torch.no_grad():  # adapters that change the output: lora_B starts at zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.train()
    ref = reference_logps(model, tensors, None)
    torch.testing.assert_close(ref, base_logps, rtol=0, atol=1e-5)
    with torch.no_grad():
        assert (sequence_logps(model.eval(), tensors) - base_logps).abs().max() > 1e-2  # the policy differs
    model.train()
    reference_logps(model, tensors, None)
    assert model.training  # the reference pass put back the mode it found
    assert _gpt2_models() == before  # the base is wrapped in place: no second GPT-2 was made for the reference


# --- whole runs (slow) --------------------------------------------------------------------------

def _last_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(run_dir / "checkpoint" / "last" / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_dpo_resume_ends_where_an_uninterrupted_run_ends_and_it_learns(tmp_path, finetune):
    from src.gen.train import run
    data = arena_csv(tmp_path / "p.csv", 120)
    kw = dict(finetune=finetune, epochs=3, lr=5e-3 if finetune == "lora" else 2e-3, eval_every=6, beta=0.5)
    whole = run(dpo_cfg(tmp_path, "whole", data, **kw))
    first = run(dpo_cfg(tmp_path, "resumed", data, stop_after_steps=5, **kw))
    assert first == {"stopped_at_step": 5, "part": 0}
    resumed = run(dpo_cfg(tmp_path, "resumed", data, **kw), resume=True)
    a, b = _last_weights(tmp_path / "whole"), _last_weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    for key in ("eval_loss", "eval_pref_accuracy", "eval_reward_margin"):
        assert resumed[key] == pytest.approx(whole[key], abs=1e-6), key
    # at step 0 the policy is its reference (margin 0, loss log 2); DPO on a learnable preference separates them
    assert whole["initial_eval_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert whole["eval_pref_accuracy"] >= 0.9 and whole["eval_reward_margin"] > 0.5
    assert whole["eval_loss"] < 0.5 * math.log(2)
    d = tmp_path / "whole"
    report = json.loads((d / "data_report.json").read_text())
    assert report["totals"]["val_pairs"] == whole["eval_pairs"]
    evals = [r for ln in (d / "metrics.jsonl").read_text().splitlines() if (r := json.loads(ln))["kind"] == "eval"]
    assert {"eval_pref_accuracy", "eval_reward_margin", "eval_chosen_reward", "eval_rejected_reward"} <= set(evals[-1])
    # reply statistics of the logged samples: in every eval line (and before training), plotted
    assert {"sample_reply_tokens_mean", "sample_eos_share", "sample_repeat_share"} <= set(evals[-1])
    assert "initial_sample_reply_tokens_mean" in whole and (d / "plots" / "reply_stats.png").exists()
    samples = [json.loads(ln) for ln in (d / "samples.jsonl").read_text().splitlines()]
    assert [s["new_tokens"] for s in samples if s["step"] == evals[-1]["step"]] == [evals[-1]["sample_reply_tokens_mean"]]
    if finetune == "lora":  # the resume checkpoint holds only what trains
        assert all("lora_" in k or "trainable_tokens" in k for k in a), sorted(a)[:5]


# --- reply statistics ---------------------------------------------------------------------------

def test_ngram_runs_and_reply_stats():
    from src.gen.reply_stats import has_ngram_run, reply_stats
    assert has_ngram_run([5, 5, 5]) and has_ngram_run([1, 2, 3, 4, 2, 3, 4, 2, 3, 4, 9])
    assert not has_ngram_run([5, 5, 6, 5, 5]) and not has_ngram_run(list(range(40)))
    assert not has_ngram_run([1, 2, 1, 2, 3])  # twice in a row is not a run
    long_loop = list(range(9)) * 3  # a 9-gram loop is beyond the 8-token window
    assert not has_ngram_run(long_loop) and has_ngram_run(long_loop, max_n=9)
    s = reply_stats([[1, 2, 0], [7, 7, 7, 7], [3]], ["eos", "length", "eos"])
    assert s["sample_reply_tokens_mean"] == pytest.approx(8 / 3) and s["sample_reply_tokens_median"] == 3
    assert s["sample_eos_share"] == pytest.approx(2 / 3) and s["sample_repeat_share"] == pytest.approx(1 / 3)
    assert reply_stats([], []) == {}


def test_one_winner_over_several_losers_is_several_pairs_and_exact_copies_one(tmp_path):
    from src.gen.dpo_data import load_dpo_data
    rows = []
    for i, loser in enumerate(["no.", "whatever.", "go ask someone else.", "no."] * 3):
        rows.append({"id": i, "model_a": "", "model_b": "", "prompt": json.dumps([f"Tell me about the map {i // 4}."]),
                     "response_a": json.dumps(["Let me tell you what I know about the old map."]),
                     "response_b": json.dumps([loser]), "winner_model_a": 1, "winner_model_b": 0, "winner_tie": 0})
    pd.DataFrame(rows).to_csv(tmp_path / "p.csv", index=False)
    d = load_dpo_data(dpo_cfg(tmp_path, "x", tmp_path / "p.csv", val_frac=0.3))
    assert d.report["duplicate_pairs"] == 3  # the second "no." of each prompt
    assert d.report["totals"]["train_pairs"] + d.report["totals"]["val_pairs"] == 9


def test_sft_on_a_pairs_file_trains_the_preferred_side_of_max_rows_rows(tmp_path):
    from src.data.chat import BOT, read_chat
    from src.gen.train import prepare_config
    data = arena_csv(tmp_path / "p.csv", 30, ties=5)
    pc = prepare_config(GenConfig(**{**BASE, "objective": "sft", "data": str(data), "max_rows": 20}))
    result = read_chat(pc.input_specs[0])
    assert result.skipped["max_rows"] == 15 and result.ok_rows == 20  # the first 20 rows (no ties among them)
    csv = pd.read_csv(data).set_index("id")
    for ep in result.episodes:
        rec = csv.loc[int(ep.id.split(":")[1])]
        a, b = json.loads(rec["response_a"])[0], json.loads(rec["response_b"])[0]
        assert [t.text for t in ep.turns if t.role == BOT] == [a if rec["winner_model_a"] == 1 else b]
    sampled = prepare_config(GenConfig(**{**BASE, "objective": "sft", "data": str(data), "max_rows": 20,
                                          "max_rows_pick": "sample"}))
    picked = read_chat(sampled.input_specs[0])
    assert picked.skipped["max_rows"] == 15 and {e.id for e in picked.episodes} != {e.id for e in result.episodes}
