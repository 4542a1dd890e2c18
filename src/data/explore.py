"""Numbers and plots for a first look at a pairwise data file.

The notebook `notebooks/explore_data.ipynb` only calls these. Everything works
on any file `read_pairs` can read: a test-schema file (no labels) gets the
length and turn plots, and the label plots say that there are no labels.

    frame, report = load_frame("data/synthetic/demo_2000_seed0.csv")
    win_rate_by_length_diff(frame)        # one row per A-minus-B length bucket
    figures(frame)                        # {"labels": Figure, "turns": ..., ...}
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .arena import read_pairs
from .records import PairRecord

WINNERS = ("A", "B", "tie")  # label 0, 1, 2
# Buckets of (chars of A - chars of B), symmetric around "about the same length".
DEFAULT_DIFF_EDGES = (-np.inf, -1000, -300, -100, -30, 30, 100, 300, 1000, np.inf)


def _chars(turns: list[str]) -> int:
    return sum(len(t) for t in turns)


def pairs_frame(records: Sequence[PairRecord]) -> pd.DataFrame:
    """One row per record: label, winner name, turn count and character lengths."""
    rows = []
    for r in records:
        a, b = _chars(r.response_a), _chars(r.response_b)
        rows.append({
            "id": r.id,
            "label": r.label,
            "winner": None if r.label is None else WINNERS[r.label],
            "n_turns": r.n_turns,
            "prompt_chars": _chars(r.prompt),
            "a_chars": a,
            "b_chars": b,
            "len_diff": a - b,
            "model_a": r.model_a,
            "model_b": r.model_b,
        })
    cols = ["id", "label", "winner", "n_turns", "prompt_chars", "a_chars", "b_chars", "len_diff", "model_a", "model_b"]
    frame = pd.DataFrame(rows, columns=cols)
    frame["label"] = frame["label"].astype("Int64")  # nullable: test-schema files have no labels
    return frame


def load_frame(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a file with `read_pairs`; return the frame of kept rows and the read report."""
    result = read_pairs(path)
    return pairs_frame(result.records), result.report(max_listed=20)


def has_labels(frame: pd.DataFrame) -> bool:
    return bool(len(frame)) and bool(frame["label"].notna().all())


def label_balance(frame: pd.DataFrame) -> pd.DataFrame:
    """Count and share of A wins / B wins / ties (rows without a label are left out)."""
    counts = frame["winner"].value_counts().reindex(list(WINNERS), fill_value=0)
    total = int(counts.sum())
    share = counts / total if total else counts.astype(float)
    return pd.DataFrame({"count": counts.astype(int), "share": share})


def turn_counts(frame: pd.DataFrame) -> pd.Series:
    """Rows per number of turns, sorted by turn count."""
    return frame["n_turns"].value_counts().sort_index().rename("rows")


