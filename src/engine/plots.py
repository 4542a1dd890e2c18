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


def ema(values: list[float], alpha: float = 0.9) -> list[float]:
    """Exponential moving average, debiased at the start (as TensorBoard's smoothing):
    spiky per-step losses need ~0.9 to show a trend. Non-finite values are skipped."""
    out, acc, weight = [], 0.0, 0.0
    for v in values:
        if np.isfinite(v):
            acc, weight = alpha * acc + (1 - alpha) * v, alpha * weight + (1 - alpha)
        out.append(acc / weight if weight else float("nan"))
    return out


def smoothing_for(n: int, smoothing: float) -> float:
    """The EMA factor for n logged points: its span 1 / (1 - alpha) at most n / 3 points,
    else a short run's smoothed line lags far behind (above) a falling loss: at 0.9 a
    4-point run's line is the mean of all four. 0 (no smoothed line) for 3 points or fewer."""
    return min(smoothing, max(0.0, 1.0 - 3.0 / n)) if n > 3 else 0.0


def read_metrics(metrics_jsonl: Path | str) -> tuple[list[dict], list[dict]]:
    """(train records, eval records) of a run's metrics.jsonl; lines written before
    record kinds existed are evals."""
    rows = [json.loads(ln) for ln in Path(metrics_jsonl).read_text(encoding="utf-8").splitlines() if ln.strip()]
    train = [r for r in rows if r.get("kind") == "train"]
    return train, [r for r in rows if r.get("kind", "eval") == "eval"]


def loss_curves(metrics_jsonl: Path, out: Path, keys=("train_loss", "val_log_loss", "val_log_loss_uncalibrated"),
                reference: dict[str, float] | None = None, smoothing: float = 0.9) -> None:
    """Train loss per logged step (raw, faint, and EMA-smoothed) beside the eval metrics
    (markers), with reference levels (e.g. the class prior) as labelled dashed lines."""
    _save(loss_figure(metrics_jsonl, keys, reference, smoothing), out)


def loss_figure(metrics_jsonl: Path, keys=("train_loss", "val_log_loss", "val_log_loss_uncalibrated"),
                reference: dict[str, float] | None = None, smoothing: float = 0.9):
    """The figure of `loss_curves` (returned, for tests and notebooks)."""
    train, evals = read_metrics(metrics_jsonl)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if "train_loss" in keys:
        pts = [(r["step"], r["train_loss"]) for r in train] or \
              [(r["step"], r["train_loss"]) for r in evals if "train_loss" in r]  # older runs: evals only
        if pts:
            x, y = zip(*pts)
            # one point is no line: draw it as a marker, or the legend lists a line that is not there
            raw, = ax.plot(x, y, lw=0.8, alpha=0.35 if len(pts) > 1 else 1.0, marker=None if len(pts) > 1 else "o",
                           label="train loss" + (" (per log step)" if train else ""))
            alpha = smoothing_for(len(pts), smoothing)
            if alpha > 0:
                ax.plot(x, ema(list(y), alpha), lw=2, color=raw.get_color(),
                        label=f"train loss, smoothed (EMA {alpha:.2g})")
    for k in keys:
        if k == "train_loss":
            continue
        pts = [(r["step"], r[k]) for r in evals if k in r]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=4, label=k)
    for name, value in (reference or {}).items():
        ax.axhline(value, ls="--", lw=1, color="grey")
        # x in axes fraction, y in data: the label stays inside the plot whatever the step range
        ax.text(0.01, value, f"{name} {value:.3f}", transform=ax.get_yaxis_transform(), va="bottom", ha="left",
                fontsize=8, color="grey")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.margins(x=0.02)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


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
