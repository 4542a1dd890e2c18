"""Sampling: named presets, stop strings, reply extraction and chat-mode context budgets.

- Presets are the settings the logbooks sampled with (`logbook-1`, `logbook-sft`),
  plus greedy / typical / contrastive. Flags override single values.
- Contrastive search (`penalty_alpha`) left core transformers in v5 (it became a
  hub repo that needs remote code): it is used only where the installed
  transformers still has it, and asked for elsewhere it fails with a clear message.
- The prompt comes from `src.gen.encode.build_prompt`, the builder training's
  examples share (segments tokenised one by one), and it ends with the bot's own
  prefix ("Bot: "), so the model starts with the reply itself. The reply is decoded from the *new token ids only*
  (never by slicing decoded text, which is where fragments of the user's message
  used to leak into the bot's name), cut at the first stop string (by default the
  user's name prefix, "\\nYou:"), and a partial stop string at the very end is dropped.
- Tokens that must never be produced (the pad token, embedding rows added only to
  round the matrix up) are suppressed.
- A chat session keeps persona and scenario, and drops the oldest turns when the
  prompt would not fit `max_context - max_new_tokens`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..config import knob
from ..data.chat import BOT, USER, ChatEpisode, Turn
from .encode import build_prompt
from .render import uses_chat_template

PRESETS: dict[str, dict[str, Any]] = {
    "greedy": {"do_sample": False},
    # The first logbook's chat settings.
    "logbook-1": {"do_sample": True, "temperature": 1.0, "top_p": 0.9, "top_k": 0, "repetition_penalty": 1.05,
                  "max_new_tokens": 196},
    # What the SFT logbook settled on.
    "logbook-sft": {"do_sample": True, "temperature": 0.85, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.03,
                    "max_new_tokens": 196},
    "typical": {"do_sample": True, "temperature": 1.0, "typical_p": 0.95, "top_p": 1.0, "top_k": 0,
                "repetition_penalty": 1.05},
    "contrastive": {"do_sample": False, "penalty_alpha": 0.6, "top_k": 4},
}


class SamplingError(RuntimeError):
    """A sampling setting this installation cannot honour."""


@dataclass
class SamplingConfig:
    do_sample: bool = knob(True, "sample (true) or decode greedily (false)")
    temperature: float = knob(1.0, "softmax temperature (sampling only)")
    top_p: float = knob(1.0, "nucleus: keep the smallest set of tokens with this much probability (1 = off)")
    top_k: int = knob(0, "keep the k most likely tokens (0 = off)")
    typical_p: float = knob(1.0, "locally typical sampling mass (1 = off)")
    repetition_penalty: float = knob(1.0, "penalise tokens already in the context (1 = off)")
    max_new_tokens: int = knob(128, "tokens generated at most")
    penalty_alpha: float = knob(0.0, "contrastive search degeneration penalty (0 = off; needs transformers < 5)")
    seed: int = knob(0, "seed of the sampler")
    stop: list[str] = knob([], "stop strings (the reply is cut before the first one)")

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use the 'greedy' preset for argmax), got {self.temperature}")
        if not 0 < self.top_p <= 1 or not 0 < self.typical_p <= 1:
            raise ValueError("top_p and typical_p must be in (0, 1]")
        if self.top_k < 0 or self.max_new_tokens < 1 or self.repetition_penalty <= 0:
            raise ValueError("top_k >= 0, max_new_tokens >= 1 and repetition_penalty > 0 are required")


def sampling_config(preset: str | None = None, **overrides: Any) -> SamplingConfig:
    """A preset's settings with explicit overrides (None values are ignored)."""
    if preset and preset not in PRESETS:
        raise ValueError(f"unknown sampling preset {preset!r}; known: {', '.join(PRESETS)}")
    values = {**(PRESETS[preset] if preset else {}), **{k: v for k, v in overrides.items() if v is not None}}
    return SamplingConfig(**values)


def contrastive_supported() -> bool:
    """True when the installed transformers still runs contrastive search itself."""
    from transformers.generation.utils import GenerationMixin
    return hasattr(GenerationMixin, "_contrastive_search")


