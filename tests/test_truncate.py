"""--keep head_tail (src/pref/inputs/truncate.py) in every sequence builder: an over-long
segment keeps its start and its end around a marker, budgets follow segment lengths,
sequences stay within max_len, and the B-first sequence is exactly the A-first one
with A and B exchanged (siamese, cross, and the decoder judge prompt)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.data.records import PairRecord
from src.models.tiny import build_family_tokenizer
from src.pref.inputs.encode import encode_pairs
from src.pref.inputs.judge import JudgeBudget, JudgeEncoder
from src.pref.inputs.truncate import head_tail, proportional_budgets

MARK = [-1, -2]
ids_lists = st.lists(st.integers(0, 10_000), max_size=300)
words = st.text(alphabet="abcdefgh ijk.?", min_size=0, max_size=400)


@settings(max_examples=200, deadline=None)
@given(ids_lists, st.integers(0, 320))
def test_head_tail_keeps_both_ends_within_k(ids, k):
    out = head_tail(ids, k, MARK)
    assert len(out) == min(len(ids), k)
    if len(ids) <= k:
        assert out == ids
    elif k >= len(MARK) + 2:
        head = (k - len(MARK) + 1) // 2
        tail = k - len(MARK) - head
        assert out[:head] == ids[:head] and out[head:head + len(MARK)] == MARK and out[-tail:] == ids[-tail:]
        assert tail >= 1 and head >= tail  # both ends present


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=6), st.integers(0, 4000), st.randoms())
def test_proportional_budgets_fit_and_do_not_depend_on_order(lengths, room, rnd):
    k = proportional_budgets(lengths, room)
    assert sum(k) <= max(room, sum(lengths)) and all(0 <= ki <= n for ki, n in zip(k, lengths))
    if sum(lengths) > room:
        assert sum(k) <= room and sum(k) > room - len(lengths)  # at most one rounding token per segment lost
    perm = list(range(len(lengths)))
    rnd.shuffle(perm)
    assert proportional_budgets([lengths[i] for i in perm], room) == [k[i] for i in perm]


def _rec(rid, p, a, b):
    return PairRecord(id=rid, prompt=p, response_a=a, response_b=b)


@pytest.fixture(scope="module")
def minilm_tok():
    from transformers import AutoTokenizer
    from src.models import resolve  # the embedded MiniLM's folder, offline
    return AutoTokenizer.from_pretrained(resolve("minilm"))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.data(), st.sampled_from([32, 48, 96]), st.sampled_from(["siamese", "cross"]))
def test_encoder_sequences_mirror_exactly_and_fit(minilm_tok, turns, data, max_len, arch):
    p = [data.draw(words) for _ in range(turns)]
    a = [data.draw(words) for _ in range(turns)]
    b = [data.draw(words) for _ in range(turns)]
    enc = encode_pairs([_rec("1", p, a, b), _rec("2", p, b, a)], minilm_tok, arch=arch, max_len=max_len,
                       prompt_budget=16, keep="head_tail", both_orders=True)
    seqs = [s for v in enc.ids.values() for s in v]
    assert all(len(s) <= max_len for s in seqs)
    if arch == "siamese":
        assert enc.ids["a"][0] == enc.ids["b"][1] and enc.ids["b"][0] == enc.ids["a"][1]
    else:
        assert enc.ids["ba"][0] == enc.ids["ab"][1] and enc.ids["ab"][0] == enc.ids["ba"][1]


@pytest.mark.parametrize("arch", ["siamese", "cross"])
def test_long_answer_keeps_its_start_and_end_only_with_head_tail(minilm_tok, arch):
    long_a = "opening words here. " + "filler sentence. " * 200 + "closing verdict."
    rec = _rec("1", ["a question?"], [long_a], ["short answer b."])
    text = {}
    for keep in ("last", "head_tail"):
        enc = encode_pairs([rec], minilm_tok, arch=arch, max_len=96, prompt_budget=16, keep=keep)
        text[keep] = minilm_tok.decode(enc.ids["a" if arch == "siamese" else "ab"][0])
    assert "opening words" in text["head_tail"] and "closing verdict" in text["head_tail"]
    assert "..." in text["head_tail"] and "short answer b" in text["head_tail"] or arch == "siamese"
    assert "closing verdict" not in text["last"]  # today's policy cuts the answer's end


TOKS = {n: build_family_tokenizer(n) for n in ("tiny-llama", "tiny-qwen2")}


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(list(TOKS)), st.integers(1, 3), st.data(), st.sampled_from([8, 60, 300]))
def test_judge_head_tail_mirrors_exactly_and_fits(name, turns, data, extra):
    tok = TOKS[name]
    p, a, b = ([data.draw(words) for _ in range(turns)] for _ in range(3))
    enc = JudgeEncoder(tok)
    budget = JudgeBudget(enc.fixed + extra, prompt_turn_cap=40, keep="head_tail")
    out = enc.encode_records([_rec("1", p, a, b), _rec("2", p, b, a)], budget)
    assert all(len(x) <= budget.max_len for x in out["ab"] + out["ba"])
    assert out["ba"][0] == out["ab"][1] and out["ab"][0] == out["ba"][1]


def test_judge_head_tail_keeps_both_ends_of_a_long_answer():
    tok = TOKS["tiny-qwen2"]
    enc = JudgeEncoder(tok)
    rec = _rec("1", ["question"], ["first words " + "middle " * 300 + "last words"], ["b answer"])
    text = tok.decode(enc.encode_records([rec], JudgeBudget(enc.fixed + 80, keep="head_tail"))["ab"][0])
    a = text.split("<response_a>")[1].split("</response_a>")[0]
    assert a.strip().startswith("first words") and a.strip().endswith("last words") and "..." in a
