"""Chat cleaning filters: each lesson as a behaviour, plus the invariants every
filter keeps (counts add up, no input mutated, deterministic, order-independent)."""
from __future__ import annotations

import copy
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.data import filters as F
from src.data.chat import BOT, USER, ChatEpisode, Turn
from src.data.chat_synthetic import make_episodes


def ep(eid: str, *texts: str, persona: str = "", source: str = "s", bot: str | None = None,
       user: str | None = None) -> ChatEpisode:
    """Turns alternate user, bot, user, ..."""
    turns = [Turn(USER if i % 2 == 0 else BOT, t) for i, t in enumerate(texts)]
    return ChatEpisode(id=eid, turns=turns, persona=persona, source=source, bot_name=bot, user_name=user)


def run(name: str, episodes, seed: int = 0, **cfg):
    return F.FILTERS[name][1](episodes, F.filter_config(name, cfg), seed)


def ids(episodes) -> set[str]:
    return {e.id for e in episodes}


def long_reply(n: int = 15) -> str:
    return " ".join(["word"] * n)


@pytest.fixture(scope="module")
def planted() -> list[ChatEpisode]:
    return make_episodes(600, seed=7)


DEMO_CFG = {
    "names": {"enabled": True},
    "keywords": {"groups": {"blush": {"words": ["blush", "nervous"], "p_drop": 0.7},
                            "stutter": {"words": ["stutter"], "p_drop": 0.5}}},
    "source_cap": {"cap": {"loud_subset": 40}},
    "source_drop": {"sources": ["nobody"]},
}


# --- invariants over every filter ---------------------------------------------------------

@pytest.mark.parametrize("name", list(F.FILTERS))
def test_every_filter_counts_add_up_and_leaves_input_alone(name, planted):
    before = copy.deepcopy(planted)
    kept, entry = F.FILTERS[name][1](planted, F.filter_config(name, DEMO_CFG.get(name)), 3)
    assert entry["in"] == len(planted) == entry["out"] + sum(entry["dropped"].values())
    assert entry["out"] == len(kept)
    assert planted == before  # filters return new episodes, never edit the caller's
    for reason, examples in entry["examples"].items():
        assert reason in entry["dropped"] and len(examples) <= 5


def test_apply_filters_chains_counts(planted):
    kept, entries = F.apply_filters(planted, DEMO_CFG, seed=1)
    assert [e["filter"] for e in entries] == F.DEFAULT_ORDER
    assert entries[0]["in"] == len(planted) and entries[-1]["out"] == len(kept)
    for a, b in zip(entries, entries[1:]):
        assert a["out"] == b["in"]
    # The planted defects are found: dedup, markup, keywords, short answers all drop something.
    dropped = {e["filter"]: sum(e["dropped"].values()) for e in entries}
    for name in ("dedup", "markup", "keywords", "short_response", "source_cap"):
        assert dropped[name] > 0, name
    assert sum(1 for e in planted if "junk" in e.extra["planted"]) <= entries[1]["modified"]


def test_apply_filters_is_deterministic_and_order_independent(planted):
    kept1, rep1 = F.apply_filters(planted, DEMO_CFG, seed=5)
    shuffled = planted[:]
    random.Random(0).shuffle(shuffled)
    kept2, rep2 = F.apply_filters(shuffled, DEMO_CFG, seed=5)
    assert ids(kept1) == ids(kept2)
    assert [e["dropped"] for e in rep1] == [e["dropped"] for e in rep2]
    kept3, _ = F.apply_filters(planted, DEMO_CFG, seed=6)
    assert ids(kept3) != ids(kept1)  # the seed matters for the probability filters


def test_disabled_filter_and_bad_config():
    eps = [ep("a", "hi", "x")]
    kept, entries = F.apply_filters(eps, {f: {"enabled": False} for f in F.FILTERS}, seed=0)
    assert kept == eps and entries == []
    with pytest.raises(ValueError, match="unknown config field"):
        F.filter_config("short_response", {"lowest": 3})
    with pytest.raises(ValueError, match="unknown filter"):
        F.apply_filters(eps, {"nope": {}}, seed=0)
    with pytest.raises(ValueError):
        F.filter_config("short_response", {"low": 10, "high": 5})
    with pytest.raises(ValueError):
        F.filter_config("keywords", {"groups": {"x": {"words": [], "p_drop": 0.5}}})


# --- dedup --------------------------------------------------------------------------------

texts = st.text(alphabet="ab c", min_size=0, max_size=6)
episode_st = st.builds(
    lambda eid, turns, persona: ep(f"e{eid}", *turns, persona=persona),
    st.integers(0, 10_000), st.lists(texts, min_size=1, max_size=5), st.sampled_from(["", "p", "q"]))


