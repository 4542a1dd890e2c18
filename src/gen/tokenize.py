"""Chat episodes -> token ids and labels for causal-LM fine-tuning.

The steps, each a lesson from earlier runs:

1. Render an episode as *segments* of text, each marked trainable or not
   (`render_segments`), through a plain prompt template or the tokenizer's chat
   template. Segments are tokenised separately and concatenated, and labels come
   from those segment lengths: we never search for a response template in the
   ids (the same text tokenises differently by context). The prompt/response
   boundary is exactly where generation starts at inference time.
2. Labels: `response_only` (persona, scenario, user turns and speaker prefixes
   carry -100) or `all` (plain CLM).
3. Conditional EOS: EOS is appended only when the response at the end was not
   cut; an EOS after a cut response teaches the model to stop mid-sentence
   (gpt4all). `truncated` means exactly that: the end was cut.
4. Over-length: drop (reported), truncate_left (drop the oldest turns, then cut
   history tokens from the left; the final response stays whole), or
   truncate_right (cut the end: no EOS). Examples left without a trainable
   token are dropped.
5. A pad token distinct from EOS (`ensure_pad_token`): with pad == eos, masking
   padding by id also masks the real EOS, and the model never learns to stop.
6. Optional packing (`pack_examples`) with position ids restarting per example;
   `collate` turns them into a block-diagonal causal mask so examples do not
   attend to each other.
7. Validation split grouped by the episode's `group_id` (`split_by_group`).
"""
from __future__ import annotations

import bisect
import json
import math
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import from_dict, knob
from ..data.chat import BOT, ChatEpisode
from ..data.rows import coin

IGNORE = -100
FORMAT_VERSION = "prefpipe.chat_tokens/1"
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


# --- rendering -------------------------------------------------------------------------------

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


def _messages(ep: ChatEpisode) -> list[dict]:
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
    msgs = _messages(ep)
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


def _prompt_segments(ep: ChatEpisode, tokenizer: Any, cfg: TokenizeConfig) -> list[Segment]:
    from ..data.chat import Turn
    probe = ChatEpisode(**{**ep.__dict__, "turns": list(ep.turns) + [Turn(BOT, "")]})
    segs = render_segments(probe, tokenizer, cfg)
    if not segs:
        raise ValueError(f"episode {ep.id}: nothing to continue (a chat template needs a user turn first)")
    last = segs[-1].turn
    return [s for s in segs if not (s.turn == last and s.trainable)]


def render_prompt(ep: ChatEpisode, tokenizer: Any, cfg: TokenizeConfig) -> str:
    """The text a model continues to produce the next bot turn: the whole episode as
    context plus the bot prefix (or the template's generation prompt). `ep` should end
    with the user turn to answer (a chat template merges consecutive bot turns)."""
    return "".join(s.text for s in _prompt_segments(ep, tokenizer, cfg))


def encode_prompt(ep: ChatEpisode, tokenizer: Any, cfg: TokenizeConfig) -> list[int]:
    """Prompt ids for generation, tokenised segment by segment exactly as in training.
    Tokenising `render_prompt(...)` in one go can merge tokens across segment
    boundaries and hand the model a prompt it never saw in training."""
    texts = [s.text for s in _prompt_segments(ep, tokenizer, cfg)]
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []
    return _bos_ids(tokenizer, cfg) + [i for seg in ids for i in seg]


# --- tokenising one episode ------------------------------------------------------------------

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


def _bos_ids(tokenizer: Any, cfg: TokenizeConfig) -> list[int]:
    """Plain template: prepend BOS where the tokenizer adds one by itself (Llama-style);
    chat templates write their own."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None or uses_chat_template(tokenizer, cfg) or bos == tokenizer.eos_token_id:
        return []
    probe = tokenizer("a")["input_ids"]
    return [bos] if probe and probe[0] == bos else []


def tokenize_episodes(episodes: list[ChatEpisode], tokenizer: Any, cfg: TokenizeConfig) -> tuple[list[Example], dict]:
    """Examples plus a report {"in", "out", "dropped": {reason: n}, "truncated", "trimmed"}."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token: cannot mark the end of a response")
    bos = _bos_ids(tokenizer, cfg)
    rendered = [render_segments(ep, tokenizer, cfg) for ep in episodes]
    texts = [s.text for segs in rendered for s in segs]
    # verbose=False: long segments are expected here (truncation comes after), no length warning
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []
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


# --- pad token and embeddings ------------------------------------------------------------------

