"""Sampling: presets, the contrastive-search gate, stop strings, reply extraction,
chat prompts within a context budget, suppressed tokens, and the generate CLI.
Everything runs on the untrained tiny model (fast, offline)."""
from __future__ import annotations

import copy
import io
import json

import pytest
import torch

from src.data.chat import BOT, USER, Turn
from src.gen import sampling as S
from src.gen.encode import build_prompt
from src.gen.model import ensure_pad_token
from src.gen.render import tokenize_config
from src.models.tiny import build_tiny


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    model, tok = build_tiny(seed=0)
    ensure_pad_token(model, tok)
    return model.eval(), tok


def test_presets_and_overrides():
    sc = S.sampling_config("logbook-1")
    assert (sc.temperature, sc.top_p, sc.top_k, sc.repetition_penalty, sc.max_new_tokens) == (1.0, 0.9, 0, 1.05, 196)
    sc = S.sampling_config("logbook-sft", temperature=0.7, top_k=None)
    assert (sc.temperature, sc.top_p, sc.top_k, sc.repetition_penalty) == (0.7, 0.9, 40, 1.03)
    with pytest.raises(ValueError, match="unknown sampling preset"):
        S.sampling_config("nope")
    with pytest.raises(ValueError):
        S.sampling_config(None, temperature=0)


def test_generate_kwargs_carry_every_knob(tiny):
    _, tok = tiny
    kw = S.generate_kwargs(S.sampling_config("typical", repetition_penalty=1.2, max_new_tokens=7), tok, 576)
    assert kw["do_sample"] and kw["typical_p"] == 0.95 and kw["top_k"] == 0 and kw["repetition_penalty"] == 1.2
    assert kw["max_new_tokens"] == 7 and kw["eos_token_id"] == tok.eos_token_id
    # the pad token and the rows that only round the embedding matrix up are never produced
    assert kw["suppress_tokens"] == [tok.pad_token_id] + list(range(len(tok), 576))
    greedy = S.generate_kwargs(S.sampling_config("greedy"), tok)
    assert greedy["do_sample"] is False and "temperature" not in greedy


def test_contrastive_is_gated(tiny):
    _, tok = tiny
    sc = S.sampling_config("contrastive")
    if S.contrastive_supported():
        assert S.generate_kwargs(sc, tok)["penalty_alpha"] == 0.6
    else:
        with pytest.raises(S.SamplingError, match="contrastive search.*transformers"):
            S.generate_kwargs(sc, tok)


@pytest.mark.parametrize("raw, stop, at_length, want, stopped", [
    (" Hello there.\nYou: and you?", ["\nYou:"], False, "Hello there.", True),
    ("Hi!\nYo", ["\nYou:"], True, "Hi!", False),  # ran out of tokens inside the stop string
    ("Hi!\nYo", ["\nYou:"], False, "Hi!\nYo", False),
    (" Bot: I am fine", ["\nYou:"], False, "I am fine", False),  # repeated own name prefix
    ("a\nB: x\nYou: y", ["\nYou:", "\nB:"], False, "a", True),  # the earliest stop wins
])
def test_cut_reply(raw, stop, at_length, want, stopped):
    assert S.cut_reply(raw, stop, "Bot", at_length=at_length) == (want, stopped)


def test_same_seed_same_reply_and_training_rng_untouched(tiny):
    model, tok = tiny
    ids = tok("Lilah: hello there\nBot: ")["input_ids"]
    sc = S.sampling_config("logbook-1", max_new_tokens=12, seed=3)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = S.generate(model, tok, ids, sc), S.generate(model, tok, ids, sc)
    assert torch.equal(before, torch.get_rng_state())
    assert a.token_ids == b.token_ids and len(a.token_ids) <= 12


def test_stops_at_a_stop_string(tiny):
    model, tok = tiny
    ids = tok("Marcus: what do you think?\nBot: ")["input_ids"]
    free = S.generate(model, tok, ids, S.sampling_config("greedy", max_new_tokens=24))
    assert free.stop_reason == "length" and len(free.raw) > 12
    stop = free.raw[8:12]  # some text the model will produce again
    cut = S.generate(model, tok, ids, S.sampling_config("greedy", max_new_tokens=24, stop=[stop]))
    assert cut.stop_reason == "stop_string" and len(cut.token_ids) < len(free.token_ids)
    assert cut.text == free.raw[:free.raw.find(stop)].strip()
    # the reply is the decoded *new* tokens: nothing of the prompt leaks into it
    assert cut.raw == tok.decode(cut.token_ids)