def check_supported(sc: SamplingConfig) -> None:
    """Raise SamplingError for settings the installed transformers cannot run."""
    if sc.penalty_alpha > 0 and not contrastive_supported():
        import transformers
        raise SamplingError(
            f"contrastive search (penalty_alpha={sc.penalty_alpha}) is not part of the installed transformers "
            f"{transformers.__version__}: v5 moved it to the hub repo transformers-community/contrastive-search, "
            "which needs trust_remote_code and a download. Use another preset (logbook-sft, typical, greedy), "
            "or an environment with transformers<5.")


def generate_kwargs(sc: SamplingConfig, tokenizer: Any, vocab_rows: int | None = None) -> dict[str, Any]:
    """`model.generate` keyword arguments for `sc` (stop strings are handled by `generate`)."""
    kw: dict[str, Any] = {"max_new_tokens": sc.max_new_tokens, "do_sample": sc.do_sample,
                          "repetition_penalty": sc.repetition_penalty,
                          "eos_token_id": tokenizer.eos_token_id,
                          "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                          else tokenizer.eos_token_id}
    check_supported(sc)
    if sc.penalty_alpha > 0:
        kw.update(do_sample=False, penalty_alpha=sc.penalty_alpha, top_k=max(sc.top_k, 2))
    elif sc.do_sample:
        kw.update(temperature=sc.temperature, top_p=sc.top_p, top_k=sc.top_k, typical_p=sc.typical_p)
    suppress = never_tokens(tokenizer, vocab_rows)
    if suppress:
        kw["suppress_tokens"] = suppress
    return kw


def never_tokens(tokenizer: Any, vocab_rows: int | None) -> list[int]:
    """Ids a reply must never contain: the pad token (when distinct from EOS) and the
    embedding rows beyond the tokenizer (added only to round the matrix up)."""
    out = []
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        out.append(int(tokenizer.pad_token_id))
    if vocab_rows:
        out += list(range(len(tokenizer), vocab_rows))
    return out


# --- replies ---------------------------------------------------------------------------------

@dataclass
class Generation:
    text: str  # the reply: new tokens decoded, cut at a stop string, trimmed
    raw: str  # all new tokens decoded
    token_ids: list[int]  # the new tokens (EOS included when it was produced)
    stop_reason: str  # eos | stop_string | length


def cut_reply(raw: str, stop: Sequence[str], bot_name: str | None = None, at_length: bool = False) -> tuple[str, bool]:
    """(reply, stopped): cut `raw` before the first stop string. When generation ran out
    of tokens, a trailing start of a stop string ("\\nYo" of "\\nYou:") is dropped too. A
    repeated own-name prefix ("Bot: ") at the start is removed."""
    text, stopped = raw, False
    hits = [i for i in (raw.find(s) for s in stop if s) if i >= 0]
    if hits:
        text, stopped = raw[:min(hits)], True
    elif at_length:
        for s in stop:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    text = text[:-k]
                    break
    if bot_name:
        head = text.lstrip()
        if head.startswith(f"{bot_name}:"):
            text = head[len(bot_name) + 1:]
    return text.strip(), stopped


class _StopOnStrings:
    """Stop when the decoded new tokens contain a stop string (decoding the new tokens
    each step is cheap next to a forward pass and exact for any tokenizer)."""

    def __init__(self, tokenizer: Any, stop: Sequence[str], prompt_len: int):
        self.tokenizer, self.stop, self.prompt_len = tokenizer, [s for s in stop if s], prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        text = self.tokenizer.decode(input_ids[0, self.prompt_len:], skip_special_tokens=True)
        done = any(s in text for s in self.stop)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def model_vocab_rows(model: Any) -> int | None:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return int(emb.weight.shape[0]) if emb is not None and hasattr(emb, "weight") else None


@torch.inference_mode()
def generate(model: Any, tokenizer: Any, prompt_ids: Sequence[int], sc: SamplingConfig,
             bot_name: str | None = None) -> Generation:
    """Generate one reply to `prompt_ids` (seeded, so the same call gives the same reply)."""
    from transformers import StoppingCriteriaList
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    kw = generate_kwargs(sc, tokenizer, model_vocab_rows(model))
    if sc.stop:
        kw["stopping_criteria"] = StoppingCriteriaList([_StopOnStrings(tokenizer, sc.stop, ids.shape[1])])
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # sampling never disturbs the caller's RNG (training)
        torch.manual_seed(sc.seed)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **kw)
    return _reply(out[0, ids.shape[1]:].tolist(), tokenizer, sc, bot_name)