def ensure_pad_token(model: Any, tokenizer: Any, pad_token: str = "<|pad|>", multiple_of: int = 64) -> dict:
    """Give the tokenizer a pad token distinct from EOS (adding `pad_token` when it has
    none, or when pad == eos) and, when a model is given, size its embeddings to cover
    the tokenizer, rounded up to a multiple of 64 (tensor-core friendly). New rows get
    the mean embedding: random rows would put arbitrary mass on never-seen tokens.
    Safe to call again (on the training side after loading a prepared tokenizer)."""
    added = False
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": pad_token})
        added = True
    info = {"pad_token": tokenizer.pad_token, "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id, "added": added, "tokenizer_len": len(tokenizer)}
    if model is not None:
        info["embedding_rows"] = resize_embeddings(model, len(tokenizer), multiple_of)
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return info


def resize_embeddings(model: Any, n_tokens: int, multiple_of: int = 64) -> int:
    """Grow (never shrink) the input/output embeddings to a multiple of `multiple_of`
    rows covering `n_tokens`; new rows are the mean of the old ones. Returns the rows."""
    import torch
    emb = model.get_input_embeddings()
    old = emb.weight.shape[0]
    new = math.ceil(max(n_tokens, old) / multiple_of) * multiple_of
    if new == old:
        return old
    model.resize_token_embeddings(new, mean_resizing=False)
    with torch.no_grad():
        w = model.get_input_embeddings().weight
        w[old:] = w[:old].mean(0, keepdim=True)
        out = model.get_output_embeddings()
        if out is not None and out.weight is not w:
            out.weight[old:] = out.weight[:old].mean(0, keepdim=True)
            if getattr(out, "bias", None) is not None:
                out.bias[old:] = out.bias[:old].mean()
    return new


# --- packing and collation ---------------------------------------------------------------------

def pack_examples(examples: list[Example], max_len: int) -> list[Example]:
    """Best-fit-decreasing bins of at most max_len tokens. Position ids restart at 0 for
    each example, and the first label of each example is ignored (it would otherwise be
    predicted from the previous example's last token)."""
    order = sorted(examples, key=lambda e: (-len(e.input_ids), e.id))
    bins: list[list[Example]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted
    for ex in order:
        k = bisect.bisect_left(free, (len(ex.input_ids), -1))
        if k == len(free):
            bins.append([ex])
            bisect.insort(free, (max_len - len(ex.input_ids), len(bins) - 1))
            continue
        room, b = free.pop(k)
        bins[b].append(ex)
        bisect.insort(free, (room - len(ex.input_ids), b))
    return [_merge(b) for b in bins]


def _merge(group: list[Example]) -> Example:
    ids, labels, pos = [], [], []
    for ex in group:
        ids += ex.input_ids
        labels += [IGNORE] + ex.labels[1:]
        pos += list(range(len(ex.input_ids)))
    return Example(ids, labels, "+".join(e.id for e in group), ",".join(sorted({e.source for e in group})),
                   group[0].group_id, any(e.truncated for e in group), any(e.trimmed for e in group), pos, len(group))


def collate(batch: Sequence[dict], pad_id: int, pad_to_multiple_of: int = 8, block_mask: bool = True) -> dict:
    """Right-pad a list of examples ({input_ids, labels, [position_ids]}) into tensors.
    The attention mask marks real tokens by position, never by comparing ids to pad.
    Packed rows (with position_ids) get a 4D block-diagonal causal mask [B, 1, L, L]
    (block_mask=True, works with sdpa/eager) or only position_ids (block_mask=False,
    for flash-attention varlen kernels that read boundaries from them)."""
    import torch
    lens = [len(b["input_ids"]) for b in batch]
    L = math.ceil(max(lens) / pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(batch), L), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), L), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), L), dtype=torch.long)
    pos = torch.zeros((len(batch), L), dtype=torch.long)
    packed = any(b.get("position_ids") is not None for b in batch)
    for r, (b, n) in enumerate(zip(batch, lens)):
        ids[r, :n] = torch.as_tensor(np.asarray(b["input_ids"]), dtype=torch.long)
        labels[r, :n] = torch.as_tensor(np.asarray(b["labels"]), dtype=torch.long)
        mask[r, :n] = 1
        p = b.get("position_ids")
        pos[r, :n] = torch.as_tensor(np.asarray(p), dtype=torch.long) if p is not None else torch.arange(n)
    out = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    if packed:
        out["position_ids"] = pos
        if block_mask:
            out["attention_mask"] = block_causal_mask(pos, mask)
    return out


def block_causal_mask(position_ids: Any, mask: Any) -> Any:
    """[B, 1, L, L] bool: token i attends to j <= i of the same packed example. Padding
    positions attend only to themselves (an all-False row gives NaN in sdpa)."""
    import torch
    B, L = position_ids.shape
    seg = torch.cumsum((position_ids == 0).long(), dim=1)
    seg = torch.where(mask.bool(), seg, -1 - torch.arange(L).expand(B, L))  # each pad its own segment
    same = seg[:, :, None] == seg[:, None, :]
    causal = torch.tril(torch.ones(L, L, dtype=torch.bool))
    return (same & causal)[:, None]


# --- validation split --------------------------------------------------------------------------

