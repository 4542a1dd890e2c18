"""Cleaning filters for chat episodes: each one a lesson a fine-tuning logbook paid for.

Every filter has the same shape:

    filter(episodes, cfg, seed) -> (kept_episodes, report_entry)

with `report_entry = {"filter", "in", "out", "dropped": {reason: n}, "modified": k, "details": {...}}`
and `in == out + sum(dropped)` always (checked when the entry is built). Filters
never mutate their input: a modified episode is a new object.

Randomness is per episode, from a hash of (seed, filter name, episode id)
(`rows.coin`), never from iteration order, so the kept set does not depend on
how the input was ordered or which other episodes are present.

Each filter's config block is a small dataclass (documented at the field);
`apply_filters` runs the blocks in `DEFAULT_ORDER` (or a given order).

Why one file over 400 lines: ten filters of one shape, each a config dataclass
plus a function of ~40 lines; side by side they read as one list (the order they
run in, the reasons they count), and none is large enough to stand alone.
"""
from __future__ import annotations

import dataclasses
import re
import statistics
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from ..config import from_dict, knob
from .chat import BOT, ChatEpisode, Turn
from .rows import coin, stable_hash

Entry = dict[str, Any]


@dataclass
class _Report:
    name: str
    n_in: int
    dropped: Counter = field(default_factory=Counter)
    modified: int = 0
    details: Counter = field(default_factory=Counter)
    dropped_ids: dict = field(default_factory=dict)

    def drop(self, reason: str, ep: ChatEpisode) -> None:
        self.dropped[reason] += 1
        self.dropped_ids.setdefault(reason, []).append(ep.id)

    def entry(self, kept: list, n_examples: int = 5) -> Entry:
        out = {"filter": self.name, "in": self.n_in, "out": len(kept), "dropped": dict(self.dropped.most_common()),
               "modified": self.modified, "details": dict(self.details),
               # a few ids per reason (the smallest, so the sample does not depend on order), to go and look at
               "examples": {r: sorted(ids)[:n_examples] for r, ids in self.dropped_ids.items()}}
        if self.n_in != out["out"] + sum(self.dropped.values()):
            raise AssertionError(f"filter {self.name}: counts do not add up: {out}")
        return out


def norm(text: str) -> str:
    """Case- and whitespace-insensitive form used for hashing and matching."""
    return " ".join(text.lower().split())


def _with_turns(ep: ChatEpisode, turns: list[Turn], **changes: Any) -> ChatEpisode:
    return dataclasses.replace(ep, turns=turns, **changes)


def _has_bot_text(turns: list[Turn]) -> bool:
    return any(t.role == BOT and t.text.strip() for t in turns)


def _remove_turns(ep: ChatEpisode, bad: list[int], action: str) -> ChatEpisode | None:
    """drop_turn: remove only the bad turns; cut: remove the first bad turn and all
    after it (later turns answer to it); drop_episode: None. None also when no bot
    text would be left."""
    if not bad:
        return ep
    if action == "drop_episode":
        return None
    turns = ep.turns[:min(bad)] if action == "cut" else [t for i, t in enumerate(ep.turns) if i not in set(bad)]
    return _with_turns(ep, turns) if _has_bot_text(turns) else None


TURN_ACTIONS = ("drop_turn", "cut", "drop_episode")


# --- source drop / cap ---------------------------------------------------------------------

@dataclass
class SourceDropConfig:
    enabled: bool = knob(True, "run this filter")
    sources: list[str] = knob([], "drop every episode of these source tags (a whole subset that hurt a run)")


def source_drop(episodes: list[ChatEpisode], cfg: SourceDropConfig, seed: int) -> tuple[list[ChatEpisode], Entry]:
    rep, kept = _Report("source_drop", len(episodes)), []
    for ep in episodes:
        if ep.source in cfg.sources:
            rep.drop(f"source_dropped:{ep.source}", ep)
        else:
            kept.append(ep)
    return kept, rep.entry(kept)


@dataclass
class SourceCapConfig:
    enabled: bool = knob(True, "run this filter")
    cap: dict = knob({}, "source tag -> at most this many episodes (so one subset does not overpower the rest)")
    keep_frac: dict = knob({}, "source tag -> keep about this fraction of its episodes")

    def __post_init__(self) -> None:
        for name, frac in self.keep_frac.items():
            if not 0.0 <= float(frac) <= 1.0:
                raise ValueError(f"source_cap.keep_frac[{name}] must be in [0, 1], got {frac}")