@settings(max_examples=120, deadline=None)
@given(st.lists(episode_st, max_size=25, unique_by=lambda e: e.id), st.randoms())
def test_dedup_idempotent_and_order_independent(episodes, rnd):
    kept, entry = run("dedup", episodes)
    again, entry2 = run("dedup", kept)
    assert ids(again) == ids(kept) and entry2["dropped"] == {}
    shuffled = episodes[:]
    rnd.shuffle(shuffled)
    assert ids(run("dedup", shuffled)[0]) == ids(kept)
    # Nothing kept is a duplicate or a proper prefix of another kept episode.
    keys = [(F.norm(e.persona),) + tuple((t.role, F.norm(t.text)) for t in e.turns) for e in kept]
    assert len(set(keys)) == len(keys)
    full = set(keys)
    assert not any(k[:n] in full for k in keys for n in range(2, len(k)))
    # ...and every dropped episode is covered by a kept one (equal or a prefix of it).
    for e in episodes:
        k = (F.norm(e.persona),) + tuple((t.role, F.norm(t.text)) for t in e.turns)
        assert any(kk[:len(k)] == k for kk in keys)


def test_dedup_exact_ignores_case_and_spacing_and_keeps_smallest_id():
    a = ep("b2", "Hello  there", "Hi!")
    b = ep("a1", "hello there", "hi!")
    c = ep("c3", "hello there", "hi!", persona="someone else")
    kept, entry = run("dedup", [a, b, c])
    assert ids(kept) == {"a1", "c3"} and entry["dropped"] == {"exact_duplicate": 1}


def test_dedup_prefix_keeps_the_longer_resubmission():
    old = ep("old", "hi", "hello", "how are you", "fine")
    new = ep("new", "hi", "hello", "how are you", "fine", "and you?", "great")
    other = ep("other", "hi", "something else entirely")
    kept, entry = run("dedup", [old, new, other])
    assert ids(kept) == {"new", "other"} and entry["dropped"] == {"prefix_of_longer": 1}
    # A different persona is a different character: not a re-submission.
    kept, _ = run("dedup", [ep("old", "hi", "hello", persona="A"), ep("new", "hi", "hello", "x", "y", persona="B")])
    assert ids(kept) == {"old", "new"}


# --- probability filters: stated rates on large synthetic input -------------------------------

def test_short_response_linear_rate_and_ends():
    low, mid, high = ([ep(f"{k}{i}", "q", long_reply(n)) for i in range(4000)] for k, n in (("l", 3), ("m", 8), ("h", 12)))
    cfg = dict(mode="linear", low=4, high=12)
    assert run("short_response", low, **cfg)[1]["out"] == 0  # at or below low: always dropped
    assert run("short_response", high, **cfg)[1]["out"] == len(high)  # at or above high: always kept
    kept, entry = run("short_response", mid, **cfg)  # halfway: p = 0.5
    assert abs(entry["dropped"]["short_responses"] / len(mid) - 0.5) < 0.03


def test_short_response_uses_the_episode_median():
    # One terse reply in a long chat is fine; judged by the median, not per turn.
    chat = ep("x", "q", long_reply(20), "q", "Sure.", "q", long_reply(20))
    assert run("short_response", [chat], mode="min_words", min_words=5)[1]["out"] == 1
    assert F.median_bot_words(chat) == 20
    assert run("short_response", [ep("y", "q", "ok", "q", "fine")], mode="min_words", min_words=5)[1]["out"] == 0


def test_keyword_groups_drop_at_their_rates():
    eps = ([ep(f"b{i}", "q", "She blushes deeply.") for i in range(4000)]
           + [ep(f"s{i}", "q", "He stutters a bit.") for i in range(4000)]
           + [ep(f"n{i}", "q", "A calm reply.") for i in range(500)])
    kept, entry = run("keywords", eps, groups={"blush": {"words": ["blush", "nervous"], "p_drop": 0.7},
                                               "stutter": {"words": ["stutter"], "p_drop": 0.5}})
    assert abs(entry["dropped"]["keyword:blush"] / 4000 - 0.7) < 0.03
    assert abs(entry["dropped"]["keyword:stutter"] / 4000 - 0.5) < 0.03
    assert {e.id for e in kept if e.id.startswith("n")} == {f"n{i}" for i in range(500)}
    # bot turns only by default: a user who blushes is not the bot's tic
    assert run("keywords", [ep("u", "I blush", "ok")], groups={"b": {"words": ["blush"], "p_drop": 1.0}})[1]["out"] == 1