def split_by_group(episodes: list[ChatEpisode], val_frac: float, seed: int) -> tuple[list[ChatEpisode], list[ChatEpisode]]:
    """A group goes to validation when its hash coin is below val_frac: deterministic,
    order-independent, and stable as data is added. Near-duplicates share a group_id
    (ties, SFT + CoH of one pair, arena rows with one prompt), so they never straddle it."""
    if not 0.0 <= val_frac < 1.0:
        raise ValueError(f"val_frac must be in [0, 1), got {val_frac}")
    groups = {ep.group_id for ep in episodes}
    val_groups = {g for g in groups if coin(seed, "val_split", g) < val_frac}
    if val_frac > 0 and not val_groups and len(groups) >= 2:  # small data: at least one group
        val_groups = {min(groups, key=lambda g: coin(seed, "val_split", g))}
    if val_groups == groups and len(groups) >= 2:
        val_groups -= {max(groups, key=lambda g: coin(seed, "val_split", g))}
    train = [ep for ep in episodes if ep.group_id not in val_groups]
    return train, [ep for ep in episodes if ep.group_id in val_groups]


# --- on disk -----------------------------------------------------------------------------------

def _save_split(folder: Path, name: str, examples: list[Example]) -> None:
    from safetensors.numpy import save_file
    lens = np.array([len(e.input_ids) for e in examples], dtype=np.int64)
    tensors = {
        "input_ids": np.array([i for e in examples for i in e.input_ids], dtype=np.int32),
        "labels": np.array([i for e in examples for i in e.labels], dtype=np.int32),
        "offsets": np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
    }
    if any(e.position_ids is not None for e in examples):
        tensors["position_ids"] = np.array([i for e in examples for i in (e.position_ids or range(len(e.input_ids)))],
                                           dtype=np.int32)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    with open(folder / f"{name}.index.jsonl", "w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps({"id": e.id, "source": e.source, "group_id": e.group_id, "truncated": e.truncated,
                                "trimmed": e.trimmed, "n_examples": e.n_examples}, ensure_ascii=False) + "\n")


def save_tokenized(out_dir: str | os.PathLike, splits: dict[str, list[Example]], tokenizer: Any, meta: dict,
                   report: dict, extra_files: dict[str, str] | None = None, overwrite: bool = False) -> Path:
    """Write everything into a temp folder next to `out_dir`, then rename it into place,
    so a crash never leaves a half-written dataset that looks complete."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        _chmod_like_umask(tmp, 0o777)
        for name, examples in splits.items():
            _save_split(tmp, name, examples)
        tokenizer.save_pretrained(tmp / "tokenizer")
        meta = {**meta, "format": FORMAT_VERSION, "tokenizer_path": "tokenizer",
                "splits": {k: len(v) for k, v in splits.items()}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "data_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for fname, text in (extra_files or {}).items():
            (tmp / fname).write_text(text, encoding="utf-8")
        for f in tmp.rglob("*"):
            if f.is_file():
                _chmod_like_umask(f, 0o666)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _chmod_like_umask(path: Path, mode: int) -> None:
    # mkdtemp/mkstemp create private (0700/0600) entries; a dataset should get the usual modes.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def _swap_into_place(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@dataclass
class TokenizedData:
    train: list[dict]
    val: list[dict]
    meta: dict
    folder: Path = field(default=Path("."))

    def tokenizer(self):
        """The exact tokenizer the ids were made with (pad token included)."""
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(self.folder / self.meta["tokenizer_path"], trust_remote_code=False)

    @property
    def pad_token_id(self) -> int:
        return self.meta["pad_token_id"]


def _load_split(folder: Path, name: str) -> list[dict]:
    from safetensors.numpy import load_file
    path = folder / f"{name}.safetensors"
    if not path.exists():
        return []
    t = load_file(str(path))
    off = t["offsets"]
    with open(folder / f"{name}.index.jsonl", encoding="utf-8") as f:
        index = [json.loads(line) for line in f]
    rows = []
    for k, info in enumerate(index):
        a, b = int(off[k]), int(off[k + 1])
        row = {"input_ids": t["input_ids"][a:b], "labels": t["labels"][a:b], **info}
        if "position_ids" in t:
            row["position_ids"] = t["position_ids"][a:b]
        rows.append(row)
    return rows


def load_tokenized(folder: str | os.PathLike) -> TokenizedData:
    """Load a dataset written by `prepare_chat`: rows are dicts with input_ids, labels
    (int32 numpy views), position_ids (packed only), id, source, group_id, truncated."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder}: no meta.json (not a prepared chat dataset)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{folder}: format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    return TokenizedData(_load_split(folder, "train"), _load_split(folder, "val"), meta, folder)


def config_dict(cfg: TokenizeConfig) -> dict:
    d = asdict(cfg)
    d.pop("format", None)
    return d
