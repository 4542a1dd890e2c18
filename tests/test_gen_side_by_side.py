"""src/gen/side_by_side.py, the pieces of scripts/measure_gen.py: held-out prompts taken
the same way every time (single-turn, short, unseen in training data), prompt ids equal to
what a chat session builds, and the length/stopping summary computed by hand."""
from __future__ import annotations

import csv
import json

import pytest

from src.errors import UsageError
from src.gen import side_by_side as S
from src.gen.sampling import ChatSession, Generation
from src.gen.render import tokenize_config
from src.models.tiny import build_tiny_tokenizer


def _pool(path, prompts: list[list[str]]) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "prompt", "response_a", "response_b"])
        for i, p in enumerate(prompts):
            w.writerow([i, json.dumps(p), json.dumps(["a"] * len(p)), json.dumps(["b"] * len(p))])
    return str(path)


def test_held_out_prompts_are_single_turn_short_distinct_and_unseen(tmp_path):
    path = _pool(tmp_path / "pool.csv", [["first"], ["two", "turns"], ["x" * 50], ["first"], ["seen in training"],
                                         ["  second  "], ["third"]])
    assert S.held_out_prompts(path, 3, max_chars=20, exclude={"seen in training"}) == ["first", "second", "third"]
    with pytest.raises(UsageError, match="only 3 single-turn prompts"):
        S.held_out_prompts(path, 4, max_chars=20, exclude={"seen in training"})
    assert S.prompt_texts(path) >= {"two", "turns", "seen in training", "second"}


def test_prompt_ids_are_the_chat_sessions():
    tok = build_tiny_tokenizer()
    tok.add_special_tokens({"pad_token": "<|pad|>"})
    ids = S.prompt_ids(["Where is the map?", "Hi"], tok, {"template": "plain"})
    for text, got in zip(["Where is the map?", "Hi"], ids):
        # unnamed speakers, as training's logged sample prompts (src/gen/train.py sample_prompt_ids)
        session = ChatSession(tok, tokenize_config({"template": "plain"}), bot_name="", user_name="", max_context=4096)
        want, _ = session.prompt(text, 16)
        assert got == want


def test_length_summary_by_hand():
    gens = [Generation("", "", [5, 6, 2], "eos"), Generation("", "", [7] * 4, "length"),
            Generation("", "", [1, 2], "stop_string")]
    s = S.length_summary(gens, max_new_tokens=4)
    assert s["sample_reply_tokens_mean"] == pytest.approx(3.0)
    assert s["sample_reply_tokens_se"] == pytest.approx(1.0 / 3 ** 0.5)  # sd of (3, 4, 2) is 1
    assert s["sample_eos_share"] == pytest.approx(1 / 3) and s["sample_length_share"] == pytest.approx(1 / 3)
    assert s["sample_repeat_share"] == pytest.approx(1 / 3)  # 7 7 7 7: a run
    assert S.share_se(0.5, 4) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        S.length_summary([], 4)


def test_paired_difference_cancels_the_shared_prompt_effect():
    a, b = [10.0, 50.0, 90.0], [8.0, 49.0, 87.0]
    mean, se = S.paired_difference(a, b)
    assert mean == pytest.approx(2.0) and se == pytest.approx(((0 + 1 + 1) / 2) ** 0.5 / 3 ** 0.5)
    assert se < 1.0  # the unpaired means' errors (about 23 each) would hide the difference
    with pytest.raises(ValueError):
        S.paired_difference([1.0], [])
