"""Chat readers and adapters: every shape becomes ChatEpisodes, bad rows are
quarantined with a reason, rows == ok + quarantined + skipped."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.data.arena import DataError
from src.data.chat import (BOT, USER, InputSpec, detect_format, episode_to_obj, episodes_from_pair, read_chat,
                           write_episodes_jsonl)
from src.data.chat_synthetic import make_episodes, write_demo_inputs
from src.data.records import A_WINS, B_WINS, TIE, PairRecord


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def roles(ep) -> str:
    return "".join("b" if t.role == BOT else "u" for t in ep.turns)


def check_contract(result) -> None:
    assert result.rows == result.ok_rows + len(result.quarantine) + sum(result.skipped.values())
    rep = result.report()
    assert rep["rows"] == rep["ok"] + rep["quarantined"] + sum(rep["skipped"].values())


def test_episodes_jsonl_shapes_and_quarantine(tmp_path):
    p = write_jsonl(tmp_path / "eps.jsonl", [
        {"id": "1", "persona": "Ana is kind.", "bot_name": "Ana", "user_name": "Bo", "source": "logs",
         "turns": [{"role": "user", "text": "hi"}, {"role": "bot", "text": "hello"}]},
        {"id": "2", "bot_name": "Ana", "turns": [{"speaker": "Bo", "text": "hey"}, {"speaker": "Ana", "text": "yo"},
                                                 {"speaker": "Cy", "text": "me too"}]},
        {"id": "3", "turns": ["plain user", "plain bot", "user again"]},
        '{"id": "4", "turns": [',                                         # invalid JSON
        {"id": "5", "turns": [{"role": "user", "text": "only a user"}]},  # nothing to learn
        {"id": "1", "turns": ["dup", "dup"]},                             # duplicate id
        {"id": "7", "turns": [{"role": "narrator", "text": "?"}]},        # unknown speaker
        {"id": "8", "turns": "not a list"},
        [1, 2],
    ])
    r = read_chat({"path": str(p), "name": "x"})
    check_contract(r)
    assert r.format == "episodes" and r.ok_rows == 3 and r.rows == 9
    assert [q.reason for q in r.quarantine] == ["invalid_json", "no_bot_turn", "duplicate_id", "unknown_role",
                                                "bad_field", "unknown_shape"]
    assert [q.row for q in r.quarantine] == [4, 5, 6, 7, 8, 9]
    e1, e2, e3 = r.episodes
    assert e1.id == "x:1" and e1.persona == "Ana is kind." and e1.source == "logs" and roles(e1) == "ub"
    assert roles(e2) == "ubu" and e2.turns[2].name == "Cy" and e2.speaker(e2.turns[1]) == "Ana"
    assert roles(e3) == "ubu" and e3.source == "x" and e3.group_id == "x:3"


def test_non_utf8_and_oversized_lines_are_quarantined(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"id": "1", "turns": ["a", "b"]}\n{"id": "2", "turns": ["\xff\xfe", "b"]}\n'
                  + b'{"id": "3", "turns": ["' + b"x" * 500 + b'", "b"]}\n')
    r = read_chat({"path": str(p), "format": "episodes"}, max_cell_chars=200)
    assert [q.reason for q in r.quarantine] == ["non_utf8", "cell_too_large"] and r.ok_rows == 1


def test_unreadable_files_raise(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_chat({"path": str(tmp_path / "missing.jsonl")})
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_chat({"path": str(tmp_path / "empty.jsonl")})
    write_jsonl(tmp_path / "odd.jsonl", [{"foo": 1}])
    with pytest.raises(DataError, match="cannot tell the format"):
        read_chat({"path": str(tmp_path / "odd.jsonl")})
    with pytest.raises(ValueError, match="format"):
        InputSpec(path="x", format="csvish")


def test_sharegpt_adapter(tmp_path):
    p = write_jsonl(tmp_path / "sg.jsonl", [
        {"id": "a", "conversations": [{"from": "system", "value": "You are Rex."}, {"from": "human", "value": "hi"},
                                      {"from": "gpt", "value": "woof"}]},
        {"id": "b", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"id": "c", "conversations": [{"from": "alien", "value": "?"}]},
    ])
    r = read_chat({"path": str(p), "bot_name": "Rex"})
    check_contract(r)
    assert r.format == "sharegpt" and [q.reason for q in r.quarantine] == ["unknown_role"]
    a, b = r.episodes
    assert a.persona == "You are Rex." and roles(a) == "ub" and a.turns[1].text == "woof" and a.bot_name == "Rex"
    assert roles(b) == "ub"


def test_soda_adapter_keeps_chosen_relations(tmp_path):
    row = {"relation": "xAttr", "literal": "Lilah is brave.", "narrative": "Lilah climbs a hill with Sam.",
           "dialogue": ["Ready?", "Always.", "Go!"], "speakers": ["Sam", "Lilah", "Sam"], "PersonX": "Lilah",
           "original_index": 12}
    p = write_jsonl(tmp_path / "soda.jsonl", [row, {**row, "relation": "xWant"}, {**row, "speakers": ["Sam"]}])
    r = read_chat({"path": str(p), "relations": ["xAttr"]})
    check_contract(r)
    assert r.format == "soda" and r.skipped == {"relation_not_selected:xWant": 1} and len(r.quarantine) == 1
    (e,) = r.episodes
    assert e.persona == "Lilah is brave." and e.scenario.startswith("Lilah climbs")
    assert e.bot_name == "Lilah" and e.user_name == "Sam" and roles(e) == "ubu" and e.group_id.endswith("orig12")
    assert len(read_chat({"path": str(p), "relations": []}).episodes) == 2  # empty list: every relation


def test_prompt_response_adapter(tmp_path):
    p = write_jsonl(tmp_path / "pr.jsonl", [
        {"prompt": "Name a fruit.", "response": "Apple.", "source": "gpt4all"},
        {"instruction": "Translate", "input": "hola", "output": "hello"},
    ])
    r = read_chat({"path": str(p), "format": "prompt_response"})
    a, b = r.episodes
    assert roles(a) == "ub" and a.source == "gpt4all" and a.turns[1].text == "Apple."
    assert b.turns[0].text == "Translate\n\nhola" and b.turns[1].text == "hello"


def pair(label, rid="p1", prompt=("q1", "q2"), a=("a1", "a2"), b=("b1", "b2")) -> PairRecord:
    return PairRecord(id=rid, prompt=list(prompt), response_a=list(a), response_b=list(b), label=label)


@pytest.mark.parametrize("label,winner", [(A_WINS, "a"), (B_WINS, "b")])
def test_pair_winner_is_the_sft_target(label, winner):
    (e,) = episodes_from_pair(pair(label), InputSpec(path="x.csv", name="ar"))
    assert [t.text for t in e.turns] == ["q1", f"{winner}1", "q2", f"{winner}2"] and roles(e) == "ubub"
    assert e.id == "ar:p1"


def test_pair_tie_policies():
    both = episodes_from_pair(pair(TIE), InputSpec(path="x", tie_policy="both"))
    assert {e.turns[1].text for e in both} == {"a1", "b1"} and len({e.group_id for e in both}) == 1
    either = [episodes_from_pair(pair(TIE, rid=str(i)), InputSpec(path="x", tie_policy="either"))
              for i in range(400)]
    assert all(len(x) == 1 for x in either)
    share_a = sum(x[0].turns[1].text == "a1" for x in either) / 400
    assert 0.4 < share_a < 0.6  # a fair coin per row, not always side A
    from src.data.chat import _Skip
    with pytest.raises(_Skip, match="tie_skipped"):
        episodes_from_pair(pair(TIE), InputSpec(path="x", tie_policy="skip"))
    with pytest.raises(_Skip, match="unlabelled"):
        episodes_from_pair(pair(None), InputSpec(path="x"))


def test_chain_of_hindsight_pairs():
    spec = InputSpec(path="x", pair_mode="both", coh_good="Good: ", coh_bad="Bad: ")
    sft, coh = episodes_from_pair(pair(B_WINS), spec)
    assert coh.id.endswith(":coh") and coh.extra["coh"] and coh.group_id == sft.group_id
    last = coh.turns[-1].text
    assert "Good: b2" in last and "Bad: a2" in last  # the winner is the good answer
    assert coh.turns[1].text == "b1"  # earlier turns follow the winner
    orders = {episodes_from_pair(pair(A_WINS, rid=str(i)), spec)[1].turns[-1].text.startswith("Good")
              for i in range(50)}
    assert orders == {True, False}  # both orders occur
    from src.data.chat import _Skip
    with pytest.raises(_Skip, match="tie_skipped"):  # a tie has no good and bad answer
        episodes_from_pair(pair(TIE), InputSpec(path="x", pair_mode="coh", tie_policy="both"))


def test_pairs_file_through_read_chat(synthetic_csv):
    r = read_chat({"path": str(synthetic_csv), "tie_policy": "skip", "pair_mode": "sft", "name": "syn"})
    check_contract(r)
    assert r.format == "pairs" and r.rows == 400
    assert r.skipped.get("tie_skipped", 0) > 0 and len(r.episodes) == r.ok_rows
    r2 = read_chat({"path": str(synthetic_csv), "tie_policy": "both", "pair_mode": "both", "name": "syn"})
    assert len(r2.episodes) > len(r.episodes) and r2.ok_rows == 400


def test_real_dev_pairs(real_dev_csv):
    r = read_chat({"path": str(real_dev_csv), "tie_policy": "either"})
    check_contract(r)
    assert r.episodes and all(e.turns[-1].role == BOT for e in r.episodes)


def test_pairwise_jsonl_chosen_rejected(tmp_path):
    p = write_jsonl(tmp_path / "hh.jsonl", [
        {"id": "1", "chosen": "\n\nHuman: hi\n\nAssistant: hello!", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}])
    assert detect_format(p) == "pairs"
    (e,) = read_chat({"path": str(p)}).episodes
    assert [t.text for t in e.turns] == ["hi", "hello!"]


def test_written_episodes_read_back(tmp_path):
    eps = make_episodes(30, seed=1)
    write_episodes_jsonl(eps, tmp_path / "out.jsonl")
    back = read_chat({"path": str(tmp_path / "out.jsonl"), "name": "re"}).episodes
    assert len(back) == 30
    for a, b in zip(eps, back):
        assert b.id == f"re:{a.id}" and b.group_id == a.group_id and b.persona == a.persona
        assert [(t.role, t.text) for t in a.turns] == [(t.role, t.text) for t in b.turns]
    assert episode_to_obj(back[0])["turns"][0]["role"] == USER


def test_demo_inputs_cover_every_shape(tmp_path):
    specs = write_demo_inputs(tmp_path, n=40, seed=0)
    formats = set()
    for s in specs:
        r = read_chat(s)
        check_contract(r)
        formats.add(r.format)
        assert r.episodes
    assert formats == {"episodes", "sharegpt", "soda", "prompt_response", "pairs"}