def source_cap(episodes: list[ChatEpisode], cfg: SourceCapConfig, seed: int) -> tuple[list[ChatEpisode], Entry]:
    # Keep the episodes with the lowest per-episode hash: a seeded sample that does
    # not depend on input order (a rank, not a running counter).
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, ep in enumerate(episodes):
        by_source[ep.source].append(i)
    drop: set[int] = set()
    for src, idx in by_source.items():
        limit = len(idx)
        if src in cfg.keep_frac:
            limit = min(limit, round(float(cfg.keep_frac[src]) * len(idx)))
        if src in cfg.cap:
            limit = min(limit, int(cfg.cap[src]))
        ranked = sorted(idx, key=lambda i: (coin(seed, "source_cap", episodes[i].id), episodes[i].id))
        drop.update(ranked[limit:])
    rep, kept = _Report("source_cap", len(episodes)), []
    for i, ep in enumerate(episodes):
        if i in drop:
            rep.drop(f"source_capped:{ep.source}", ep)
        else:
            kept.append(ep)
    return kept, rep.entry(kept)


# --- junk tokens ---------------------------------------------------------------------------

@dataclass
class JunkConfig:
    enabled: bool = knob(True, "run this filter")
    tokens: list[str] = knob(["END_OF_DIALOG"], "literal redaction/control strings removed from every text")
    patterns: list[str] = knob([r"START:text_remaining:\d+"], "regular expressions removed from every text")
    control_chars: bool = knob(True, "remove ASCII control characters other than tab and newline")


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _junk_regex(cfg: JunkConfig) -> re.Pattern | None:
    parts = [re.escape(t) for t in cfg.tokens if t] + [p for p in cfg.patterns if p]
    if cfg.control_chars:
        parts.append(_CONTROL.pattern)
    return re.compile("|".join(f"(?:{p})" for p in parts)) if parts else None


def _tidy(text: str) -> str:
    # Removing a token leaves double spaces or a blank line behind.
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def junk(episodes: list[ChatEpisode], cfg: JunkConfig, seed: int) -> tuple[list[ChatEpisode], Entry]:
    """Scraped chat logs carry markers of the scraper (END_OF_DIALOG, START:text_remaining:2);
    a model trained on them prints them. Remove them; drop turns left empty."""
    rx, rep, kept = _junk_regex(cfg), _Report("junk", len(episodes)), []
    for ep in episodes:
        if rx is None:
            kept.append(ep)
            continue
        n = 0

        def clean(s: str) -> str:
            nonlocal n
            s2, k = rx.subn("", s)
            n += k
            return _tidy(s2) if k else s
        turns = [Turn(t.role, clean(t.text), t.name) for t in ep.turns]
        persona, scenario = clean(ep.persona), clean(ep.scenario)
        if n == 0:
            kept.append(ep)
            continue
        rep.details["strings_removed"] += n
        turns = [t for t in turns if t.text.strip()]
        if not _has_bot_text(turns):
            rep.drop("empty_after_cleaning", ep)
            continue
        rep.modified += 1
        kept.append(_with_turns(ep, turns, persona=persona, scenario=scenario))
    return kept, rep.entry(kept)


# --- repeated punctuation / characters -------------------------------------------------------

@dataclass
class RepeatsConfig:
    enabled: bool = knob(True, "run this filter")
    action: str = knob("collapse", "collapse the runs, or drop_turn / cut / drop_episode where one occurs",
                       choices=("collapse",) + TURN_ACTIONS)
    max_punct_run: int = knob(3, "a run of more punctuation marks than this is junk ('!!!!??!!!??????......')")
    max_char_repeat: int = knob(4, "a letter repeated more times than this is junk ('soooooooo'); collapsed to this many")

    def __post_init__(self) -> None:
        if self.action not in ("collapse",) + TURN_ACTIONS:
            raise ValueError(f"repeats.action {self.action!r} is not collapse/drop_turn/cut/drop_episode")


def _collapse_punct(m: re.Match) -> str:
    # "!!!!??!!!??????......" -> "!?..." : each mark once, in order, an ellipsis stays one.
    seen = list(dict.fromkeys(m.group(0)))
    return "".join("..." if c == "." else c for c in seen)


def _repeat_regexes(cfg: RepeatsConfig) -> tuple[re.Pattern, re.Pattern]:
    punct = re.compile(r"[!?.,;:~]{%d,}" % (cfg.max_punct_run + 1))
    chars = re.compile(r"([^\W\d_])\1{%d,}" % cfg.max_char_repeat)
    return punct, chars


