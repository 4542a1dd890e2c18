"""Chat episodes -> text segments, each marked trainable or not (the template step).

An episode is rendered as *segments* through a plain prompt template
(`PromptFormat`, Pygmalion-style by default) or the tokenizer's chat template.
`src.gen.encode` tokenises the segments one by one and takes labels from their
lengths: we never search for a response template in the ids (the same text
tokenises differently by context). The prompt/response boundary is exactly where
generation starts at inference time.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..config import from_dict, knob
from ..data.chat import BOT, ChatEpisode

LABEL_MODES = ("response_only", "all")
OVER_LENGTH = ("drop", "truncate_left", "truncate_right")
TEMPLATES = ("plain", "chat_template", "auto")


@dataclass
class PromptFormat:
    """Plain-text template (Pygmalion-style by default). Fields are str.format strings;
    {bot}/{user}/{name} are speaker names, {persona}/{scenario}/{text} the episode's text."""
    persona: str = knob("{bot}'s Persona: {persona}\n", "header line for a non-empty persona")
    scenario: str = knob("Scenario: {scenario}\n", "header line for a non-empty scenario")
    start: str = knob("<START>\n", "ends a non-empty header")
    user_turn: str = knob("{name}: {text}\n", "a user turn (never trained on in response_only)")
    bot_prefix: str = knob("{name}: ", "before a bot turn: part of the prompt, the model continues after it")
    bot_suffix: str = knob("\n", "after a bot turn other than the last (trained: the model learns to end its line)")
    default_bot: str = knob("Bot", "speaker name when the episode has none")
    default_user: str = knob("User", "speaker name when the episode has none")


