"""src.data.explore (numbers behind the plots) and notebooks/explore_data.ipynb run end to end."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from src.data import explore  # noqa: E402
from src.data.records import PairRecord  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "explore_data.ipynb"


def rec(rid, a_len, b_len, label, turns=1, prompt="q"):
    """A record whose responses have the given total lengths, spread over `turns` turns."""
    def split(n):
        return ["x" * (n // turns + (1 if i < n % turns else 0)) for i in range(turns)]
    return PairRecord(id=str(rid), prompt=[prompt] * turns, response_a=split(a_len), response_b=split(b_len), label=label)


@pytest.fixture
def hand_frame() -> pd.DataFrame:
    recs = [
        rec(1, 10, 200, 1),   # diff -190 -> [-300, -100): B wins
        rec(2, 10, 150, 1),   # diff -140 -> [-300, -100): B wins
        rec(3, 10, 120, 0),   # diff -110 -> [-300, -100): A wins
        rec(4, 50, 50, 2),    # diff 0    -> [-30, 30): tie
        rec(5, 60, 40, 0),    # diff 20   -> [-30, 30): A wins
        rec(6, 530, 30, 0, turns=3),  # diff 500 -> [300, 1000): A wins
        rec(7, 30, 0, 1, turns=2),    # diff 30 -> [30, 100): B wins (edges are [lo, hi))
    ]
    return explore.pairs_frame(recs)


def test_pairs_frame_columns(hand_frame):
    f = hand_frame
    assert list(f["len_diff"]) == [-190, -140, -110, 0, 20, 500, 30]
    assert list(f["n_turns"]) == [1, 1, 1, 1, 1, 3, 2]
    assert list(f["winner"]) == ["B", "B", "A", "tie", "A", "A", "B"]
    assert list(f["prompt_chars"]) == [1, 1, 1, 1, 1, 3, 2]
    assert (f["a_chars"] - f["b_chars"] == f["len_diff"]).all()


def test_win_rate_by_length_bucket_numbers(hand_frame):
    t = explore.win_rate_by_length_diff(hand_frame)
    assert len(t) == len(explore.DEFAULT_DIFF_EDGES) - 1
    assert t["n"].sum() == len(hand_frame)
    row = t.loc["[-300, -100)"]
    assert row["n"] == 3
    assert row["A_rate"] == pytest.approx(1 / 3) and row["B_rate"] == pytest.approx(2 / 3) and row["tie_rate"] == 0
    assert row["mean_len_diff"] == pytest.approx((-190 - 140 - 110) / 3)
    row = t.loc["[-30, 30)"]
    assert (row["n"], row["A_rate"], row["tie_rate"], row["B_rate"]) == (2, 0.5, 0.5, 0.0)
    assert (t.loc["[30, 100)", "n"], t.loc["[30, 100)", "B_rate"]) == (1, 1.0)
    assert (t.loc["[300, 1000)", "n"], t.loc["[300, 1000)", "A_rate"]) == (1, 1.0)
    empty = t.loc["[-inf, -1000)"]
    assert empty["n"] == 0 and math.isnan(empty["A_rate"])
    filled = t[t["n"] > 0]
    assert np.allclose(filled[["A_rate", "B_rate", "tie_rate"]].sum(axis=1), 1.0)


def test_win_rate_custom_edges_and_errors(hand_frame):
    t = explore.win_rate_by_length_diff(hand_frame, edges=[-np.inf, 0, np.inf])
    assert list(t.index) == ["[-inf, 0)", "[0, inf)"]
    assert list(t["n"]) == [3, 4]
    assert t.loc["[0, inf)", "A_rate"] == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="increasing"):
        explore.win_rate_by_length_diff(hand_frame, edges=[0, 0, 1])


def test_label_balance_turns_and_lengths(hand_frame):
    bal = explore.label_balance(hand_frame)
    assert list(bal.index) == ["A", "B", "tie"]
    assert list(bal["count"]) == [3, 3, 1] and bal["share"].sum() == pytest.approx(1.0)
    assert explore.turn_counts(hand_frame).to_dict() == {1: 5, 2: 1, 3: 1}
    ls = explore.length_summary(hand_frame)
    assert ls.loc["a_chars", "q1"] == 530 and ls.loc["b_chars", "q0"] == 0 and ls.loc["prompt_chars", "q0.5"] == 1


def test_unlabelled_frame(hand_frame):
    recs = [rec(i, 10 * i, 5, None) for i in range(1, 5)]
    f = explore.pairs_frame(recs)
    assert not explore.has_labels(f) and explore.has_labels(hand_frame)
    assert explore.label_balance(f)["count"].sum() == 0
    assert explore.win_rate_by_length_diff(f)["n"].sum() == 0
    figs = explore.figures(f)  # still draws: the label plots say there are no labels
    assert set(figs) == {"labels", "turns", "lengths", "win_rate_vs_length"}
    import matplotlib.pyplot as plt
    for fig in figs.values():
        plt.close(fig)


def test_figures_on_synthetic_file(synthetic_csv):
    import matplotlib.pyplot as plt
    frame, report = explore.load_frame(synthetic_csv)
    assert report["rows"] == len(frame) == 400
    figs = explore.figures(frame)
    try:
        ax = figs["win_rate_vs_length"].axes[0]
        assert len(ax.get_lines()) >= 3  # A, B, tie curves
        assert len(figs["labels"].axes[0].patches) == 3
        # synthetic data rewards length: A wins more often when A is much longer than B
        t = explore.win_rate_by_length_diff(frame, edges=[-np.inf, -100, 100, np.inf])
        assert t["A_rate"].iloc[-1] > t["A_rate"].iloc[0]
    finally:
        for fig in figs.values():
            plt.close(fig)


@pytest.mark.slow  # executes the notebook in a Jupyter kernel
def test_notebook_runs_end_to_end(synthetic_csv, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("PREFPIPE_DATA", str(synthetic_csv))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel must use the inline backend
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=120,
                                     resources={"metadata": {"path": str(REPO)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # label balance, turns, lengths, win rate vs length
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert str(synthetic_csv) in text and "400 rows" in text  # it read the file we asked for
