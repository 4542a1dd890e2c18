"""Chat episodes -> token ids and labels for causal-LM training, and the prompt ids
generation continues: one prompt builder (`build_prompt`) serves both, so the model is
prompted with exactly the ids it was trained on.

The steps, each a lesson from earlier runs:

1. Segments (`src.gen.render`) are tokenised separately and concatenated; labels come
   from those segment lengths.
2. Labels: `response_only` (persona, scenario, user turns and speaker prefixes carry
   -100) or `all` (plain CLM).
3. Conditional EOS: EOS is appended only when the response at the end was not cut; an
   EOS after a cut response teaches the model to stop mid-sentence (gpt4all).
   `truncated` means exactly that: the end was cut.
4. Over-length: drop (reported), truncate_left (drop the oldest turns, then cut history
   tokens from the left; the final response stays whole), or truncate_right (cut the
   end: no EOS). Examples left without a trainable token are dropped.
5. BOS where the tokenizer adds one by itself (plain template; chat templates write
   their own), in training and in prompts alike (`bos_ids`).
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from ..data.chat import BOT, ChatEpisode, Turn
from .render import Segment, TokenizeConfig, render_segments, uses_chat_template

IGNORE = -100


def bos_ids(tokenizer: Any, cfg: TokenizeConfig) -> list[int]:
    """Plain template: prepend BOS where the tokenizer adds one by itself (Llama-style);
    chat templates write their own."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None or uses_chat_template(tokenizer, cfg) or bos == tokenizer.eos_token_id:
        return []
    probe = tokenizer("a")["input_ids"]
    return [bos] if probe and probe[0] == bos else []


