"""Side-by-side comparisons of generative runs: the same held-out prompts, the same
sampling seed, and the statistics the logbooks watched (scripts/measure_gen.py).

- `held_out_prompts`: single-turn user instructions of a pairwise file (arena CSV, the
  unlabelled pool, pairwise JSONL), the first N that fit a character limit, in file
  order, so two runs (and two machines) get the same prompts.
- `sample_replies`: one reply per prompt from a run (or a bare model), prompted exactly
  as training built its examples (`encode_prompt` with the run's tokenize config) and
  sampled in batches (`generate_batch`: one seed for the whole call).
- `length_summary`: reply length and stopping shares (`reply_stats`) plus the standard
  error of the mean length and the share that ran into the token limit without stopping.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Sequence

from ..data.chat import USER, ChatEpisode, Turn
from ..errors import UsageError
from .reply_stats import reply_stats
from .sampling import Generation, SamplingConfig, generate_batch


def held_out_prompts(path: str | Path, n: int, max_chars: int = 400, exclude: set[str] | None = None) -> list[str]:
    """The first `n` distinct single-turn prompts of `path` no longer than `max_chars`,
    leaving out texts in `exclude` (e.g. every prompt of the file runs trained on).
    Too few is a UsageError."""
    from ..data.arena import read_pairs
    if n < 1:
        raise UsageError(f"held_out_prompts: n must be at least 1, got {n}")
    out, seen = [], set()
    for r in read_pairs(path).records:
        if len(r.prompt) != 1:
            continue
        text = (r.prompt[0] or "").strip()
        if text and len(text) <= max_chars and text not in seen and text not in (exclude or ()):
            out.append(text)
            seen.add(text)
        if len(out) == n:
            return out
    raise UsageError(f"{path}: only {len(out)} single-turn prompts of at most {max_chars} characters; asked for {n}")


def prompt_texts(path: str | Path) -> set[str]:
    """Every turn of every prompt of a pairwise file (to exclude from held-out prompts)."""
    from ..data.arena import read_pairs
    return {(t or "").strip() for r in read_pairs(path).records for t in r.prompt}


def prompt_ids(prompts: Sequence[str], tokenizer: Any, tokenize: dict | None) -> list[list[int]]:
    """Generation's prompt ids for each user message (the builder training used)."""
    from .encode import encode_prompt
    from .render import tokenize_config
    cfg = tokenize_config(tokenize)
    return [encode_prompt(ChatEpisode(id=f"p{k}", turns=[Turn(USER, p)]), tokenizer, cfg)
            for k, p in enumerate(prompts)]


def sample_replies(run: str, prompts: Sequence[str], sc: SamplingConfig, batch_size: int = 16) -> list[Generation]:
    """One reply per prompt from `run` (a train_gen run dir, checkpoint, or model name), in fp32 on CPU."""
    from .checkpoint import load_for_generation
    model, tok, meta = load_for_generation(run)
    model.eval()
    return generate_batch(model, tok, prompt_ids(prompts, tok, meta.get("tokenize")), sc, batch_size)


def length_summary(gens: Sequence[Generation], max_new_tokens: int) -> dict[str, float]:
    """`reply_stats` plus `sample_reply_tokens_se` (standard error of the mean length) and
    `sample_length_share` (replies that reached `max_new_tokens` without EOS or a stop string)."""
    if not gens:
        raise ValueError("length_summary needs at least one reply")
    lengths = [len(g.token_ids) for g in gens]
    out = reply_stats([g.token_ids for g in gens], [g.stop_reason for g in gens])
    out["sample_reply_tokens_se"] = statistics.stdev(lengths) / math.sqrt(len(lengths)) if len(lengths) > 1 else 0.0
    out["sample_length_share"] = sum(g.stop_reason == "length" and len(g.token_ids) >= max_new_tokens
                                     for g in gens) / len(gens)
    return out


def share_se(p: float, n: int) -> float:
    """Binomial standard error of a share p over n samples."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(mean of a - b, its standard error) over paired samples (the same prompt and seed
    answered by two runs): the prompt's own difficulty cancels, so this is tighter than
    comparing two means with their separate errors."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_difference needs two equally long, non-empty lists (got {len(a)} and {len(b)})")
    d = [x - y for x, y in zip(a, b)]
    return statistics.fmean(d), (statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan"))

