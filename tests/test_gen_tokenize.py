"""Tokenisation for causal LMs, with the tiny in-process tokenizer and model.

Property tests: no prompt token carries a label; EOS is present iff the end was not
cut; every example fits and has a trainable token; pad != eos with embeddings sized
to a multiple of 64; packing does not let examples see each other."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from src.data.chat import BOT, USER, ChatEpisode, Turn
from src.gen import collate as C
from src.gen import dataset as D
from src.gen import encode as E
from src.gen import model as M
from src.gen import render as R
from src.models.tiny import build_tiny, build_tiny_tokenizer, load_tiny, save_tiny

# Texts are drawn from disjoint alphabets, so a decoded token shows where it came from.
BOT_ALPHA = "abcdef ghijk.!é"
PROMPT_ALPHA = "UVWXYZ 0123?Ж"
NAMES = st.sampled_from(["Q", "Rr", "Sss"])


@pytest.fixture(scope="module")
def tok():
    t = build_tiny_tokenizer()
    M.ensure_pad_token(None, t)
    return t


@pytest.fixture(scope="module")
def chat_tok():
    t = build_tiny_tokenizer(chat_template=True)
    M.ensure_pad_token(None, t)
    return t


def cfg(**kw) -> R.TokenizeConfig:
    fmt = {"persona": "P{bot}: {persona}\n", "scenario": "S: {scenario}\n", "start": "<START>\n",
           "user_turn": "{name}: {text}\n", "bot_prefix": "{name}: ", "bot_suffix": "\n"}
    return R.tokenize_config({"prompt_format": fmt, **kw})


def episode(turns, persona="", scenario="", bot="Q", user="Rr", eid="e", source="s", group="") -> ChatEpisode:
    return ChatEpisode(id=eid, turns=[Turn(r, t) for r, t in turns], persona=persona, scenario=scenario,
                       bot_name=bot, user_name=user, source=source, group_id=group)


turn_st = st.one_of(st.tuples(st.just(USER), st.text(PROMPT_ALPHA, min_size=1, max_size=40)),
                    st.tuples(st.just(BOT), st.text(BOT_ALPHA, min_size=1, max_size=60).filter(str.strip)))
episode_st = st.builds(
    lambda turns, persona, scenario: episode(turns, persona, scenario),
    st.lists(turn_st, min_size=1, max_size=7).filter(lambda ts: any(r == BOT for r, _ in ts)),
    st.text(PROMPT_ALPHA, max_size=50), st.text(PROMPT_ALPHA, max_size=30))


def decode(tok, ids) -> str:
    return tok.decode([int(i) for i in ids])


# --- the label and EOS invariants ------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(episode_st, st.integers(8, 120), st.sampled_from(R.OVER_LENGTH), st.sampled_from(["all_bot", "last_bot"]))
def test_labels_eos_and_length_invariants(tok, ep, max_len, policy, train_on):
    c = cfg(max_len=max_len, over_length=policy, train_on=train_on)
    examples, rep = E.tokenize_episodes([ep], tok, c)
    assert rep["in"] == rep["out"] + sum(rep["dropped"].values()) == 1
    if not examples:
        assert set(rep["dropped"]) <= {"too_long", "no_trainable_tokens"}
        assert policy == "drop" or "no_trainable_tokens" in rep["dropped"]
        return
    (ex,) = examples
    ids, labels, eos = ex.input_ids, ex.labels, tok.eos_token_id
    assert len(ids) == len(labels) <= max_len
    assert all(lab in (E.IGNORE, i) for i, lab in zip(ids, labels))
    assert any(lab != E.IGNORE for lab in labels)
    # EOS iff not truncated, checked by id; EOS nowhere else.
    assert (labels[-1] == eos and ids[-1] == eos) == (not ex.truncated)
    assert eos not in ids[:-1]
    if ex.truncated:
        assert len(ids) == max_len  # cut exactly at the limit
    # No prompt token carries a label: every labelled token decodes to bot-alphabet text.
    trained = decode(tok, [i for i, lab in zip(ids, labels) if lab != E.IGNORE and i != eos])
    if ex.truncated:  # a cut can split a multi-byte character ('é') at the very end
        trained = trained.rstrip("\ufffd")
    assert set(trained) <= set(BOT_ALPHA) | {"\n"}
    # ...and every bot token that is a target is labelled: untruncated, untrimmed -> the exact targets.
    if not ex.truncated and not ex.trimmed:
        bots = [t.text for t in ep.turns if t.role == BOT]
        expected = "\n".join(bots) if train_on == "all_bot" else bots[-1]
        assert trained == expected
        assert decode(tok, ids[:-1]).endswith(bots[-1])


@settings(max_examples=60, deadline=None)
@given(episode_st)
def test_all_tokens_mode_labels_everything(tok, ep):
    (ex,), _ = E.tokenize_episodes([ep], tok, cfg(labels="all", max_len=4096))
    assert ex.labels == ex.input_ids and ex.input_ids[-1] == tok.eos_token_id


@settings(max_examples=40, deadline=None)
@given(episode_st)
def test_chat_template_path_masks_the_prompt(chat_tok, ep):
    examples, rep = E.tokenize_episodes([ep], chat_tok, cfg(template="chat_template", max_len=4096))
    if not examples:  # only a greeting: it becomes system context, nothing is left to learn
        assert rep["dropped"] == {"no_bot_turn": 1} and ep.turns[0].role == BOT
        assert all(t.role == BOT for t in ep.turns[:max(i for i, t in enumerate(ep.turns) if t.role == BOT)])
        return
    (ex,) = examples
    trained = decode(chat_tok, [i for i, lab in zip(ex.input_ids, ex.labels) if lab not in (E.IGNORE, chat_tok.eos_token_id)])
    assert set(trained) <= set(BOT_ALPHA) | {"\n"}
    full = chat_tok.apply_chat_template(R.chat_messages(ep), tokenize=False)
    assert decode(chat_tok, ex.input_ids[:-1]) == full  # same text as the template renders at once
    assert ex.labels[-1] == chat_tok.eos_token_id


def test_auto_template_and_unstable_template(tok, chat_tok):
    assert R.uses_chat_template(chat_tok, cfg(template="auto"))
    assert not R.uses_chat_template(tok, cfg(template="auto"))
    with pytest.raises(R.TemplateError, match="no chat template"):
        R.uses_chat_template(tok, cfg(template="chat_template"))
    bad = copy.deepcopy(chat_tok)
    # A template that rewrites earlier turns (like ones that strip old reasoning) cannot be segmented.
    bad.chat_template = "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(R.TemplateError, match="prefix-stable"):
        E.tokenize_episodes([episode([(USER, "hi"), (BOT, "yo")])], bad, cfg(template="chat_template"))


def test_plain_render_and_prompt_for_generation(tok, chat_tok):
    ep = episode([(USER, "UV"), (BOT, "ab"), (USER, "XY"), (BOT, "cd"), (USER, "trailing")], persona="PX",
                 scenario="SC")
    (ex,), _ = E.tokenize_episodes([ep], tok, cfg())
    text = decode(tok, ex.input_ids)
    assert text == "PQ: PX\nS: SC\n<START>\nRr: UV\nQ: ab\nRr: XY\nQ: cd" + tok.eos_token  # trailing user turn dropped
    # The generation stage renders the prompt the same way: it ends with the bot prefix.
    history = episode([(t.role, t.text) for t in ep.turns[:3]], persona="PX", scenario="SC")
    assert E.render_prompt(history, tok, cfg()) == "PQ: PX\nS: SC\n<START>\nRr: UV\nQ: ab\nRr: XY\nQ: "
    # Prompt ids for generation are the training ids up to the response, token for token.
    prompt_ids = E.encode_prompt(history, tok, cfg())
    assert ex.input_ids[:len(prompt_ids)] == prompt_ids
    assert decode(tok, ex.input_ids[len(prompt_ids):]) == "cd" + tok.eos_token
    assert all(lab == E.IGNORE for lab in ex.labels[len(prompt_ids) - 6:len(prompt_ids)])
    # The same holds through a chat template.
    c_cfg = cfg(template="chat_template", train_on="last_bot")
    (cx,), _ = E.tokenize_episodes([ep], chat_tok, c_cfg)
    c_ids = E.encode_prompt(history, chat_tok, c_cfg)
    assert cx.input_ids[:len(c_ids)] == c_ids and all(lab == E.IGNORE for lab in cx.labels[:len(c_ids)])
    assert decode(chat_tok, cx.input_ids[len(c_ids):]).startswith("cd")
    with pytest.raises(ValueError, match="nothing to continue"):
        E.encode_prompt(episode([(BOT, "hello")]), chat_tok, cfg(template="chat_template"))
    # Default names where an episode has none.
    (ex2,), _ = E.tokenize_episodes([episode([(USER, "x"), (BOT, "y")], bot=None, user=None)], tok, R.TokenizeConfig())
    assert decode(tok, ex2.input_ids).startswith("User: x\nBot: y")


# --- over-length policies --------------------------------------------------------------------

def long_episode(n_exchanges=12) -> ChatEpisode:
    turns = []
    for i in range(n_exchanges):
        turns += [(USER, f"question {i} " + "UVW " * 5), (BOT, f"answer {i} " + "abc " * 5)]
    return episode(turns, persona="a persona " * 10)


def test_truncate_left_keeps_the_final_answer_and_eos(tok):
    ep = long_episode()
    full_len = len(E.tokenize_episodes([ep], tok, cfg(max_len=4096))[0][0].input_ids)
    (ex,), rep = E.tokenize_episodes([ep], tok, cfg(max_len=full_len // 2, over_length="truncate_left"))
    text = decode(tok, ex.input_ids)
    assert ex.trimmed and not ex.truncated and rep["trimmed"] == 1
    assert text.endswith("answer 11 " + "abc " * 5 + tok.eos_token)
    assert "question 11" in text and "question 0 " not in text  # oldest turns go first
    assert text.startswith("PQ: a persona")  # the persona header is kept while it fits
    assert len(ex.input_ids) <= full_len // 2


def test_truncate_left_when_only_the_last_answer_fits(tok):
    ep = episode([(USER, "U" * 200), (BOT, "abc abc")], persona="X" * 100)
    (ex,), _ = E.tokenize_episodes([ep], tok, cfg(max_len=20, over_length="truncate_left"))
    assert ex.trimmed and not ex.truncated and decode(tok, ex.input_ids).endswith("Q: abc abc" + tok.eos_token)
    ep = episode([(USER, "hi"), (BOT, "abc " * 200)])
    (ex,), _ = E.tokenize_episodes([ep], tok, cfg(max_len=30, over_length="truncate_left"))
    assert ex.truncated and len(ex.input_ids) == 30 and ex.input_ids[-1] != tok.eos_token_id


def test_drop_and_right_truncation_and_no_trainable_tokens(tok):
    eps = [long_episode(), episode([(USER, "hi"), (BOT, "ab")], eid="short")]
    kept, rep = E.tokenize_episodes(eps, tok, cfg(max_len=64, over_length="drop"))
    assert [e.id for e in kept] == ["short"] and rep["dropped"] == {"too_long": 1}
    (ex, _), rep = E.tokenize_episodes(eps, tok, cfg(max_len=160, over_length="truncate_right"))
    assert ex.truncated and len(ex.input_ids) == 160 and rep["truncated"] == 1
    assert decode(tok, ex.input_ids).startswith("PQ: a persona")  # right truncation keeps the start
    # Cutting the end of a long prompt leaves nothing to learn: dropped, and reported.
    ep = episode([(USER, "UVW " * 100), (BOT, "ab")])
    kept, rep = E.tokenize_episodes([ep], tok, cfg(max_len=32, over_length="truncate_right"))
    assert kept == [] and rep["dropped"] == {"no_trainable_tokens": 1}


# --- pad token and embeddings ----------------------------------------------------------------

def test_ensure_pad_token_adds_distinct_pad_and_mean_rows():
    model, tok = build_tiny()
    assert tok.pad_token_id is None
    old = model.get_input_embeddings().weight.detach().clone()
    info = M.ensure_pad_token(model, tok)
    rows = model.get_input_embeddings().weight
    assert info["added"] and tok.pad_token_id != tok.eos_token_id and tok.pad_token_id is not None
    assert rows.shape[0] % 64 == 0 and rows.shape[0] >= len(tok) and info["embedding_rows"] == rows.shape[0]
    assert torch.equal(rows[:old.shape[0]], old)
    assert torch.allclose(rows[old.shape[0]:], old.mean(0).expand(rows.shape[0] - old.shape[0], -1))
    assert model.get_output_embeddings().weight.shape[0] == rows.shape[0]
    assert model.config.pad_token_id == tok.pad_token_id
    again = M.ensure_pad_token(model, tok)  # idempotent
    assert not again["added"] and model.get_input_embeddings().weight.shape[0] == rows.shape[0]
    out = model(torch.tensor([[tok.pad_token_id, tok.eos_token_id]])).logits
    assert out.shape[-1] == rows.shape[0] and torch.isfinite(out).all()


def test_pad_equal_to_eos_is_replaced():
    tok = build_tiny_tokenizer()
    tok.pad_token = tok.eos_token  # the common shortcut that teaches a model never to stop
    assert tok.pad_token_id == tok.eos_token_id
    info = M.ensure_pad_token(None, tok)
    assert info["added"] and tok.pad_token_id != tok.eos_token_id


def test_untied_output_rows_and_bias():
    model, tok = build_tiny()
    model.config.tie_word_embeddings = False
    head = torch.nn.Linear(64, model.get_input_embeddings().weight.shape[0], bias=True)
    model.set_output_embeddings(head)
    n = M.resize_embeddings(model, len(tok) + 1)
    assert n % 64 == 0 and model.get_output_embeddings().weight.shape[0] == n
    assert M.resize_embeddings(model, 10) == n  # never shrinks


def test_tiny_save_and_load(tmp_path):
    model, tok = build_tiny(seed=3)
    M.ensure_pad_token(model, tok)
    save_tiny(model, tok, tmp_path / "m")
    m2, t2 = load_tiny(tmp_path / "m")
    model.eval(), m2.eval()
    assert t2.pad_token_id == tok.pad_token_id and t2("hello there")["input_ids"] == tok("hello there")["input_ids"]
    x = torch.tensor([[1, 2, 3]])
    assert torch.allclose(m2(x).logits, model(x).logits)
    m3, _ = build_tiny(seed=3)
    assert torch.equal(m3.get_input_embeddings().weight, build_tiny(seed=3)[0].get_input_embeddings().weight)


# --- packing and collation -------------------------------------------------------------------

def some_examples(tok, n=30, seed=0):
    rng = np.random.default_rng(seed)
    eps = [episode([(USER, "UV " * int(rng.integers(1, 8))), (BOT, "ab " * int(rng.integers(1, 12)))], eid=f"e{i}")
           for i in range(n)]
    return E.tokenize_episodes(eps, tok, cfg(max_len=64))[0]


def test_packing_preserves_tokens_and_restarts_positions(tok):
    examples = some_examples(tok)
    packed = C.pack_examples(examples, 64)
    assert len(packed) < len(examples)
    assert all(len(p.input_ids) <= 64 for p in packed)
    assert sorted(i for p in packed for i in p.id.split("+")) == sorted(e.id for e in examples)
    assert sum(len(p.input_ids) for p in packed) == sum(len(e.input_ids) for e in examples)
    by_id = {e.id: e for e in examples}
    for p in packed:
        starts = [k for k, pos in enumerate(p.position_ids) if pos == 0]
        assert len(starts) == p.n_examples and starts[0] == 0
        for k, eid in zip(starts, p.id.split("+")):
            e = by_id[eid]
            assert p.input_ids[k:k + len(e.input_ids)] == e.input_ids
            assert p.labels[k] == E.IGNORE  # never predicted from the previous example
            assert p.labels[k + 1:k + len(e.labels)] == e.labels[1:]


def test_packed_rows_do_not_attend_across_examples(tok):
    model, _ = build_tiny(seed=1)
    M.ensure_pad_token(model, tok)
    model.eval()
    examples = some_examples(tok, n=6, seed=2)
    (row, *_) = C.pack_examples(examples, 128)
    assert row.n_examples >= 2
    batch = C.collate([{"input_ids": row.input_ids, "labels": row.labels, "position_ids": row.position_ids}],
                      tok.pad_token_id)
    with torch.no_grad():
        packed_logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        by_id = {e.id: e for e in examples}
        start = 0
        for eid in row.id.split("+"):
            ids = torch.tensor([by_id[eid].input_ids])
            alone = model(ids).logits[0]
            assert torch.allclose(packed_logits[start:start + ids.shape[1]], alone, atol=1e-4)
            start += ids.shape[1]


def test_collate_pads_by_position(tok):
    examples = some_examples(tok, n=3)
    batch = C.collate([{"input_ids": np.array(e.input_ids, dtype=np.int32), "labels": e.labels} for e in examples],
                      tok.pad_token_id, pad_to_multiple_of=8)
    L = batch["input_ids"].shape[1]
    assert L % 8 == 0 and L >= max(len(e.input_ids) for e in examples)
    for r, e in enumerate(examples):
        n = len(e.input_ids)
        assert batch["attention_mask"][r, :n].all() and not batch["attention_mask"][r, n:].any()
        assert (batch["input_ids"][r, n:] == tok.pad_token_id).all() and (batch["labels"][r, n:] == E.IGNORE).all()
        assert batch["labels"][r, n - 1] == tok.eos_token_id  # a real EOS stays a target
    assert "position_ids" not in batch


# --- validation split ------------------------------------------------------------------------

def test_split_by_group_never_straddles_and_hits_the_fraction():
    eps = [episode([(USER, "q"), (BOT, "a")], eid=f"e{i}", group=f"g{i // 3}") for i in range(6000)]
    train, val = D.split_by_group(eps, 0.05, seed=0)
    assert len(train) + len(val) == len(eps)
    assert not {e.group_id for e in train} & {e.group_id for e in val}
    assert abs(len({e.group_id for e in val}) / 2000 - 0.05) < 0.015
    rev_train, rev_val = D.split_by_group(eps[::-1], 0.05, seed=0)
    assert {e.id for e in rev_val} == {e.id for e in val}
    assert {e.id for e in D.split_by_group(eps, 0.05, seed=1)[1]} != {e.id for e in val}


def test_split_small_data_gets_one_val_group():
    eps = [episode([(USER, "q"), (BOT, "a")], eid=f"e{i}") for i in range(3)]
    train, val = D.split_by_group(eps, 0.05, seed=0)
    assert len(val) == 1 and len(train) == 2
    assert D.split_by_group(eps, 0.0, seed=0)[1] == []


# --- on disk ---------------------------------------------------------------------------------

def test_save_and_load_round_trip(tmp_path, tok):
    examples = some_examples(tok, n=10)
    packed = C.pack_examples(examples[:6], 64)
    out = tmp_path / "ds"
    D.save_tokenized(out, {"train": packed, "val": examples[6:]}, tok, {"pad_token_id": tok.pad_token_id}, {"x": 1})
    data = D.load_tokenized(out)
    assert len(data.train) == len(packed) and len(data.val) == 4 and data.meta["pad_token_id"] == tok.pad_token_id
    for row, ex in zip(data.train, packed):
        assert row["input_ids"].tolist() == ex.input_ids and row["labels"].tolist() == ex.labels
        assert row["position_ids"].tolist() == ex.position_ids and row["id"] == ex.id
    assert data.val[0]["input_ids"].tolist() == examples[6].input_ids and "position_ids" not in data.val[0]
    assert data.tokenizer().pad_token_id == tok.pad_token_id
    with pytest.raises(FileExistsError):
        D.save_tokenized(out, {"train": examples}, tok, {}, {})
    D.save_tokenized(out, {"train": examples}, tok, {}, {}, overwrite=True)
    assert len(D.load_tokenized(out).train) == 10 and D.load_tokenized(out).val == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp folders left behind


# --- one prompt builder: generation prompts are training prompts ------------------------------

PROMPT_CASES = [
    ([(USER, "UV"), (BOT, "ab")], "", ""),
    ([(USER, "UV"), (BOT, "ab"), (USER, "XY"), (BOT, "cd")], "", ""),  # multi-turn
    ([(USER, "UV"), (BOT, "ab"), (USER, "XY"), (BOT, "cd")], "PX persona", "SC scene"),  # system message
    ([(BOT, "greeting"), (USER, "UV"), (BOT, "ab"), (USER, "W"), (USER, "XY"), (BOT, "cd")], "P", ""),
]


@pytest.mark.parametrize("template", ["plain", "chat_template"])
@pytest.mark.parametrize("turns,persona,scenario", PROMPT_CASES)
def test_generation_prompt_ids_equal_training_prompt_ids(tok, chat_tok, template, turns, persona, scenario):
    """What `src.generate` feeds the model (ChatSession.prompt -> encode.build_prompt) is
    token for token the training example up to its final response."""
    from src.gen.sampling import ChatSession
    t = chat_tok if template == "chat_template" else tok
    c = cfg(template=template, train_on="last_bot")
    ep = episode(turns, persona=persona, scenario=scenario)
    (ex,), _ = E.tokenize_episodes([ep], t, c)
    history = episode(turns[:-1], persona=persona, scenario=scenario)
    session = ChatSession(t, c, persona=persona, scenario=scenario, bot_name="Q", user_name="Rr", max_context=10_000,
                          history=[Turn(r, x) for r, x in turns[:-2]])
    gen_ids, dropped = session.prompt(turns[-2][1], max_new_tokens=16)
    assert dropped == 0
    assert gen_ids == E.encode_prompt(history, t, c)
    assert ex.input_ids[:len(gen_ids)] == gen_ids
    assert all(lab == E.IGNORE for lab in ex.labels[:len(gen_ids)])  # the prompt is never a target (last_bot)
    assert decode(t, ex.input_ids[len(gen_ids):]).startswith(turns[-1][1])
