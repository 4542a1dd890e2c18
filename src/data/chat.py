"""Chat episodes for the generative stages, and the readers that make them.

One record type (`ChatEpisode`: optional persona and scenario, speaker names,
user/bot turns, a source tag) is built from every shape we train on:

- `episodes`        our own JSONL, one episode per line (`turns` list)
- `sharegpt`        `conversations` / `messages` lists (from/value or role/content)
- `soda`            SODA rows: `literal` -> persona, `narrative` -> scenario,
                    kept only for the chosen `relation`s (e.g. xAttr)
- `prompt_response` one-turn instruction data (gpt4all `prompt`/`response`,
                    alpaca `instruction`/`input`/`output`)
- `pairs`           the classifier's PairRecords (arena CSV / pairwise JSONL):
                    the winner as the SFT target (ties: both / either / skip) and
                    Chain-of-Hindsight episodes ("A good answer: ... A bad answer: ...")

The contract is rows.py's: every data row read is either turned into episodes
(`ok_rows`), quarantined with its row number and a reason code, or skipped on
purpose with a counted reason (a SODA relation not selected, a tie under
`tie_policy: skip`), so `rows == ok_rows + quarantined + skipped` always holds.
A file that cannot be read at all raises `DataError`.

Why one file over 400 lines: the record type, its per-input options and the five
row shapes that build it belong together (a new shape is one adapter here and one
entry in `ROW_ADAPTERS`); the row machinery they share lives in `rows.py`.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import from_dict, knob
from .arena import read_pairs
from .rows import (DEFAULT_MAX_CELL_CHARS, DataError, Quarantined, RowError, check_file, coin, is_jsonl_path,
                   iter_jsonl_objects, open_text)
from .records import A_WINS, B_WINS, TIE, PairRecord

USER, BOT = "user", "bot"
FORMATS = ("auto", "episodes", "sharegpt", "soda", "prompt_response", "pairs")
TIE_POLICIES = ("both", "either", "skip")
PAIR_MODES = ("sft", "coh", "both")

_USER_ROLES = {"user", "human", "prompter", "you"}
_BOT_ROLES = {"bot", "assistant", "gpt", "chatgpt", "model", "char", "character"}


@dataclass
class Turn:
    role: str  # USER or BOT: who speaks, for label masking
    text: str
    name: str | None = None  # the speaker's own name where the source has several speakers


@dataclass
class ChatEpisode:
    id: str  # unique across all inputs ("<input name>:<row id>")
    turns: list[Turn]
    persona: str = ""
    scenario: str = ""
    bot_name: str | None = None
    user_name: str | None = None
    source: str = "unknown"  # tag used by the source filter and per-source name masking
    # Episodes derived from one original (both sides of a tie, SFT + CoH of one pair,
    # arena rows sharing a prompt) share a group, so the val split keeps them together.
    group_id: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.group_id:
            self.group_id = self.id

    @property
    def bot_turns(self) -> list[Turn]:
        return [t for t in self.turns if t.role == BOT]

    def speaker(self, turn: Turn) -> str | None:
        return turn.name or (self.bot_name if turn.role == BOT else self.user_name)


# --- per-input options ---------------------------------------------------------------

@dataclass
class InputSpec:
    """One raw file of the generative data mix (an entry of the config's `inputs`)."""
    path: str = knob("", "file to read (.jsonl / .json / .csv)")
    format: str = knob("auto", "shape of the rows; auto sniffs the first line (.csv -> pairs)", choices=FORMATS)
    name: str = knob("", "prefix of episode ids; default: the file stem")
    source: str = knob("", "source tag when a row has none; default: the name")
    tie_policy: str = knob("skip", "pairs: a tie gives both responses as targets, either one, or none",
                           choices=TIE_POLICIES)
    pair_mode: str = knob("sft", "pairs: winner as SFT target, Chain-of-Hindsight episodes, or both",
                          choices=PAIR_MODES)
    coh_good: str = knob("A good answer: ", "pairs/CoH: phrase before the winning response")
    coh_bad: str = knob("A bad answer: ", "pairs/CoH: phrase before the losing response")
    relations: list[str] = knob(["xAttr"], "soda: keep rows with these relations (empty = all)")
    bot_name: str = knob("", "name of the bot when the rows carry none")
    user_name: str = knob("", "name of the user when the rows carry none")
    seed: int = knob(0, "seed of the per-row coins (tie 'either', CoH order)")
    max_rows: int = knob(0, "pairs: read only N rows (0 = all), as train_pref's --max-rows; the rest are counted "
                            "as skipped 'max_rows'")
    max_rows_pick: str = knob("first", "pairs: which rows max_rows keeps: first, or sample (whole prompt groups)")

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"input format {self.format!r} is not one of {', '.join(FORMATS)}")
        if self.tie_policy not in TIE_POLICIES:
            raise ValueError(f"tie_policy {self.tie_policy!r} is not one of {', '.join(TIE_POLICIES)}")
        if self.pair_mode not in PAIR_MODES:
            raise ValueError(f"pair_mode {self.pair_mode!r} is not one of {', '.join(PAIR_MODES)}")
        self.name = self.name or Path(self.path).stem
        self.source = self.source or self.name


