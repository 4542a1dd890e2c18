"""Synthetic chat data with the defects the filters exist for, in every input shape.

`make_episodes` builds role-play episodes and plants, at known rates, each defect
a real log had: exact re-uploads, old files re-submitted with dialogue appended,
terse bots, blush/stutter tics, unclosed *actions*, scraper tokens, '!!!!????'
runs, Cyrillic turns, a loud source. `write_demo_inputs` writes them (plus
ShareGPT, SODA, gpt4all and arena-pair files, and a few broken lines) so the
demo config runs offline with no input files:

    python -m src.data.chat_synthetic --episodes 400 --out data/synthetic/chat
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
from pathlib import Path

from .chat import BOT, USER, ChatEpisode, Turn, episode_to_obj

NAMES = ["Lilah", "Marcus", "Aiko", "Tomas", "Priya", "Jonah", "Elena", "Kwame", "Sofia", "Ravi",
         "Maren", "Dario", "Noor", "Felix", "Ines", "Oskar"]
TRAITS = ["cheerful", "grumpy", "curious", "shy", "bold", "sarcastic", "gentle", "restless"]
ROLES = ["librarian", "ship captain", "baker", "detective", "gardener", "musician", "pilot", "teacher"]
PLACES = ["a rainy harbour town", "a busy night market", "an old observatory", "a quiet mountain inn",
          "a crowded train station", "a lighthouse on the coast"]
TOPICS = ["the weather", "an old map", "a lost letter", "the festival tonight", "a strange noise",
          "the broken clock", "a recipe for bread", "the last train home", "a song from childhood"]
USER_LINES = ["What do you think about {t}?", "Have you heard about {t}?", "Can you tell me more about {t}?",
              "I keep thinking about {t}.", "Why does {t} matter so much to you?", "Show me {t}, please."]
BOT_LINES = ["I have been wondering about {t} since this morning, {u}.",
             "Honestly, {t} reminds me of the summer I spent in {p}.",
             "Let me tell you what I know about {t}, because it is more interesting than it sounds.",
             "Well, {u}, nobody in {p} talks about anything except {t} these days.",
             "I think {t} is the reason the whole town feels different tonight.",
             "You always ask the right questions, {u}, and {t} is no exception."]
SHORT_REPLIES = ["Sure.", "Okay then.", "Yes.", "Maybe.", "I guess so.", "Fine."]
TICS = {"blush": "*{b} blushes and looks away*", "nervous": "{b} seems nervous for a moment.",
        "stutter": "I-I d-don't know, {b} stutters."}
CYRILLIC = ["Привет, как у тебя дела сегодня вечером?", "Я не понимаю, что ты имеешь в виду, друг мой.",
            "Это очень интересная история про старый город."]
RATES = {"duplicate": 0.08, "prefix": 0.08, "short": 0.15, "tic": 0.2, "markup": 0.06, "junk": 0.08,
         "repeats": 0.06, "cyrillic": 0.05}
SOURCES = [("logs_a", 0.55), ("logs_b", 0.3), ("loud_subset", 0.15)]


def _pick_source(rng: random.Random) -> str:
    x, acc = rng.random(), 0.0
    for name, p in SOURCES:
        acc += p
        if x < acc:
            return name
    return SOURCES[-1][0]


def _bot_line(rng: random.Random, t: str, u: str, p: str, short: bool) -> str:
    if short:
        return rng.choice(SHORT_REPLIES)
    n = rng.randint(1, 3)
    return " ".join(rng.choice(BOT_LINES).format(t=t, u=u, p=p) for _ in range(n))


def _clean_episode(rng: random.Random, eid: str, n_exchanges: int, short: bool) -> ChatEpisode:
    bot, user = rng.sample(NAMES, 2)
    place, topic = rng.choice(PLACES), rng.choice(TOPICS)
    turns = []
    for _ in range(n_exchanges):
        t = rng.choice(TOPICS) if rng.random() < 0.3 else topic
        turns.append(Turn(USER, rng.choice(USER_LINES).format(t=t)))
        turns.append(Turn(BOT, _bot_line(rng, t, user, place, short)))
    return ChatEpisode(
        id=eid, turns=turns, bot_name=bot, user_name=user, source=_pick_source(rng),
        persona=f"{bot} is a {rng.choice(TRAITS)} {rng.choice(ROLES)} who lives in {place}.",
        scenario=f"{user} meets {bot} in {place} and asks about {topic}.",
    )


def _last_bot(ep: ChatEpisode) -> int:
    return max(i for i, t in enumerate(ep.turns) if t.role == BOT)


def _edit_turn(ep: ChatEpisode, i: int, text: str) -> None:
    ep.turns[i] = Turn(ep.turns[i].role, text, ep.turns[i].name)


def _plant_defects(rng: random.Random, ep: ChatEpisode, rates: dict) -> list[str]:
    planted = []
    b = _last_bot(ep)
    if rng.random() < rates["tic"]:
        kind = rng.choice(sorted(TICS))
        _edit_turn(ep, b, ep.turns[b].text + " " + TICS[kind].format(b=ep.bot_name))
        planted.append(f"tic:{kind}")
    if rng.random() < rates["markup"]:
        _edit_turn(ep, b, "*" + ep.turns[b].text)  # an action opened and never closed
        planted.append("markup")
    if rng.random() < rates["junk"]:
        _edit_turn(ep, b, ep.turns[b].text + rng.choice([" END_OF_DIALOG", " START:text_remaining:2"]))
        planted.append("junk")
    if rng.random() < rates["repeats"]:
        _edit_turn(ep, b, ep.turns[b].text + " What!!!!??!!!??????......")
        planted.append("repeats")
    if rng.random() < rates["cyrillic"]:
        i = rng.randrange(len(ep.turns))
        _edit_turn(ep, i, rng.choice(CYRILLIC))
        planted.append("cyrillic")
    return planted


def make_episodes(n: int, seed: int = 0, rates: dict | None = None) -> list[ChatEpisode]:
    """About `n` episodes; `extra["planted"]` lists the defects put into each."""
    rng, rates = random.Random(seed), {**RATES, **(rates or {})}
    out: list[ChatEpisode] = []
    while len(out) < n:
        k = len(out)
        if out and rng.random() < rates["duplicate"]:
            src = rng.choice(out)  # a re-upload: same chat, new id, different spacing
            turns = [Turn(t.role, "  " + t.text.replace(" ", "  ") if t.text else t.text, t.name) for t in src.turns]
            out.append(dataclasses.replace(src, id=f"ep{k:05d}", turns=turns, extra={"planted": ["duplicate"]}))
            continue
        ep = _clean_episode(rng, f"ep{k:05d}", rng.randint(2, 5), rng.random() < rates["short"])
        ep.extra = {"planted": _plant_defects(rng, ep, rates)}
        out.append(ep)
        if rng.random() < rates["prefix"] and len(ep.turns) > 2 and len(out) < n:
            cut = 2 * rng.randint(1, len(ep.turns) // 2 - 1) if len(ep.turns) >= 4 else 2
            old = dataclasses.replace(ep, id=f"ep{k + 1:05d}", turns=ep.turns[:cut], extra={"planted": ["prefix"]})
            out.append(old)  # the old file, before new dialogue was appended
    return out[:n]


# --- other shapes -------------------------------------------------------------------------

def sharegpt_rows(n: int, seed: int) -> list[dict]:
    rows = []
    for ep in make_episodes(n, seed, rates={k: 0.0 for k in RATES}):
        conv = [{"from": "system", "value": ep.persona}]
        conv += [{"from": "human" if t.role == USER else "gpt", "value": t.text} for t in ep.turns]
        rows.append({"id": ep.id, "conversations": conv})
    return rows


def soda_rows(n: int, seed: int) -> list[dict]:
    rng, rows = random.Random(seed), []
    for i, ep in enumerate(make_episodes(n, seed, rates={k: 0.0 for k in RATES})):
        speakers = [ep.user_name if t.role == USER else ep.bot_name for t in ep.turns]
        rows.append({"head": f"{ep.bot_name} tells a story", "relation": rng.choice(["xAttr", "xAttr", "xWant", "xReact"]),
                     "tail": rng.choice(TRAITS), "literal": f"{ep.bot_name} is {rng.choice(TRAITS)}.",
                     "narrative": ep.scenario, "dialogue": [t.text for t in ep.turns], "speakers": speakers,
                     "PersonX": ep.bot_name, "PersonY": ep.user_name, "original_index": i // 2})
    return rows


def prompt_response_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        t = rng.choice(TOPICS)
        short = rng.random() < 0.2
        resp = rng.choice(SHORT_REPLIES) if short else _bot_line(rng, t, "friend", rng.choice(PLACES), False)
        rows.append({"id": f"pr{i}", "prompt": rng.choice(USER_LINES).format(t=t), "response": resp,
                     "source": "gpt4all_demo"})
    return rows


BROKEN_LINES = ['{"id": "broken1", "turns": [', '{"id": "nobot", "turns": [{"role": "user", "text": "hello?"}]}']


def _write_jsonl(path: Path, rows: list[dict], extra_lines: list[str] = ()) -> None:
    from ..files import atomic_write_text
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + list(extra_lines)
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_demo_inputs(folder: str | os.PathLike, n: int = 400, seed: int = 0) -> list[dict]:
    """Write one file per input shape; returns the `inputs` entries that read them."""
    from .synthetic import make_rows, write_csv
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_jsonl(folder / "roleplay.jsonl", [episode_to_obj(e) for e in make_episodes(n, seed)], BROKEN_LINES)
    _write_jsonl(folder / "sharegpt.jsonl", sharegpt_rows(max(4, n // 8), seed + 1))
    _write_jsonl(folder / "soda.jsonl", soda_rows(max(4, n // 8), seed + 2))
    _write_jsonl(folder / "instructions.jsonl", prompt_response_rows(max(4, n // 8), seed + 3))
    write_csv(make_rows(max(8, n // 8), seed=seed + 4), folder / "pairs.csv")
    return [
        {"path": str(folder / "roleplay.jsonl"), "format": "episodes", "name": "rp"},
        {"path": str(folder / "sharegpt.jsonl"), "format": "sharegpt", "name": "sharegpt", "bot_name": "Assistant"},
        {"path": str(folder / "soda.jsonl"), "format": "soda", "name": "soda", "relations": ["xAttr"]},
        {"path": str(folder / "instructions.jsonl"), "format": "prompt_response", "name": "gpt4all"},
        {"path": str(folder / "pairs.csv"), "format": "pairs", "name": "arena", "tie_policy": "either",
         "pair_mode": "both"},
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="folder for the raw files")
    args = ap.parse_args(argv)
    print(json.dumps({"inputs": write_demo_inputs(args.out, args.episodes, args.seed)}, indent=2))


if __name__ == "__main__":
    main()