def repeats(episodes: list[ChatEpisode], cfg: RepeatsConfig, seed: int) -> tuple[list[ChatEpisode], Entry]:
    """Logs full of '!!!!??!!!??????' and 'nooooooo' teach the model to degenerate into
    them (and BPE makes each a rare, expensive token run)."""
    punct, chars = _repeat_regexes(cfg)
    # A run is junk when collapsing changes it: "...?" and "...," stay, "!!!!" and "...." do not.
    fix = lambda s: chars.sub(lambda m: m.group(1) * cfg.max_char_repeat, punct.sub(_collapse_punct, s))
    rep, kept = _Report("repeats", len(episodes)), []
    for ep in episodes:
        fixed = [fix(t.text) for t in ep.turns]
        bad = [i for i, (t, f) in enumerate(zip(ep.turns, fixed)) if f != t.text]
        if not bad:
            kept.append(ep)
            continue
        rep.details["turns_with_runs"] += len(bad)
        if cfg.action == "collapse":
            new = _with_turns(ep, [Turn(t.role, f, t.name) for t, f in zip(ep.turns, fixed)])
        else:
            new = _remove_turns(ep, bad, cfg.action)
        if new is None:
            rep.drop("repeated_chars", ep)
        else:
            rep.modified += 1
            kept.append(new)
    return kept, rep.entry(kept)


# --- non-target script -----------------------------------------------------------------------

@dataclass
class ScriptConfig:
    enabled: bool = knob(True, "run this filter")
    target: list[str] = knob(["LATIN"], "Unicode script names of the training language (first word of the character name)")
    min_ratio: float = knob(0.5, "a turn with a smaller share of target-script letters is in another language")
    min_letters: int = knob(8, "turns with fewer letters are not judged (names, 'ok', emoji)")
    action: str = knob("drop_turn", "drop_turn / cut (the turn and all after it) / drop_episode", choices=TURN_ACTIONS)

    def __post_init__(self) -> None:
        if self.action not in TURN_ACTIONS:
            raise ValueError(f"script.action {self.action!r} is not one of {', '.join(TURN_ACTIONS)}")
        self.target = [t.upper() for t in self.target]


@lru_cache(maxsize=65536)
def char_script(ch: str) -> str:
    """The script of a letter from its Unicode name: 'LATIN', 'CYRILLIC', 'CJK', 'GREEK', ..."""
    return unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]