def input_spec(data: dict | InputSpec) -> InputSpec:
    return data if isinstance(data, InputSpec) else from_dict(InputSpec, dict(data), source="inputs")


@dataclass
class ChatReadResult:
    path: str
    format: str
    episodes: list[ChatEpisode] = field(default_factory=list)
    quarantine: list[Quarantined] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    ok_rows: int = 0

    @property
    def rows(self) -> int:
        return self.ok_rows + len(self.quarantine) + sum(self.skipped.values())

    def report(self, max_listed: int = 1000) -> dict[str, Any]:
        return {
            "file": self.path, "format": self.format, "rows": self.rows, "ok": self.ok_rows,
            "episodes": len(self.episodes), "quarantined": len(self.quarantine),
            "skipped": dict(self.skipped.most_common()),
            "reasons": dict(Counter(q.reason for q in self.quarantine).most_common()),
            "quarantined_rows": [q.__dict__ for q in self.quarantine[:max_listed]],
        }


class _Skip(Exception):
    """A row left out on purpose (counted, not quarantined)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RowError("bad_field", f"{what} is JSON {type(value).__name__}, expected a string")
    return value


def _check_episode(ep: ChatEpisode) -> ChatEpisode:
    # An episode without a non-empty bot turn has nothing to train on: a reader bug or an empty row.
    if not any(t.text.strip() for t in ep.bot_turns):
        raise RowError("no_bot_turn", "no non-empty bot turn")
    return ep


# --- row shapes -> episodes ------------------------------------------------------------

def _role(raw: Any, bot_name: str | None) -> str | None:
    r = str(raw or "").strip()
    if r.lower() in _USER_ROLES:
        return USER
    if r.lower() in _BOT_ROLES or (bot_name and r == bot_name):
        return BOT
    return None


def episode_from_obj(obj: dict, rid: str, spec: InputSpec) -> ChatEpisode:
    """Our own shape: {"id", "persona", "scenario", "bot_name", "user_name", "source",
    "group_id", "turns": [{"role": "user"|"bot", "text"} | {"speaker": NAME, "text"} | "text", ...]}.
    Plain-string turns alternate user, bot, user, ...; named speakers are the bot when
    the name equals `bot_name`."""
    raw_turns = obj.get("turns")
    if not isinstance(raw_turns, list) or not raw_turns:
        raise RowError("bad_field", "'turns' must be a non-empty list")
    bot_name = _text(obj.get("bot_name", obj.get("bot")), "bot_name") or spec.bot_name or None
    turns = []
    for i, t in enumerate(raw_turns):
        if isinstance(t, str):
            turns.append(Turn(USER if i % 2 == 0 else BOT, t))
            continue
        if not isinstance(t, dict):
            raise RowError("bad_field", f"turn {i} is JSON {type(t).__name__}, expected an object or a string")
        name = _text(t.get("speaker", t.get("name")), f"turn {i} speaker") or None
        role = _role(t.get("role", name), bot_name)
        if role is None:
            if bot_name is None or name is None:
                raise RowError("unknown_role", f"turn {i}: cannot tell who speaks (role={t.get('role')!r}, speaker={name!r})")
            role = USER  # a named speaker who is not the bot
        turns.append(Turn(role, _text(t.get("text", t.get("content")), f"turn {i} text"), name))
    return ChatEpisode(
        id=f"{spec.name}:{rid}", turns=turns, persona=_text(obj.get("persona"), "persona"),
        scenario=_text(obj.get("scenario"), "scenario"), bot_name=bot_name,
        user_name=_text(obj.get("user_name", obj.get("user")), "user_name") or spec.user_name or None,
        source=_text(obj.get("source"), "source") or spec.source,
        group_id=str(obj.get("group_id") or "") or f"{spec.name}:{rid}",
    )


def episode_from_sharegpt(obj: dict, rid: str, spec: InputSpec) -> ChatEpisode:
    """ShareGPT `conversations: [{from, value}]` or OpenAI `messages: [{role, content}]`;
    a system message becomes the persona."""
    msgs = obj.get("conversations", obj.get("messages"))
    if not isinstance(msgs, list) or not msgs:
        raise RowError("bad_field", "'conversations' must be a non-empty list")
    persona, turns = [], []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise RowError("bad_field", f"message {i} is JSON {type(m).__name__}, expected an object")
        raw_role = m.get("from", m.get("role"))
        text = _text(m.get("value", m.get("content")), f"message {i}")
        if str(raw_role).lower() == "system":
            persona.append(text)
            continue
        role = _role(raw_role, None)
        if role is None:
            raise RowError("unknown_role", f"message {i} has role {raw_role!r}")
        turns.append(Turn(role, text))
    return ChatEpisode(id=f"{spec.name}:{rid}", turns=turns, persona="\n".join(persona),
                       bot_name=spec.bot_name or None, user_name=spec.user_name or None,
                       source=_text(obj.get("source"), "source") or spec.source)


def episode_from_soda(obj: dict, rid: str, spec: InputSpec) -> ChatEpisode:
    """SODA: `dialogue` and `speakers` are parallel lists. The `literal` sentence is
    about PersonX, so PersonX speaks as the bot; `narrative` is the scenario."""
    relation = obj.get("relation")
    if spec.relations and relation not in spec.relations:
        raise _Skip(f"relation_not_selected:{relation}")
    dialogue, speakers = obj.get("dialogue"), obj.get("speakers")
    if not isinstance(dialogue, list) or not isinstance(speakers, list) or len(dialogue) != len(speakers) or not dialogue:
        raise RowError("bad_field", "'dialogue' and 'speakers' must be non-empty lists of equal length")
    names = [_text(s, "speaker") for s in speakers]
    person_x = obj.get("PersonX")
    bot = person_x if person_x in names else names[0]
    user = next((n for n in names if n != bot), None)
    turns = [Turn(BOT if n == bot else USER, _text(t, "dialogue turn"), n) for n, t in zip(names, dialogue)]
    group = obj.get("original_index")
    return ChatEpisode(id=f"{spec.name}:{rid}", turns=turns, persona=_text(obj.get("literal"), "literal"),
                       scenario=_text(obj.get("narrative"), "narrative"), bot_name=bot, user_name=user,
                       source=spec.source, group_id=f"{spec.name}:orig{group}" if group is not None else "")


_PROMPT_KEYS = ("prompt", "instruction", "question")
_RESPONSE_KEYS = ("response", "output", "answer", "completion")


def episode_from_prompt_response(obj: dict, rid: str, spec: InputSpec) -> ChatEpisode:
    """One-turn instruction data (gpt4all prompt/response, alpaca instruction/input/output)."""
    pk = next((k for k in _PROMPT_KEYS if k in obj), None)
    rk = next((k for k in _RESPONSE_KEYS if k in obj), None)
    if pk is None or rk is None:
        raise RowError("unknown_shape", "expected prompt/response (or instruction/output) fields")
    prompt = _text(obj[pk], pk)
    extra_input = _text(obj.get("input"), "input")
    if extra_input.strip():
        prompt = f"{prompt}\n\n{extra_input}"
    return ChatEpisode(id=f"{spec.name}:{rid}", turns=[Turn(USER, prompt), Turn(BOT, _text(obj[rk], rk))],
                       bot_name=spec.bot_name or None, user_name=spec.user_name or None,
                       source=_text(obj.get("source"), "source") or spec.source)


ROW_ADAPTERS: dict[str, Callable[[dict, str, InputSpec], ChatEpisode]] = {
    "episodes": episode_from_obj,
    "sharegpt": episode_from_sharegpt,
    "soda": episode_from_soda,
    "prompt_response": episode_from_prompt_response,
}


def sniff_format(obj: dict) -> str:
    if "conversations" in obj or "messages" in obj:
        return "sharegpt"
    if "dialogue" in obj and "speakers" in obj:
        return "soda"
    if "turns" in obj:
        return "episodes"
    if ("chosen" in obj and "rejected" in obj) or "response_a" in obj:
        return "pairs"
    if any(k in obj for k in _PROMPT_KEYS) and any(k in obj for k in _RESPONSE_KEYS):
        return "prompt_response"
    raise DataError(f"cannot tell the format from the keys {sorted(obj)[:12]}; set `format` for this input")


def _first_object(path: Path) -> dict:
    if path.suffix.lower() == ".json" and not is_jsonl_path(path):
        for _, _, obj in iter_jsonl_objects(path, DEFAULT_MAX_CELL_CHARS):  # an array file
            if isinstance(obj, dict):
                return obj
            break
    with open_text(path) as f:
        for line in f:
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    raise DataError(f"{path}: first line is not JSON; set `format` for this input") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}: first line is not a JSON object")
                return obj
    raise DataError(f"{path}: file has no JSON lines")


def detect_format(path: Path) -> str:
    if path.suffix.lower() in (".csv", ".tsv"):
        return "pairs"
    return sniff_format(_first_object(path))


# --- pairs -> episodes ---------------------------------------------------------------

def interleave_turns(users: list[str], bots: list[str]) -> list[Turn]:
    """A pair's prompt turns and one side's responses as alternating user/bot turns (the SFT
    episodes here and DPO's chosen/rejected episodes in src/gen/dpo_data.py share it)."""
    turns = []
    for i in range(max(len(users), len(bots))):
        if i < len(users):
            turns.append(Turn(USER, users[i]))
        if i < len(bots):
            turns.append(Turn(BOT, bots[i]))
    return turns


def pair_group_id(record: PairRecord) -> str:
    """The split group of a pair's episodes (SFT here, DPO in src/gen/dpo_data.py)."""
    # The same prompt appears many times in arena data: its episodes must not straddle the split.
    from .split import prompt_group
    return f"pair:{prompt_group(record)}"


def _coh_text(good: str, bad: str, spec: InputSpec, rid: str) -> str:
    # Both orders, decided per row, so the model reads the feedback phrase and not the position.
    if coin(spec.seed, "coh_order", rid) < 0.5:
        return f"{spec.coh_good}{good}\n{spec.coh_bad}{bad}"
    return f"{spec.coh_bad}{bad}\n{spec.coh_good}{good}"


def episodes_from_pair(record: PairRecord, spec: InputSpec) -> list[ChatEpisode]:
    """SFT targets and/or a CoH episode from one pairwise record. Raises _Skip for
    rows that give nothing on purpose (unlabelled, tie under 'skip')."""
    if record.label is None:
        raise _Skip("unlabelled")
    base = dict(persona="", scenario="", bot_name=spec.bot_name or None, user_name=spec.user_name or None,
                source=record.source or spec.source, group_id=pair_group_id(record))
    rid = f"{spec.name}:{record.id}"
    out: list[ChatEpisode] = []
    if spec.pair_mode in ("sft", "both"):
        if record.label == TIE:
            sides = {"both": ["a", "b"], "either": ["a" if coin(spec.seed, "tie", record.id) < 0.5 else "b"],
                     "skip": []}[spec.tie_policy]
            for s in sides:
                resp = record.response_a if s == "a" else record.response_b
                out.append(ChatEpisode(id=f"{rid}:{s}", turns=interleave_turns(record.prompt, resp), **base))
        else:
            winner = record.response_a if record.label == A_WINS else record.response_b
            out.append(ChatEpisode(id=rid, turns=interleave_turns(record.prompt, winner), **base))
    if spec.pair_mode in ("coh", "both") and record.label in (A_WINS, B_WINS):
        win, lose = ((record.response_a, record.response_b) if record.label == A_WINS
                     else (record.response_b, record.response_a))
        if win and lose:
            turns = interleave_turns(record.prompt, win)
            last = max(i for i, t in enumerate(turns) if t.role == BOT)
            turns[last] = Turn(BOT, _coh_text(win[-1], lose[-1], spec, record.id))
            out.append(ChatEpisode(id=f"{rid}:coh", turns=turns, extra={"coh": True}, **base))
    if not out:
        raise _Skip("tie_skipped" if record.label == TIE else "no_target")
    return out


# --- readers -------------------------------------------------------------------------

def _read_jsonl_episodes(path: Path, fmt: str, spec: InputSpec, max_cell_chars: int) -> ChatReadResult:
    result = ChatReadResult(path=str(path), format=fmt)
    adapter = ROW_ADAPTERS[fmt]
    seen: set[str] = set()
    for row_no, rid, obj in iter_jsonl_objects(path, max_cell_chars):
        try:
            if isinstance(obj, RowError):
                raise obj
            if rid in seen:
                raise RowError("duplicate_id", f"id {rid} already seen earlier in the file")
            ep = _check_episode(adapter(obj, rid, spec))
        except RowError as e:
            result.quarantine.append(Quarantined(row_no, rid, e.reason, e.detail))
            continue
        except _Skip as s:
            result.skipped[s.reason] += 1
            continue
        seen.add(rid)
        result.episodes.append(ep)
        result.ok_rows += 1
    return result


def _read_pair_episodes(path: Path, spec: InputSpec, max_cell_chars: int) -> ChatReadResult:
    pairs = read_pairs(path, max_cell_chars=max_cell_chars)
    result = ChatReadResult(path=str(path), format="pairs", quarantine=list(pairs.quarantine))
    # the file row of each record: the rows the reader did not quarantine, in order
    taken = {q.row for q in pairs.quarantine}
    record_rows = (r for r in range(1, pairs.rows + 1) if r not in taken)
    kept = None
    if spec.max_rows:  # the same pick as train_pref's --max-rows
        from .sources import limit_rows
        kept = {id(r) for r in limit_rows(pairs.records, spec.max_rows, spec.max_rows_pick, seed=spec.seed)}
    for row_no, rec in zip(record_rows, pairs.records):
        if kept is not None and id(rec) not in kept:
            result.skipped["max_rows"] += 1
            continue
        try:
            eps = [_check_episode(e) for e in episodes_from_pair(rec, spec)]
        except RowError as e:
            result.quarantine.append(Quarantined(row_no, rec.id, "empty_target" if e.reason == "no_bot_turn" else e.reason,
                                                 e.detail))
            continue
        except _Skip as s:
            result.skipped[s.reason] += 1
            continue
        result.episodes.extend(eps)
        result.ok_rows += 1
    return result


def read_chat(spec: InputSpec | dict, *, max_cell_chars: int = DEFAULT_MAX_CELL_CHARS) -> ChatReadResult:
    """Read one input into episodes. Raises DataError when the file is unreadable."""
    spec = input_spec(spec)
    path = Path(spec.path)
    check_file(path)
    fmt = detect_format(path) if spec.format == "auto" else spec.format
    if fmt == "pairs":
        return _read_pair_episodes(path, spec, max_cell_chars)
    return _read_jsonl_episodes(path, fmt, spec, max_cell_chars)


# --- writing ---------------------------------------------------------------------------

def episode_to_obj(ep: ChatEpisode) -> dict:
    """The `episodes` JSONL shape (read back by `episode_from_obj`)."""
    obj: dict[str, Any] = {"id": ep.id, "source": ep.source, "group_id": ep.group_id}
    for k in ("persona", "scenario", "bot_name", "user_name"):
        if getattr(ep, k):
            obj[k] = getattr(ep, k)
    obj["turns"] = [{"role": t.role, "text": t.text, **({"speaker": t.name} if t.name else {})} for t in ep.turns]
    return obj


def write_episodes_jsonl(episodes: list[ChatEpisode], path: str | os.PathLike) -> None:
    from ..files import atomic_write_text
    atomic_write_text(path, "".join(json.dumps(episode_to_obj(e), ensure_ascii=False) + "\n" for e in episodes))
