"""PNG plots of a run: loss curves, reliability diagram, confusion matrix."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

CLASS_NAMES = ("A wins", "B wins", "tie")


def _save(fig, path: Path | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")  # fits labels without tight_layout's warnings
    plt.close(fig)


def loss_curves(metrics_jsonl: Path, out: Path, keys=("train_loss", "val_log_loss", "val_log_loss_uncalibrated"),
                reference: dict[str, float] | None = None) -> None:
    rows = [json.loads(ln) for ln in Path(metrics_jsonl).read_text().splitlines() if ln.strip()]
    fig, ax = plt.subplots(figsize=(6, 4))
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if k in r]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=k)
    for name, value in (reference or {}).items():
        ax.axhline(value, ls="--", lw=1, color="grey")
        ax.text(0, value, f" {name} {value:.3f}", va="bottom", fontsize=8, color="grey")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, out)


def reliability(probs: np.ndarray, labels: np.ndarray, out: Path, bins: int = 10, min_count: int = 10) -> None:
    """Per class: mean predicted probability vs observed frequency, by bin (marker area ~ rows in the bin)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    edges = np.linspace(0, 1, bins + 1)
    for c, name in enumerate(CLASS_NAMES):
        p, hit = probs[:, c], labels == c
        which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
        # bins with a handful of rows say nothing: skip them, and size markers by count
        keep = [b for b in range(bins) if (which == b).sum() >= min_count]
        xs = [p[which == b].mean() for b in keep]
        ys = [hit[which == b].mean() for b in keep]
        line, = ax.plot(xs, ys, label=name)
        ax.scatter(xs, ys, s=[10 + 200 * (which == b).mean() for b in keep], color=line.get_color())
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title("reliability")
    ax.legend()
    _save(fig, out)


def confusion(probs: np.ndarray, labels: np.ndarray, out: Path) -> None:
    pred = probs.argmax(1)
    m = np.zeros((3, 3), dtype=int)
    np.add.at(m, (labels, pred), 1)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(m, cmap="Blues")
    for i in range(3):
        for j in range(3):
            ax.text(j, i, str(m[i, j]), ha="center", va="center")
    ax.set_xticks(range(3), CLASS_NAMES)
    ax.set_yticks(range(3), CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    _save(fig, out)