def target_ratio(text: str, target: list[str]) -> tuple[float, int]:
    """(share of letters in a target script, number of letters). No language model needed."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 1.0, 0
    return sum(char_script(c) in target for c in letters) / len(letters), len(letters)


def script(episodes: list[ChatEpisode], cfg: ScriptConfig, seed: int) -> tuple[list[ChatEpisode], Entry]:
    """Multilingual scrapes (Cyrillic role-play logs in an English set) made an English
    model switch language mid-reply; a letter-script ratio finds them without a model."""
    rep, kept = _Report("script", len(episodes)), []
    for ep in episodes:
        bad = []
        for i, t in enumerate(ep.turns):
            ratio, n = target_ratio(t.text, cfg.target)
            if n >= cfg.min_letters and ratio < cfg.min_ratio:
                bad.append(i)
        new = _remove_turns(ep, bad, cfg.action)
        rep.details["turns_non_target"] += len(bad)
        if new is None:
            rep.drop("non_target_script", ep)
            continue
        rep.modified += new is not ep
        kept.append(new)
    return kept, rep.entry(kept)


# --- unbalanced markup -----------------------------------------------------------------------

@dataclass
class MarkupConfig:
    enabled: bool = knob(True, "run this filter")
    chars: list[str] = knob(["*", '"'], "marks that come in pairs (*actions*, \"speech\") in bot turns")
    action: str = knob("drop", "drop the episode, or repair (remove the last unmatched mark)", choices=("drop", "repair"))

    def __post_init__(self) -> None:
        if self.action not in ("drop", "repair"):
            raise ValueError(f"markup.action {self.action!r} is not drop/repair")


_BULLET = re.compile(r"(?m)^[ \t]*\*(?=[ \t])")  # "* item": a markdown bullet, not an action
_CODE = re.compile(r"```.*?(?:```|\Z)", re.S)  # quotes and stars inside code are code
_CENSOR = re.compile(r"(?<=\w)\*(?=\w)|(?<=\w)\*{2,}")  # "f*ck", "c***": censoring, not markup


def mark_positions(text: str, c: str) -> list[int]:
    """Where `c` is used as paired markup: outside code blocks, not as a list bullet or
    inside a censored word."""
    if c not in text:
        return []
    skip = {i for m in _CODE.finditer(text) for i in range(m.start(), m.end())}
    if c == "*":
        skip.update(m.end() - 1 for m in _BULLET.finditer(text))
        skip.update(i for m in _CENSOR.finditer(text) for i in range(m.start(), m.end()))
    return [i for i, ch in enumerate(text) if ch == c and i not in skip]


def _unbalanced(text: str, chars: list[str]) -> bool:
    return any(len(mark_positions(text, c)) % 2 for c in chars)


def _repair(text: str, chars: list[str]) -> str:
    for c in chars:
        pos = mark_positions(text, c)
        if len(pos) % 2:
            i = pos[-1]  # the last mark is the one left open
            text = _tidy(text[:i] + text[i + 1:])
    return text


def markup(episodes: list[ChatEpisode], cfg: MarkupConfig, seed: int) -> tuple[list[ChatEpisode], Entry]:
    """A model trained on '*smiles and' (an action never closed) leaves its own actions
    open, and the chat front-end renders the rest of the reply in italics."""
    rep, kept = _Report("markup", len(episodes)), []
    for ep in episodes:
        odd = [i for i, t in enumerate(ep.turns) if t.role == BOT and _unbalanced(t.text, cfg.chars)]
        if not odd:
            kept.append(ep)
        elif cfg.action == "drop":
            rep.drop("unbalanced_markup", ep)
        else:
            turns = [Turn(t.role, _repair(t.text, cfg.chars), t.name) if i in odd else t for i, t in enumerate(ep.turns)]
            rep.modified += 1
            rep.details["turns_repaired"] += len(odd)
            kept.append(_with_turns(ep, turns))
    return kept, rep.entry(kept)


# --- character-name masking ------------------------------------------------------------------

@dataclass
class NamesConfig:
    enabled: bool = knob(False, "run this filter")
    sources: list[str] = knob([], "mask only episodes of these source tags (empty = every source)")
    bot_placeholder: str = knob("{{char}}", "replaces the bot's name in every text and as its speaker name")
    user_placeholder: str = knob("{{user}}", "replaces the user's name(s)")
    first_names: bool = knob(True, "also mask the first word of a multi-word name ('Lilah' of 'Lilah Brooks')")


def _name_pattern(names: list[str]) -> re.Pattern | None:
    names = sorted({n for n in names if len(n) >= 2}, key=len, reverse=True)  # longest first
    return re.compile(r"\b(?:%s)\b" % "|".join(map(re.escape, names))) if names else None


def _name_variants(name: str | None, cfg: NamesConfig) -> list[str]:
    if not name or name in (cfg.bot_placeholder, cfg.user_placeholder):
        return []
    parts = name.split()
    return [name] + ([parts[0]] if cfg.first_names and len(parts) > 1 else [])


def _mask_episode(ep: ChatEpisode, cfg: NamesConfig) -> ChatEpisode:
    bot_names = {ep.bot_name} | {t.name for t in ep.turns if t.role == BOT and t.name}
    user_names = ({ep.user_name} | {t.name for t in ep.turns if t.role != BOT and t.name}) - bot_names
    mapping = {v: cfg.bot_placeholder for n in bot_names for v in _name_variants(n, cfg)}
    mapping.update({v: cfg.user_placeholder for n in user_names for v in _name_variants(n, cfg) if v not in mapping})
    rx = _name_pattern(list(mapping))
    if rx is None:
        return ep
    sub = lambda s: rx.sub(lambda m: mapping[m.group(0)], s)
    turns = [Turn(t.role, sub(t.text), mapping.get(t.name, t.name) if t.name else None) for t in ep.turns]
    return _with_turns(ep, turns, persona=sub(ep.persona), scenario=sub(ep.scenario),
                       bot_name=cfg.bot_placeholder if ep.bot_name else None,
                       user_name=cfg.user_placeholder if ep.user_name else None)


def names(episodes: list[ChatEpisode], cfg: NamesConfig, seed: int) -> tuple[list[ChatEpisode], Entry]:
    """A character set where one name fills 5% of all turns makes the model call every
    user by it; placeholders let the persona supply the name at inference."""
    rep, kept = _Report("names", len(episodes)), []
    for ep in episodes:
        new = _mask_episode(ep, cfg) if not cfg.sources or ep.source in cfg.sources else ep
        rep.modified += new != ep
        kept.append(new)
    return kept, rep.entry(kept)


# --- dedup -----------------------------------------------------------------------------------

@dataclass
class DedupConfig:
    enabled: bool = knob(True, "run this filter")
    exact: bool = knob(True, "drop episodes whose normalised text equals another's (the smallest id is kept)")
    prefix: bool = knob(True, "drop episodes whose turns are a prefix of a longer episode with the same header")


def _header_key(ep: ChatEpisode) -> bytes:
    return stable_hash(norm(ep.persona), norm(ep.scenario), norm(ep.bot_name or ""), norm(ep.user_name or ""),
                       sep="\x1e", size=16)


def _turn_chain(ep: ChatEpisode) -> list[bytes]:
    """Hash of each turn prefix: chain[k] identifies turns[:k+1] under this header."""
    h, chain = _header_key(ep), []
    for t in ep.turns:
        h = stable_hash(h.hex(), t.role, norm(ep.speaker(t) or ""), norm(t.text), sep="\x1e", size=16)
        chain.append(h)
    return chain


def dedup(episodes: list[ChatEpisode], cfg: DedupConfig, seed: int) -> tuple[list[ChatEpisode], Entry]:
    """Re-uploads of the same logs (and old files re-submitted with new dialogue appended)
    made the model memorise those chats. Exact copies keep the smallest id; an episode
    whose turns are a proper prefix of another's is dropped for the longer one. The kept
    set depends only on the set of episodes, not their order, and a second pass drops nothing."""
    rep = _Report("dedup", len(episodes))
    chains = [_turn_chain(ep) for ep in episodes]
    keep = set(range(len(episodes)))
    if cfg.exact:
        best: dict[bytes, int] = {}
        for i, ep in enumerate(episodes):
            k = chains[i][-1] if chains[i] else _header_key(ep)
            if k not in best or _rank(ep) < _rank(episodes[best[k]]):
                best[k] = i
        winners = set(best.values())
        for i in range(len(episodes)):
            if i not in winners:
                keep.discard(i)
                rep.drop("exact_duplicate", episodes[i])
    if cfg.prefix:
        proper = {h for i in keep for h in chains[i][:-1]}
        for i in sorted(keep):
            if chains[i] and chains[i][-1] in proper:
                keep.discard(i)
                rep.drop("prefix_of_longer", episodes[i])
    kept = [ep for i, ep in enumerate(episodes) if i in keep]
    return kept, rep.entry(kept)


def _rank(ep: ChatEpisode) -> tuple:
    # Which copy survives: the smallest id, then the raw text, so that it never depends on order.
    return (ep.id, repr(ep))


# --- short responses -------------------------------------------------------------------------

@dataclass
class ShortResponseConfig:
    enabled: bool = knob(True, "run this filter")
    mode: str = knob("linear", "linear: drop probability falls from 1 at `low` to 0 at `high` median words; "
                     "min_words: drop when the median is below `min_words`", choices=("linear", "min_words"))
    low: float = knob(4.0, "median bot words at or below which an episode is always dropped")
    high: float = knob(12.0, "median bot words at or above which an episode is always kept")
    min_words: float = knob(3.0, "min_words mode: the hard minimum of the median bot words")

    def __post_init__(self) -> None:
        if self.mode not in ("linear", "min_words"):
            raise ValueError(f"short_response.mode {self.mode!r} is not linear/min_words")
        if self.mode == "linear" and not self.low < self.high:
            raise ValueError(f"short_response: low ({self.low}) must be below high ({self.high})")


def median_bot_words(ep: ChatEpisode) -> float:
    counts = [len(t.text.split()) for t in ep.bot_turns]
    return float(statistics.median(counts)) if counts else 0.0


def short_drop_probability(median_words: float, cfg: ShortResponseConfig) -> float:
    if cfg.mode == "min_words":
        return 1.0 if median_words < cfg.min_words else 0.0
    if median_words <= cfg.low:
        return 1.0
    if median_words >= cfg.high:
        return 0.0
    return (cfg.high - median_words) / (cfg.high - cfg.low)


def short_response(episodes: list[ChatEpisode], cfg: ShortResponseConfig, seed: int) -> tuple[list[ChatEpisode], Entry]:
    """Chats whose bot mostly answers in three words taught the model terse, lazy replies;
    judging the episode's median (not each turn) keeps the odd short 'Sure.' in long chats."""
    rep, kept = _Report("short_response", len(episodes)), []
    for ep in episodes:
        if coin(seed, "short_response", ep.id) < short_drop_probability(median_bot_words(ep), cfg):
            rep.drop("short_responses", ep)
        else:
            kept.append(ep)
    return kept, rep.entry(kept)