@dataclass
class TokenizeConfig:
    template: str = knob("plain", "plain: `prompt_format`; chat_template: the tokenizer's; auto: chat template "
                         "when the tokenizer has one, else plain", choices=TEMPLATES)
    prompt_format: dict = knob({}, "overrides of PromptFormat fields for the plain template")
    labels: str = knob("response_only", "response_only: loss on bot turns only; all: plain CLM on every token",
                       choices=LABEL_MODES)
    train_on: str = knob("all_bot", "all_bot: every bot turn is a target; last_bot: only the final one",
                         choices=("all_bot", "last_bot"))
    max_len: int = knob(512, "tokens per example, EOS included")
    over_length: str = knob("truncate_left", "drop / truncate_left (keep the last turns) / truncate_right",
                            choices=OVER_LENGTH)
    packing: bool = knob(False, "pack several short examples into one max_len row (no cross-attention via collate)")
    pad_token: str = knob("<|pad|>", "added when the tokenizer has no pad token or pad == eos")
    distinct_pad: bool = knob(True, "add `pad_token` when pad == eos; false keeps pad == eos (train_gen sets it "
                                    "from --distinct-pad)")

    def __post_init__(self) -> None:
        for name, allowed in (("template", TEMPLATES), ("labels", LABEL_MODES), ("over_length", OVER_LENGTH),
                              ("train_on", ("all_bot", "last_bot"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"tokenize.{name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.max_len < 8:
            raise ValueError(f"tokenize.max_len must be at least 8, got {self.max_len}")
        self.format = from_dict(PromptFormat, dict(self.prompt_format), source="tokenize.prompt_format")


def tokenize_config(data: dict | TokenizeConfig | None) -> TokenizeConfig:
    if isinstance(data, TokenizeConfig):
        return data
    return from_dict(TokenizeConfig, dict(data or {}), source="tokenize")


def config_dict(cfg: TokenizeConfig) -> dict:
    d = asdict(cfg)
    d.pop("format", None)
    return d


# --- rendering ---------------------------------------------------------------------------------

@dataclass
class Segment:
    text: str
    trainable: bool
    turn: int  # -1 for the header; truncate_left drops whole turns


def _last_bot_index(ep: ChatEpisode) -> int:
    return max((i for i, t in enumerate(ep.turns) if t.role == BOT), default=-1)


def _plain_segments(ep: ChatEpisode, fmt: PromptFormat, train_on: str) -> list[Segment]:
    bot = ep.bot_name or fmt.default_bot
    user = ep.user_name or fmt.default_user
    header = ""
    if ep.persona.strip():
        header += fmt.persona.format(bot=bot, user=user, persona=ep.persona.strip())
    if ep.scenario.strip():
        header += fmt.scenario.format(bot=bot, user=user, scenario=ep.scenario.strip())
    segs = [Segment(header + fmt.start, False, -1)] if header else []
    last = _last_bot_index(ep)
    for i, t in enumerate(ep.turns[:last + 1]):  # turns after the last bot turn have nothing to learn from
        name = ep.speaker(t) or (bot if t.role == BOT else user)
        if t.role != BOT:
            segs.append(Segment(fmt.user_turn.format(name=name, text=t.text, bot=bot, user=user), False, i))
            continue
        target = i == last or train_on == "all_bot"
        segs.append(Segment(fmt.bot_prefix.format(name=name, bot=bot, user=user), False, i))
        segs.append(Segment(t.text, target, i))
        if i != last:  # the final turn ends with EOS instead
            segs.append(Segment(fmt.bot_suffix, target, i))
    return [s for s in segs if s.text]


class TemplateError(ValueError):
    """The tokenizer's chat template cannot be split into prompt/response segments."""


def chat_messages(ep: ChatEpisode) -> list[dict]:
    """System (persona + scenario), then alternating user/assistant messages. Leading bot
    turns (a character's greeting) go into the system message as context: a template
    cannot render an assistant message with nothing before it, and many insist that a
    user speaks first."""
    turns = ep.turns[:_last_bot_index(ep) + 1]
    first_user = next((i for i, t in enumerate(turns) if t.role != BOT), len(turns))
    greeting = [f"{ep.speaker(t) or 'Assistant'}: {t.text}" for t in turns[:first_user]]
    system = "\n".join(s for s in (ep.persona.strip(), ep.scenario.strip(), *greeting) if s)
    msgs: list[dict] = [{"role": "system", "content": system}] if system else []
    for t in turns[first_user:]:
        role = "assistant" if t.role == BOT else "user"
        if msgs and msgs[-1]["role"] == role:  # many templates insist on alternation: merge
            msgs[-1] = {"role": role, "content": msgs[-1]["content"] + "\n" + t.text}
        else:
            msgs.append({"role": role, "content": t.text})
    return msgs


def _chat_segments(ep: ChatEpisode, tokenizer: Any, train_on: str) -> list[Segment]:
    """Render message by message; each message's segment is the text it adds to the
    previous render, and a bot message is split at the generation prompt."""
    msgs = chat_messages(ep)
    if not any(m["role"] == "assistant" for m in msgs):
        return []

    def render(k: int, gen: bool = False) -> str:
        if k == 0:
            return ""
        return tokenizer.apply_chat_template(msgs[:k], tokenize=False, add_generation_prompt=gen)
    last = max(k for k, m in enumerate(msgs) if m["role"] == "assistant")
    segs, prev = [], ""
    for k, m in enumerate(msgs):
        full = render(k + 1)
        if m["role"] == "assistant":
            gen = render(k, gen=True)
            if not (gen.startswith(prev) and full.startswith(gen)):
                raise TemplateError("the chat template is not prefix-stable (earlier turns change when a turn is "
                                    "added); use `template: plain`")
            segs.append(Segment(gen[len(prev):], False, k))
            segs.append(Segment(full[len(gen):], k == last or train_on == "all_bot", k))
        else:
            if not full.startswith(prev):
                raise TemplateError("the chat template is not prefix-stable; use `template: plain`")
            segs.append(Segment(full[len(prev):], False, -1 if m["role"] == "system" else k))
        prev = full
    return [s for s in segs if s.text]


def uses_chat_template(tokenizer: Any, cfg: TokenizeConfig) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if cfg.template == "chat_template" and not has:
        raise TemplateError("template: chat_template, but the tokenizer has no chat template")
    return cfg.template == "chat_template" or (cfg.template == "auto" and has)


def render_segments(ep: ChatEpisode, tokenizer: Any, cfg: TokenizeConfig) -> list[Segment]:
    if _last_bot_index(ep) < 0:
        return []
    if uses_chat_template(tokenizer, cfg):
        return _chat_segments(ep, tokenizer, cfg.train_on)
    return _plain_segments(ep, cfg.format, cfg.train_on)
