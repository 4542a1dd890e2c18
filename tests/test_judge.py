"""Judge sequence of --arch cross on decoders: chat template, per-segment budgets, last
turns kept, and the B-first order an exact mirror of the A-first one."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from src.data.records import PairRecord
from src.errors import UsageError
from src.models.tiny import build_family_tokenizer
from src.pref.inputs.judge import JudgeBudget, JudgeEncoder

TOKS = {n: build_family_tokenizer(n) for n in ("tiny-llama", "tiny-qwen2", "tiny-gemma2")}
words = st.text(alphabet="abcdefgh ijk.?", min_size=0, max_size=300)


def _rec(p, a, b):
    return PairRecord(id="x", prompt=p, response_a=a, response_b=b)


@pytest.mark.parametrize("name", list(TOKS))
def test_rendered_through_the_chat_template(name):
    tok = TOKS[name]
    ids = JudgeEncoder(tok).encode_records([_rec(["what is 2+2"], ["four"], ["5"])], JudgeBudget(256))["ab"][0]
    text = tok.decode(ids)
    full = tok.apply_chat_template([{"role": "user", "content": "X"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith(full.split("X")[1])  # ends on the generation prompt: the pooled token
    assert text.startswith(full.split("X")[0])
    assert text.index("what is 2+2") < text.index("four") < text.index("5")
    if tok.bos_token:
        assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(list(TOKS)), st.integers(1, 3), st.data(), st.sampled_from([8, 60, 300]))
def test_budget_and_exact_mirror(name, turns, data, extra):
    tok = TOKS[name]
    p = [data.draw(words) for _ in range(turns)]
    a = [data.draw(words) for _ in range(turns)]
    b = [data.draw(words) for _ in range(turns)]
    enc = JudgeEncoder(tok)
    max_len = enc.fixed + extra
    budget = JudgeBudget(max_len, prompt_turn_cap=40)
    out = enc.encode_records([_rec(p, a, b), _rec(p, b, a)], budget)
    assert all(len(x) <= max_len for x in out["ab"] + out["ba"])
    assert out["ba"][0] == out["ab"][1] and out["ab"][0] == out["ba"][1]  # B-first == A/B exchanged


def test_overflow_keeps_last_turns_and_caps_prompt_turns():
    tok = TOKS["tiny-qwen2"]
    enc = JudgeEncoder(tok)
    old, new = "first question " * 30, "final question " * 30
    rec = _rec([old, new], ["old answer " * 40, "new answer A"], ["old answer " * 40, "new answer B"])
    text = tok.decode(enc.encode_records([rec], JudgeBudget(enc.fixed + 120, prompt_turn_cap=20))["ab"][0])
    assert "new answer A" in text and "new answer B" in text
    prompt = text.split("<prompt>")[1].split("</prompt>")[0]
    assert "final question" in prompt and "first question" not in prompt
    assert len(tok(prompt, add_special_tokens=False)["input_ids"]) <= 20 + 2


def test_default_shares_twenty_forty_forty():
    tok = TOKS["tiny-llama"]
    enc = JudgeEncoder(tok)
    long = "word " * 2000
    budget = JudgeBudget(enc.fixed + 500, prompt_turn_cap=10_000)
    ids = enc.encode_records([_rec([long], [long], [long])], budget)["ab"][0]
    assert len(ids) == budget.max_len
    p = enc.encode_records([_rec([long], ["x"], ["y"])], budget)["ab"][0]
    seg = lambda text, a, b: len(tok(text.split(a)[1].split(b)[0], add_special_tokens=False)["input_ids"])  # noqa: E731
    t = tok.decode(ids)
    assert seg(t, "<prompt>\n", "\n</prompt>") == pytest.approx(100, abs=3)
    assert seg(t, "<response_a>\n", "\n</response_a>") == pytest.approx(200, abs=3)
    assert seg(tok.decode(p), "<prompt>\n", "\n</prompt>") == pytest.approx(100, abs=3)  # prompt share is a cap


def test_max_len_too_small_for_the_template_is_refused():
    enc = JudgeEncoder(TOKS["tiny-gemma2"])
    with pytest.raises(UsageError, match="--max-len"):
        enc.encode_records([_rec(["q"], ["a"], ["b"])], JudgeBudget(enc.fixed + 2))


def test_the_refusal_names_a_working_minimum():
    """`--model tiny-llama --arch cross --max-len 128` was refused without a number to use."""
    enc = JudgeEncoder(TOKS["tiny-gemma2"])
    with pytest.raises(UsageError) as e:
        enc.encode_records([_rec(["q"], ["a"], ["b"])], JudgeBudget(enc.fixed + 2))
    minimum = int(str(e.value).split("the minimum is --max-len ")[1].split(",")[0])
    assert minimum == enc.fixed + 8
    assert len(enc.encode_records([_rec(["q"], ["a"], ["b"])], JudgeBudget(minimum))["ab"][0]) <= minimum