# --- keyword-balanced downsampling -----------------------------------------------------------

@dataclass
class KeywordsConfig:
    enabled: bool = knob(True, "run this filter")
    groups: dict = knob({}, "group name -> {words: [...], p_drop: P}: episodes matching a word are dropped "
                            "with probability P (words match as word prefixes, any case)")
    fields: str = knob("bot", "search bot turns only, or all text", choices=("bot", "all"))

    def __post_init__(self) -> None:
        for name, g in self.groups.items():
            if not isinstance(g, dict) or not g.get("words") or not 0.0 <= float(g.get("p_drop", -1)) <= 1.0:
                raise ValueError(f"keywords.groups[{name}] needs a non-empty `words` list and `p_drop` in [0, 1]")


def _episode_text(ep: ChatEpisode, fields: str) -> str:
    turns = ep.bot_turns if fields == "bot" else ep.turns
    head = [] if fields == "bot" else [ep.persona, ep.scenario]
    return "\n".join(head + [t.text for t in turns])


def keywords(episodes: list[ChatEpisode], cfg: KeywordsConfig, seed: int) -> tuple[list[ChatEpisode], Entry]:
    """Role-play logs where every reply blushes, stutters or is nervous made every
    character do so; drop a seeded share of the episodes carrying the tic."""
    groups = [(name, re.compile(r"\b(?:%s)\w*" % "|".join(map(re.escape, g["words"])), re.IGNORECASE),
               float(g["p_drop"])) for name, g in cfg.groups.items()]
    rep, kept = _Report("keywords", len(episodes)), []
    for ep in episodes:
        text, reason = _episode_text(ep, cfg.fields), None
        for name, rx, p in groups:
            if rx.search(text):
                rep.details[f"matched:{name}"] += 1
                if reason is None and coin(seed, "keywords", name, ep.id) < p:
                    reason = f"keyword:{name}"
        if reason:
            rep.drop(reason, ep)
        else:
            kept.append(ep)
    return kept, rep.entry(kept)