def _tokenize_segments(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    # verbose=False: long segments are expected here (truncation comes after), no length warning
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []


# --- the one prompt builder ----------------------------------------------------------------------

def prompt_segments(ep: ChatEpisode, tokenizer: Any, cfg: TokenizeConfig) -> list[Segment]:
    """The segments before the next bot turn's text: `ep` plus an empty bot turn,
    rendered as in training, minus that turn's trainable part (a chat template may
    render an end-of-turn tag after an empty reply: that belongs to the reply)."""
    probe = dataclasses.replace(ep, turns=list(ep.turns) + [Turn(BOT, "")])
    segs = render_segments(probe, tokenizer, cfg)
    if not segs:
        raise ValueError(f"episode {ep.id}: nothing to continue (a chat template needs a user turn first)")
    last = segs[-1].turn
    return [s for s in segs if not (s.turn == last and s.trainable)]


def build_prompt(ep: ChatEpisode, tokenizer: Any, cfg: TokenizeConfig,
                 budget: int | None = None) -> tuple[list[int], int]:
    """(prompt ids, history turns left out) that make the model produce the next bot turn
    of `ep`, tokenised segment by segment exactly as training built its examples
    (tokenising the prompt text in one go can merge tokens across segment boundaries).
    Within `budget` tokens: persona/scenario stay, the oldest turns go first (the user's
    last message stays whenever possible), and as a last resort the oldest tokens are cut."""
    segs = prompt_segments(ep, tokenizer, cfg)
    by_turn: dict[int, list[int]] = {}
    for s, ids in zip(segs, _tokenize_segments(tokenizer, [s.text for s in segs])):
        by_turn.setdefault(s.turn, []).extend(ids)
    header = bos_ids(tokenizer, cfg) + by_turn.pop(-1, [])
    turns = sorted(by_turn)
    final = by_turn[turns[-1]]  # the bot prefix ("Bot: ") or generation prompt the reply continues
    history = turns[:-1]
    dropped = 0
    while True:
        body = header + [t for k in history for t in by_turn[k]] + final
        if budget is None or len(body) <= budget or len(history) <= 1:
            break
        history = history[1:]
        dropped += 1
    if budget is not None and len(body) > budget:
        body = body[len(body) - budget:]  # last resort: the newest tokens
    return body, dropped


def encode_prompt(ep: ChatEpisode, tokenizer: Any, cfg: TokenizeConfig) -> list[int]:
    """Prompt ids for generation, with no context budget (see `build_prompt`)."""
    return build_prompt(ep, tokenizer, cfg)[0]


def render_prompt(ep: ChatEpisode, tokenizer: Any, cfg: TokenizeConfig) -> str:
    """The prompt as text (for logs and tests; generation uses `build_prompt`'s ids). `ep`
    should end with the user turn to answer (a chat template merges consecutive bot turns)."""
    return "".join(s.text for s in prompt_segments(ep, tokenizer, cfg))


# --- tokenising one episode ----------------------------------------------------------------------

@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    id: str
    source: str
    group_id: str
    truncated: bool = False  # the end was cut: no EOS
    trimmed: bool = False  # older history was removed on the left
    position_ids: list[int] | None = None  # packed rows only
    n_examples: int = 1


@dataclass
class _TokSeg:
    ids: list[int]
    trainable: bool
    turn: int


def _flatten(segs: Sequence[_TokSeg], label_all: bool) -> tuple[list[int], list[int]]:
    ids, labels = [], []
    for s in segs:
        ids += s.ids
        labels += s.ids if (s.trainable or label_all) else [IGNORE] * len(s.ids)
    return ids, labels


def _fit_left(segs: list[_TokSeg], budget: int) -> tuple[list[_TokSeg], bool]:
    """Keep the final turn whole; prepend the header and as many of the latest turns as
    fit in `budget`; if even the header plus the last history turn does not fit, keep the
    last tokens of that. Returns (segments, trimmed)."""
    last_turn = segs[-1].turn
    final = [s for s in segs if s.turn == last_turn]
    header = [s for s in segs if s.turn == -1]
    turns = sorted({s.turn for s in segs if s.turn not in (-1, last_turn)})
    room = budget - sum(len(s.ids) for s in final)
    size = lambda ss: sum(len(s.ids) for s in ss)
    for j in range(len(turns) + 1):
        hist = header + [s for s in segs if s.turn in turns[j:]]
        if size(hist) <= room:
            return hist + final, j > 0
    tail = header + [s for s in segs if turns and s.turn == turns[-1]]
    flat_ids, flat_lab = [], []
    for s in tail:
        flat_ids += s.ids
        flat_lab += [s.trainable] * len(s.ids)
    keep = max(room, 0)
    cut = [_TokSeg([i], t, -1) for i, t in zip(flat_ids[len(flat_ids) - keep:], flat_lab[len(flat_lab) - keep:])] if keep else []
    return cut + final, True


def fit_example(segs: list[_TokSeg], cfg: TokenizeConfig, eos_id: int) -> tuple[list[int], list[int], bool, bool] | str:
    """(ids, labels, truncated, trimmed), or the reason the example is dropped."""
    label_all = cfg.labels == "all"
    size = lambda ss: sum(len(s.ids) for s in ss)
    trimmed = False
    if size(segs) + 1 > cfg.max_len:  # +1: room for EOS
        if cfg.over_length == "drop":
            return "too_long"
        if cfg.over_length == "truncate_right":
            ids, labels = _flatten(segs, label_all)
            return ids[:cfg.max_len], labels[:cfg.max_len], True, False
        final = [s for s in segs if s.turn == segs[-1].turn]
        if size(final) + 1 > cfg.max_len:  # the final response alone is too long: keep its start
            ids, labels = _flatten(final, label_all)
            return ids[:cfg.max_len], labels[:cfg.max_len], True, True
        segs, trimmed = _fit_left(segs, cfg.max_len - 1)
    ids, labels = _flatten(segs, label_all)
    if not ids or ids[-1] != eos_id:  # a chat template may already end the turn with EOS
        ids, labels = ids + [eos_id], labels + [eos_id]
    else:
        labels[-1] = eos_id
    return ids, labels, False, trimmed


def tokenize_episodes(episodes: list[ChatEpisode], tokenizer: Any, cfg: TokenizeConfig) -> tuple[list[Example], dict]:
    """Examples plus a report {"in", "out", "dropped": {reason: n}, "truncated", "trimmed"}."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token: cannot mark the end of a response")
    bos = bos_ids(tokenizer, cfg)
    rendered = [render_segments(ep, tokenizer, cfg) for ep in episodes]
    ids = _tokenize_segments(tokenizer, [s.text for segs in rendered for s in segs])
    out, dropped, pos = [], Counter(), 0
    for ep, segs in zip(episodes, rendered):
        toks = [_TokSeg(i, s.trainable, s.turn) for s, i in zip(segs, ids[pos:pos + len(segs)])]
        pos += len(segs)
        if bos:
            toks.insert(0, _TokSeg(bos, False, -1))
        fitted = fit_example(toks, cfg, eos) if toks else "no_bot_turn"
        if isinstance(fitted, str):
            dropped[fitted] += 1
            continue
        x_ids, labels, truncated, trimmed = fitted
        if all(lab == IGNORE for lab in labels):
            dropped["no_trainable_tokens"] += 1
            continue
        out.append(Example(x_ids, labels, ep.id, ep.source, ep.group_id, truncated, trimmed))
    report = {"in": len(episodes), "out": len(out), "dropped": dict(dropped.most_common()),
              "truncated": sum(e.truncated for e in out), "trimmed": sum(e.trimmed for e in out),
              "tokens": sum(len(e.input_ids) for e in out),
              "trainable_tokens": sum(sum(lab != IGNORE for lab in e.labels) for e in out)}
    return out, report
