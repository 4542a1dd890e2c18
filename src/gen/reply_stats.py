"""Reply-length and stopping statistics of the samples logged at each eval.

The fine-tuning logbooks watched these by eye: replies that got shorter after
trimming, a model that never stopped (pad == eos), replies that looped. Here they
are numbers in every eval line of metrics.jsonl and a plot (plots/reply_stats.png):

- `sample_reply_tokens_mean` / `_median`: new tokens per reply (EOS included);
- `sample_eos_share`: share of replies that ended with EOS before the token limit;
- `sample_repeat_share`: share of replies containing an n-gram run, the same
  1..8-token n-gram three times back to back (a loop, not a repeated word).

A handful of samples (--sample-count) gives noisy shares: raise it when comparing runs.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Sequence

MAX_RUN_N = 8
RUN_REPEATS = 3


def has_ngram_run(tokens: Sequence[int], max_n: int = MAX_RUN_N, repeats: int = RUN_REPEATS) -> bool:
    """True when some n-gram (n <= max_n) occurs `repeats` times in a row."""
    t = list(tokens)
    for n in range(1, max_n + 1):
        for i in range(len(t) - n * repeats + 1):
            gram = t[i:i + n]
            if all(t[i + k * n:i + (k + 1) * n] == gram for k in range(1, repeats)):
                return True
    return False


def reply_stats(token_ids: Sequence[Sequence[int]], stop_reasons: Sequence[str]) -> dict[str, float]:
    """The eval-line statistics of a set of replies (see module doc); {} for none."""
    if not token_ids:
        return {}
    lengths = [len(t) for t in token_ids]
    n = len(lengths)
    return {"sample_reply_tokens_mean": sum(lengths) / n,
            "sample_reply_tokens_median": float(statistics.median(lengths)),
            "sample_eos_share": sum(r == "eos" for r in stop_reasons) / n,
            "sample_repeat_share": sum(has_ngram_run(t) for t in token_ids) / n,
            "sample_n": float(n)}


def reply_stats_plot(history: list[dict], initial: dict | None, out: Path) -> bool:
    """Mean reply length and EOS / repeat shares against the step; False when nothing to plot."""
    rows = ([{**initial, "step": 0}] if initial else []) + list(history)
    rows = [r for r in rows if "sample_reply_tokens_mean" in r]
    if not rows:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [r["step"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(steps, [r["sample_reply_tokens_mean"] for r in rows], marker="o", label="mean")
    ax1.plot(steps, [r["sample_reply_tokens_median"] for r in rows], marker="x", label="median")
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("reply length (tokens)")
    ax1.legend()
    ax2.plot(steps, [r["sample_eos_share"] for r in rows], marker="o", label="stopped with EOS")
    ax2.plot(steps, [r["sample_repeat_share"] for r in rows], marker="x", label="n-gram run")
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("share of samples")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True