def test_source_drop_and_cap():
    eps = [ep(f"a{i}", "q", "r", source="big") for i in range(1000)] + [ep(f"b{i}", "q", "r", source="small") for i in range(50)]
    eps += [ep("c0", "q", "r", source="bad")]
    kept, entry = run("source_drop", eps, sources=["bad"])
    assert entry["dropped"] == {"source_dropped:bad": 1}
    kept, entry = run("source_cap", kept, cap={"big": 100})
    assert sum(e.source == "big" for e in kept) == 100 and sum(e.source == "small" for e in kept) == 50
    kept2, _ = run("source_cap", list(reversed(eps[:1050])), cap={"big": 100})
    assert ids(kept2) == ids(kept)
    kept, _ = run("source_cap", eps[:1050], keep_frac={"big": 0.25})
    assert sum(e.source == "big" for e in kept) == 250


# --- text repairs -------------------------------------------------------------------------

def test_junk_tokens_and_control_chars_removed():
    e = ep("j", "START:text_remaining:2 hi", "Sure thing END_OF_DIALOG", persona="a\x00b")
    kept, entry = run("junk", [e, ep("k", "q", "END_OF_DIALOG")])
    assert entry["dropped"] == {"empty_after_cleaning": 1} and entry["modified"] == 1
    (j,) = kept
    assert j.turns[0].text == "hi" and j.turns[1].text == "Sure thing" and j.persona == "ab"
    kept, _ = run("junk", [e], tokens=["Sure"], patterns=[])
    assert kept[0].turns[1].text == "thing END_OF_DIALOG"


def test_repeats_collapse_and_drop():
    e = ep("r", "q", "What!!!!??!!!??????...... nooooooooo... ok!!")
    (c,), entry = run("repeats", [e])
    assert c.turns[1].text == "What!?... noooo... ok!!" and entry["modified"] == 1
    assert run("repeats", [e], action="drop_episode")[1]["dropped"] == {"repeated_chars": 1}
    for fine in ("In 1000000 years... fine.", "Really...? Well...,", "Hmm..."):  # digits, ellipses
        assert run("repeats", [ep("n", "q", fine)])[1]["modified"] == 0, fine


def test_script_drops_foreign_turns():
    ru = "Привет, как у тебя дела сегодня вечером?"
    e = ep("s", "hello", "An English reply here.", ru, "Another English reply.")
    (k,), entry = run("script", [e])
    assert [t.text for t in k.turns] == ["hello", "An English reply here.", "Another English reply."]
    (k,), _ = run("script", [e], action="cut")
    assert len(k.turns) == 2
    assert run("script", [e], action="drop_episode")[1]["dropped"] == {"non_target_script": 1}
    assert run("script", [ep("t", "q", "Ок")])[1]["modified"] == 0  # too few letters to judge
    assert run("script", [ep("b", "q", ru)])[1]["dropped"] == {"non_target_script": 1}  # no bot text left
    assert run("script", [ep("c", "q", ru)], target=["CYRILLIC"])[1]["out"] == 1
    assert F.target_ratio("Café naïve", ["LATIN"])[0] == 1.0


def test_markup_drop_or_repair():
    bad = ep("m", 'a "quote', "*smiles and waves")
    ok = ep("o", "q", '*smiles* "Hello there," she says. **bold**')
    kept, entry = run("markup", [bad, ok])
    assert ids(kept) == {"o"} and entry["dropped"] == {"unbalanced_markup": 1}
    (r, _), entry = run("markup", [bad, ok], action="repair")
    assert r.turns[1].text == "smiles and waves" and r.turns[0].text == 'a "quote'  # user turns untouched
    assert r.turns[1].text.count("*") % 2 == 0
    # Markdown bullets and code are not paired markup.
    md = ep("md", "q", '* first\n* second *really*\n```py\nprint("hi)\n```')
    assert run("markup", [md])[1]["out"] == 1
    assert run("markup", [ep("c", "q", "you c*** and f*ck, **really**")])[1]["out"] == 1
    (r,), _ = run("markup", [ep("r2", "q", '* item *waves\n* other')], action="repair")
    assert r.turns[1].text == "* item waves\n* other"


def test_names_masked_per_source():
    e = ep("n", "Hi Lilah, I'm Marcus", "Hello Marcus! Lilah Brooks at your service.",
           persona="Lilah Brooks is a baker.", bot="Lilah Brooks", user="Marcus", source="rp")
    other = ep("o", "Hi Lilah", "Hello", bot="Lilah", source="instruct")
    (m, o), entry = run("names", [e, other], enabled=True, sources=["rp"])
    assert m.turns[0].text == "Hi {{char}}, I'm {{user}}"
    assert m.turns[1].text == "Hello {{user}}! {{char}} at your service."
    assert m.persona == "{{char}} is a baker." and m.bot_name == "{{char}}" and m.user_name == "{{user}}"
    assert o is other and entry["modified"] == 1
    # "Lil" inside another word is not a name
    (m2,), _ = run("names", [ep("w", "q", "Lilahs and Lila", bot="Lila")], enabled=True)
    assert m2.turns[1].text == "Lilahs and {{char}}"