def _reply(new: list[int], tokenizer: Any, sc: SamplingConfig, bot_name: str | None = None) -> Generation:
    """The Generation of one row of new token ids (cut after its first EOS)."""
    eos = tokenizer.eos_token_id
    if eos in new:  # everything after EOS is padding
        new = new[:new.index(eos) + 1]
    raw = tokenizer.decode([t for t in new if t != eos], skip_special_tokens=False)
    text, stopped = cut_reply(raw, sc.stop, bot_name, at_length=len(new) >= sc.max_new_tokens)
    reason = "eos" if new and new[-1] == eos else "stop_string" if stopped else "length"
    return Generation(text, raw, new, reason)


@torch.inference_mode()
def generate_batch(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], sc: SamplingConfig,
                   batch_size: int = 16) -> list[Generation]:
    """One reply to each prompt, `batch_size` prompts per `model.generate` call: many
    prompts on a CPU cost a fraction of one call each. Prompts are left-padded and
    generate takes position ids from the attention mask, so a reply does not depend on
    its batch mates (up to float rounding). One seed for the whole call: two models
    given the same prompts and seed draw from the same random stream (side-by-side
    comparisons, scripts/measure_gen.py). Stop strings are not supported (a chat
    template ends a reply with EOS); a plain-template run needs `generate`."""
    if sc.stop:
        raise ValueError("generate_batch stops at EOS only; use generate() for stop strings")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kw = generate_kwargs(sc, tokenizer, model_vocab_rows(model))
    out: list[Generation] = []
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(sc.seed)
        for start in range(0, len(prompts), batch_size):
            chunk = [list(p) for p in prompts[start:start + batch_size]]
            width = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, p in enumerate(chunk):
                ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
                mask[i, width - len(p):] = 1
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True, **kw)
            out += [_reply(row, tokenizer, sc) for row in gen[:, width:].tolist()]
    return out


# --- prompts within a context budget -------------------------------------------------------------

@dataclass
class ChatSession:
    """Persona, scenario and history of one chat; builds prompts within the budget."""
    tokenizer: Any
    tok_cfg: Any
    persona: str = ""
    scenario: str = ""
    bot_name: str = "Bot"
    user_name: str = "You"
    max_context: int = 1024
    history: list[Turn] = field(default_factory=list)

    def episode(self, user_text: str | None = None) -> ChatEpisode:
        turns = list(self.history) + ([Turn(USER, user_text)] if user_text is not None else [])
        return ChatEpisode(id="chat", turns=turns, persona=self.persona, scenario=self.scenario,
                           bot_name=self.bot_name, user_name=self.user_name, source="chat")

    def stop_strings(self, extra: Sequence[str] = ()) -> list[str]:
        """Stop where the model starts writing the user's next line."""
        if uses_chat_template(self.tokenizer, self.tok_cfg):
            return list(extra)
        return [f"\n{self.user_name}:", *extra]

    def prompt(self, user_text: str, max_new_tokens: int) -> tuple[list[int], int]:
        budget = max(8, self.max_context - max_new_tokens)
        return build_prompt(self.episode(user_text), self.tokenizer, self.tok_cfg, budget)

    def reply(self, model: Any, user_text: str, sc: SamplingConfig) -> Generation:
        sc = dataclasses.replace(sc, stop=self.stop_strings(sc.stop))
        ids, _ = self.prompt(user_text, sc.max_new_tokens)
        gen = generate(model, self.tokenizer, ids, sc, bot_name=self.bot_name)
        self.history += [Turn(USER, user_text), Turn(BOT, gen.text)]
        return gen


def context_length(model: Any, tokenizer: Any, default: int = 2048) -> int:
    """The model's positional limit (config) or the tokenizer's, whichever is known and smaller."""
    cfg = getattr(model, "config", None)
    limits = [getattr(cfg, k, None) for k in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")]
    limits = [v for v in limits if isinstance(v, int) and v > 0]
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and 0 < tml < 10**8:
        limits.append(tml)
    return min(limits) if limits else default