def length_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Quantiles of the character length of the prompt and of each response."""
    cols = ["prompt_chars", "a_chars", "b_chars"]
    return frame[cols].quantile([0.0, 0.1, 0.5, 0.9, 0.99, 1.0]).T.rename(columns=lambda q: f"q{q:g}")


def _bucket_labels(edges: Sequence[float]) -> list[str]:
    def fmt(x: float) -> str:
        return "-inf" if x == -np.inf else "inf" if x == np.inf else f"{x:g}"
    return [f"[{fmt(lo)}, {fmt(hi)})" for lo, hi in zip(edges[:-1], edges[1:])]


def win_rate_by_length_diff(frame: pd.DataFrame, edges: Sequence[float] = DEFAULT_DIFF_EDGES) -> pd.DataFrame:
    """Share of A wins / B wins / ties per bucket of len(A) - len(B) (characters).

    Buckets are half-open [lo, hi); every labelled row falls in exactly one when
    the edges start at -inf and end at +inf. Empty buckets keep a row with n=0
    and NaN rates, so the table always has len(edges) - 1 rows.
    """
    edges = list(edges)
    if len(edges) < 2 or any(lo >= hi for lo, hi in zip(edges[:-1], edges[1:])):
        raise ValueError(f"edges must be increasing with at least 2 values, got {edges}")
    labelled = frame[frame["label"].notna()]
    names = _bucket_labels(edges)
    bucket = pd.cut(labelled["len_diff"], bins=edges, right=False, labels=names)
    out = pd.DataFrame(index=pd.Index(names, name="len_diff_bucket"))
    out["n"] = bucket.value_counts().reindex(names, fill_value=0).astype(int)
    for k, w in enumerate(WINNERS):
        hits = (labelled["label"] == k).groupby(bucket, observed=False).sum()
        out[f"{w}_rate"] = hits.reindex(names).to_numpy(dtype=float) / out["n"].replace(0, np.nan).to_numpy(dtype=float)
    out["mean_len_diff"] = labelled["len_diff"].groupby(bucket, observed=False).mean().reindex(names)
    return out


# --- plots -------------------------------------------------------------------------------

def _axes(ax=None, figsize=(6, 3.5)):
    import matplotlib.pyplot as plt
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def _done(fig):
    fig.tight_layout()
    return fig


def _no_labels(ax) -> None:
    ax.text(0.5, 0.5, "no labels in this file", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def plot_label_balance(frame: pd.DataFrame, ax=None):
    fig, ax = _axes(ax)
    if not has_labels(frame):
        _no_labels(ax)
        return fig
    bal = label_balance(frame)
    bars = ax.bar(bal.index, bal["count"], color=["tab:blue", "tab:orange", "tab:gray"])
    for bar, share in zip(bars, bal["share"]):
        ax.annotate(f"{share:.1%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom")
    ax.set(title=f"Label balance ({int(bal['count'].sum())} rows)", xlabel="winner", ylabel="rows")
    return _done(fig)


def plot_turn_counts(frame: pd.DataFrame, ax=None):
    fig, ax = _axes(ax)
    tc = turn_counts(frame)
    ax.bar(tc.index.astype(str), tc.to_numpy())
    ax.set(title="Turns per conversation", xlabel="turns", ylabel="rows")
    if len(tc) and tc.max() / max(tc.min(), 1) > 100:
        ax.set_yscale("log")
    return _done(fig)


def plot_lengths(frame: pd.DataFrame, ax=None):
    """Histograms of log10(1 + characters) for the prompt and both responses."""
    fig, ax = _axes(ax, figsize=(7, 3.5))
    logs = {c: np.log10(1 + frame[f"{c}_chars"].to_numpy(dtype=float)) for c in ("prompt", "a", "b")}
    hi = max([v.max() for v in logs.values() if len(v)] + [1.0])
    bins = np.linspace(0, hi, 40)
    for name, v in logs.items():
        ax.hist(v, bins=bins, histtype="step", linewidth=1.5, label={"a": "response A", "b": "response B"}.get(name, name))
    ax.set(title="Length distributions", xlabel="log10(1 + characters)", ylabel="rows")
    ax.legend()
    return _done(fig)


def plot_win_rate_vs_length(frame: pd.DataFrame, edges: Sequence[float] = DEFAULT_DIFF_EDGES, ax=None):
    fig, ax = _axes(ax, figsize=(8, 3.8))
    if not has_labels(frame):
        _no_labels(ax)
        return fig
    table = win_rate_by_length_diff(frame, edges)
    x = np.arange(len(table))
    for w, style in zip(WINNERS, ("o-", "s-", "^--")):
        ax.plot(x, table[f"{w}_rate"], style, label=f"{w} wins" if w != "tie" else "tie")
    ax.set_xticks(x, [f"{name}\nn={n}" for name, n in zip(table.index, table["n"])], fontsize=7)
    ax.set(title="Win rate vs. length difference len(A) - len(B) (characters)", ylabel="share", ylim=(0, 1))
    ax.axhline(1 / 3, color="lightgray", linewidth=0.8)
    ax.legend()
    return _done(fig)


def figures(frame: pd.DataFrame) -> dict[str, Any]:
    """All overview plots, by name."""
    return {
        "labels": plot_label_balance(frame),
        "turns": plot_turn_counts(frame),
        "lengths": plot_lengths(frame),
        "win_rate_vs_length": plot_win_rate_vs_length(frame),
    }