# --- running them ----------------------------------------------------------------------------

FILTERS: dict[str, tuple[type, Callable]] = {
    "source_drop": (SourceDropConfig, source_drop),
    "junk": (JunkConfig, junk),
    "repeats": (RepeatsConfig, repeats),
    "script": (ScriptConfig, script),
    "markup": (MarkupConfig, markup),
    "names": (NamesConfig, names),
    "dedup": (DedupConfig, dedup),
    "short_response": (ShortResponseConfig, short_response),
    "keywords": (KeywordsConfig, keywords),
    "source_cap": (SourceCapConfig, source_cap),
}
# Cleaning before dedup (so copies that differ only in junk collapse), names before dedup
# (so copies that differ only in a name collapse), sampling filters after dedup (so a
# duplicate does not get two chances to survive), capping last (caps the final count).
DEFAULT_ORDER = list(FILTERS)


def filter_config(name: str, data: dict | Any | None) -> Any:
    cls = FILTERS[name][0]
    if data is None:
        return cls()
    return data if isinstance(data, cls) else from_dict(cls, dict(data), source=f"filter '{name}'", path=name)


def apply_filters(episodes: list[ChatEpisode], configs: dict[str, Any], seed: int,
                  order: list[str] | None = None) -> tuple[list[ChatEpisode], list[Entry]]:
    """Run the enabled filters in order; returns kept episodes and one entry per filter."""
    order = order or DEFAULT_ORDER
    unknown = [n for n in list(order) + list(configs) if n not in FILTERS]
    if unknown:
        raise ValueError(f"unknown filter(s) {', '.join(unknown)}; known: {', '.join(FILTERS)}")
    entries = []
    for name in order:
        cfg = filter_config(name, configs.get(name))
        if not cfg.enabled:
            continue
        episodes, entry = FILTERS[name][1](episodes, cfg, seed)
        entries.append(entry)
    return episodes, entries