def test_suppressed_tokens_never_appear(tiny):
    model, tok = tiny
    model = copy.deepcopy(model)
    with torch.no_grad():  # every hidden state becomes v; the pad row and a rounding row score |v|^2 * 10
        v = torch.randn(model.config.n_embd)
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(v)
        head = model.get_output_embeddings().weight
        head[tok.pad_token_id] = 10 * v
        head[len(tok) + 3] = 9 * v
    ids = tok("hi")["input_ids"]
    plain = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=3, do_sample=False,
                           pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[0, len(ids):].tolist()
    assert plain == [tok.pad_token_id] * 3  # what an unguarded sampler produces
    g = S.generate(model, tok, ids, S.sampling_config("greedy", max_new_tokens=3))
    assert tok.pad_token_id not in g.token_ids and all(t < len(tok) for t in g.token_ids)


def _session(tok, **kw) -> S.ChatSession:
    return S.ChatSession(tok, tokenize_config({}), persona="Aiko is a shy baker.", scenario="A rainy harbour.",
                         bot_name="Aiko", user_name="You", **kw)


def test_chat_prompt_ends_with_the_bot_prefix_and_keeps_the_user_message(tiny):
    _, tok = tiny
    s = _session(tok)
    s.history = [Turn(USER, "Hello."), Turn(BOT, "Hi, welcome in.")]
    ids, dropped = s.prompt("Do you sell bread, or only cakes?", max_new_tokens=32)
    text = tok.decode(ids)
    assert dropped == 0
    assert text.startswith("Aiko's Persona: Aiko is a shy baker.\nScenario: A rainy harbour.\n<START>\n")
    assert text.endswith("You: Do you sell bread, or only cakes?\nAiko: ")
    assert s.stop_strings() == ["\nYou:"]


def test_chat_prompt_fits_the_context_budget(tiny):
    _, tok = tiny
    s = _session(tok, max_context=160)
    for k in range(40):
        s.history += [Turn(USER, f"Question number {k} about the old map?"), Turn(BOT, f"Answer {k}: it is old.")]
    ids, dropped = s.prompt("And the last question?", max_new_tokens=32)
    text = tok.decode(ids)
    assert len(ids) <= 160 - 32 and dropped > 0
    assert text.startswith("Aiko's Persona:")  # persona and scenario stay
    assert "Answer 39: it is old." in text and "Question number 0 " not in text  # the newest turns stay
    assert text.endswith("You: And the last question?\nAiko: ")
    # a budget smaller than the persona plus the last exchange keeps the newest tokens
    tight, _ = build_prompt(s.episode("And the last question?"), tok, s.tok_cfg, budget=12)
    assert len(tight) == 12 and tok.decode(tight).endswith("Aiko: ")


def test_chat_reply_updates_history(tiny):
    model, tok = tiny
    s = _session(tok)
    g = s.reply(model, "Hello?", S.sampling_config("greedy", max_new_tokens=8))
    assert [t.role for t in s.history] == [USER, BOT] and s.history[1].text == g.text
    assert "\nYou:" not in g.text


def test_generate_cli_prompt_and_chat(capsys, monkeypatch):
    from src.generate import main
    assert main(["--run", "tiny", "--preset", "greedy", "--max-new-tokens", "6", "--prompt", "Hello?", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["prompt"] == "Hello?" and out["stop_reason"] in ("eos", "stop_string", "length")
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\n/reset\nHow are you?\n"))
    assert main(["--run", "tiny", "--chat", "--bot-name", "Aiko", "--max-new-tokens", "5"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "Aiko: " in ln]
    assert len(lines) == 2
    assert main(["--run", "tiny", "--preset", "contrastive", "--prompt", "hi"]) == (0 if S.contrastive_supported() else 2)


def test_batched_replies_equal_one_by_one_greedy(tiny):
    """generate_batch left-pads prompts of different lengths: each greedy reply is the one
    `generate` gives that prompt alone (the padding never leaks into a reply)."""
    model, tok = tiny
    prompts = [tok("Hello there, how are you today?")["input_ids"], tok("Hi")["input_ids"],
               tok("Tell me about the old map in the attic, please.")["input_ids"]]
    assert len({len(p) for p in prompts}) == 3
    sc = S.sampling_config("greedy", max_new_tokens=12)
    alone = [S.generate(model, tok, p, sc) for p in prompts]
    batched = S.generate_batch(model, tok, prompts, sc, batch_size=3)
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    assert [g.stop_reason for g in batched] == [g.stop_reason for g in alone]
    # sampled: same seed, same replies, whatever the batch split
    sc = S.sampling_config("logbook-sft", max_new_tokens=8, seed=3)
    assert [g.token_ids for g in S.generate_batch(model, tok, prompts, sc, batch_size=3)] == \
        [g.token_ids for g in S.generate_batch(model, tok, prompts, sc, batch_size=3)]
    with pytest.raises(ValueError, match="stop strings"):
        S.generate_batch(model, tok, prompts, S.sampling_config("greedy", stop=["\nYou:"]))
