"""src.data.tasks and the binary (WSDM Cup 2025) format through reader, generator and submission.

Under test: a `winner` column reads with exact counts, unknown values and mixed
formats are refused row by row or in one line, ties are dropped or softened as
configured (and counted), the binary submission passes --check for its task and
fails with a clear line for the other (both ways), and binary figures do not
depend on which side is called A.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.data.arena import DataError, read_pairs
from src.data.records import A_WINS, B_WINS, TIE, swap_probs
from src.data.synthetic import main as synthetic_main
from src.data.tasks import SOFT_TIE, binary_metrics, binary_winners, per_language, training_records
from src.predict import main as predict_main
from src.pref.inference.submission import check_submission, format_submission

WSDM_HEADER = ["id", "prompt", "response_a", "response_b", "winner", "model_a", "model_b", "language"]


def wsdm_csv(path: Path, rows: list[dict], header=WSDM_HEADER) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({h: r.get(h, "") for h in header})
    path.write_text(buf.getvalue())
    return path


def wsdm_row(rid, winner="model_a", language="English", **kw) -> dict:
    return {"id": str(rid), "prompt": json.dumps(["hi"]), "response_a": json.dumps([f"a{rid}"]),
            "response_b": json.dumps([f"b{rid}"]), "winner": winner, "model_a": "m1", "model_b": "m2",
            "language": language, **kw}


# --- reading ---------------------------------------------------------------------------

def test_winner_column_reads_with_exact_counts(tmp_path):
    winners = ["model_a"] * 5 + ["model_b"] * 3 + ["tie"] * 2 + ["tie (bothbad)"]
    langs = ["English", "Russian", "Chinese"]
    path = wsdm_csv(tmp_path / "w.csv", [wsdm_row(i, w, langs[i % 3]) for i, w in enumerate(winners)])
    res = read_pairs(path)
    assert (res.rows, len(res.records), len(res.quarantine)) == (11, 11, 0)
    assert [r.label for r in res.records] == [A_WINS] * 5 + [B_WINS] * 3 + [TIE] * 3
    rep = res.report()
    assert rep["labels"] == {A_WINS: 5, B_WINS: 3, TIE: 3}
    assert rep["languages"] == {"English": 4, "Russian": 4, "Chinese": 3}
    assert all("winner" not in r.extra and "language" not in r.extra for r in res.records)


def test_ties_dropped_or_softened_and_counted(tmp_path):
    winners = ["model_a"] * 4 + ["model_b"] * 3 + ["tie"] * 2
    res = read_pairs(wsdm_csv(tmp_path / "w.csv", [wsdm_row(i, w) for i, w in enumerate(winners)]))
    kept, rep = training_records(res.records, "binary", "drop")
    assert len(kept) == 7 and all(r.label in (A_WINS, B_WINS) for r in kept)
    assert (rep["rows_in"], rep["rows_kept"], rep["ties_dropped"], rep["ties_softened"]) == (9, 7, 2, 0)
    kept, rep = training_records(res.records, "binary", "soft")
    soft = [r for r in kept if r.label is None]
    assert len(kept) == 9 and len(soft) == 2 and all(r.target == SOFT_TIE for r in soft)
    assert (rep["ties_dropped"], rep["ties_softened"]) == (0, 2)
    same, rep = training_records(res.records, "arena3", "drop")  # arena3 keeps ties as ties
    assert [r.label for r in same] == [r.label for r in res.records]


def test_soft_targets_lose_their_tie_mass_in_binary():
    from src.data.records import PairRecord
    recs = [PairRecord("1", ["p"], ["a"], ["b"], target=(0.3, 0.1, 0.6)),
            PairRecord("2", ["p"], ["a"], ["b"], target=(0.0, 0.0, 1.0))]
    kept, rep = training_records(recs, "binary", "drop")
    assert len(kept) == 1 and kept[0].target == pytest.approx((0.75, 0.25, 0.0))
    assert (rep["soft_all_tie_dropped"], rep["soft_tie_mass_moved"]) == (1, 1)


def test_unknown_winner_and_empty_language_are_quarantined_with_reasons(tmp_path):
    rows = [wsdm_row(1), wsdm_row(2, "model_c"), wsdm_row(3, ""), wsdm_row(4, language=""), wsdm_row(5, "model_b")]
    res = read_pairs(wsdm_csv(tmp_path / "w.csv", rows))
    assert [r.id for r in res.records] == ["1", "5"]
    assert [(q.row, q.id, q.reason) for q in res.quarantine] == [
        (2, "2", "bad_winner"), (3, "3", "bad_winner"), (4, "4", "missing_language")]
    assert "model_c" in res.quarantine[0].detail


def test_a_file_mixing_both_label_formats_is_one_line(tmp_path):
    header = WSDM_HEADER + ["winner_model_a", "winner_model_b", "winner_tie"]
    path = wsdm_csv(tmp_path / "mixed.csv", [wsdm_row(1, winner_model_a="1", winner_model_b="0", winner_tie="0")],
                    header=header)
    with pytest.raises(DataError) as e:
        read_pairs(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "one label format per file" in msg


def test_jsonl_mixing_formats_or_empty_language_is_quarantined(tmp_path):
    base = {"prompt": "hi", "response_a": "a", "response_b": "b"}
    lines = [{**base, "id": "1", "winner": "model_b", "language": "German"},
             {**base, "id": "2", "winner": "model_a", "winner_model_a": 1, "winner_model_b": 0, "winner_tie": 0},
             {**base, "id": "3", "winner": "model_a", "language": ""}]
    path = tmp_path / "w.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    res = read_pairs(path)
    assert [(r.id, r.label, r.language) for r in res.records] == [("1", B_WINS, "German")]
    assert [q.reason for q in res.quarantine] == ["mixed_label_formats", "missing_language"]


def test_synthetic_binary_schema_reads_back(tmp_path, capsys):
    out = tmp_path / "wsdm.csv"
    synthetic_main(["--rows", "200", "--task", "binary", "--out", str(out)])
    summary = json.loads(capsys.readouterr().out)
    header = out.read_text().splitlines()[0].split(",")
    assert "winner" in header and "language" in header and "winner_tie" not in header
    res = read_pairs(out)
    assert not res.quarantine and len(res.records) == summary["rows"] < 200  # the ties were dropped
    assert {r.label for r in res.records} == {A_WINS, B_WINS}
    counts = summary["labels"]
    assert counts["model_a"] == sum(r.label == A_WINS for r in res.records)
    test = tmp_path / "wsdm_test.csv"
    synthetic_main(["--rows", "50", "--task", "binary", "--schema", "test", "--out", str(test)])
    assert test.read_text().splitlines()[0] == "id,prompt,response_a,response_b,language"


# --- metrics -----------------------------------------------------------------------

probs3 = st.lists(st.tuples(*[st.floats(0.01, 1.0)] * 3), min_size=1, max_size=30).map(
    lambda rows: np.array(rows) / np.array(rows).sum(1, keepdims=True))


@settings(max_examples=60, deadline=None)
@given(probs3, st.data())
def test_binary_figures_do_not_depend_on_which_side_is_a(p, data):
    y = np.array(data.draw(st.lists(st.sampled_from([0, 1, 2]), min_size=len(p), max_size=len(p))))
    swapped_y = np.array([[1, 0, 2][v] for v in y])
    m, ms = binary_metrics(p, y), binary_metrics(swap_probs(p), swapped_y)
    assert m["rows"] == ms["rows"] == int((y != TIE).sum())
    if m["rows"]:
        assert m["log_loss"] == pytest.approx(ms["log_loss"], abs=1e-12)
        # accuracy: equal unless P(A) == P(B) exactly (argmax picks A both times)
        ties = np.isclose(p[:, 0], p[:, 1], rtol=0, atol=0)[y != TIE]
        if not ties.any():
            assert m["accuracy"] == pytest.approx(ms["accuracy"])


def test_binary_metrics_by_hand_and_per_language():
    from src.data.records import PairRecord
    p = np.array([[0.6, 0.2, 0.2], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    y = np.array([0, 0, 1, 2])
    m = binary_metrics(p, y)
    assert m["rows"] == 3 and m["accuracy"] == pytest.approx(1 / 3)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.75, 0.25, 4 / 9])))
    recs = [PairRecord(str(i), ["p"], ["a"], ["b"], language=lang) for i, lang in enumerate(["en", "en", "ru", "ru"])]
    langs = per_language("binary", recs, p, y)
    assert langs["en"]["rows"] == 2 and langs["en"]["accuracy"] == pytest.approx(0.5)
    assert langs["ru"]["rows"] == 1 and langs["ru"]["accuracy"] == 0.0


# --- submission schemas ----------------------------------------------------------------

@pytest.fixture()
def wsdm_test_file(tmp_path):
    rows = [wsdm_row(i) for i in range(6)]
    for r in rows:
        del r["winner"]
    return wsdm_csv(tmp_path / "test.csv", rows, header=[h for h in WSDM_HEADER if h != "winner"])


def _probs(n, seed=0):
    p = np.random.default_rng(seed).dirichlet([1, 1, 1], size=n)
    return p


def test_binary_submission_passes_check_and_the_other_schema_fails_both_ways(wsdm_test_file, tmp_path, capsys):
    ids = [str(i) for i in range(6)]
    p = _probs(6)
    binary, arena = tmp_path / "binary.csv", tmp_path / "arena.csv"
    binary.write_text(format_submission(ids, p, "binary"))
    arena.write_text(format_submission(ids, p, "arena3"))
    rows = list(csv.reader(io.StringIO(binary.read_text())))
    assert rows[0] == ["id", "winner"] and [r[1] for r in rows[1:]] == binary_winners(p)
    assert check_submission(binary, wsdm_test_file, task="binary") == []
    assert check_submission(arena, wsdm_test_file, task="arena3") == []
    wrong = check_submission(arena, wsdm_test_file, task="binary")
    assert len(wrong) == 2 and "expected 'id,winner' for task binary" in wrong[0] and "arena3 task's header" in wrong[0]
    wrong = check_submission(binary, wsdm_test_file, task="arena3")
    assert "for task arena3" in wrong[0] and "binary task's header" in wrong[0]
    # the CLI: exit 0 / 1, one line per problem
    assert predict_main(["--check", str(binary), "--data", str(wsdm_test_file), "--task", "binary"]) == 0
    assert predict_main(["--check", str(arena), "--data", str(wsdm_test_file), "--task", "binary"]) == 1
    assert "expected 'id,winner'" in capsys.readouterr().out


def test_binary_check_names_a_bad_winner_and_a_missing_id(wsdm_test_file, tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("id,winner\n0,model_a\n1,tie\n2,model_b\n3,model_a\n4,model_b\n")
    problems = check_submission(path, wsdm_test_file, task="binary")
    assert problems == ["row 2 (id 1): winner='tie', expected model_a or model_b", f"id 5 from {wsdm_test_file} is missing"]


# --- end to end (trains MiniLM on 150 synthetic rows for one epoch) -----------------------

@pytest.mark.slow
def test_binary_run_end_to_end(tmp_path, capsys):
    from src.data.synthetic import make_rows, to_binary, write_csv
    from src.pref.config import PrefConfig
    from src.pref.train import run
    df = to_binary(make_rows(240, seed=11), seed=11)
    assert len(df) >= 190
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    write_csv(df.iloc[:150], train)
    write_csv(df.iloc[150:190], test, schema="test")
    cfg = PrefConfig(model="minilm", data=str(train), out=str(tmp_path / "run"), epochs=1, max_len=64,
                     prompt_budget=16, batch_size=16, progress=False, seed=0, task="binary")
    m = run(cfg)
    assert m["task"] == "binary" and 0.0 <= m["val_binary_accuracy"] <= 1.0
    assert m["val_binary_error"] == pytest.approx(1.0 - m["val_binary_accuracy"])  # a sweep's binary metric
    evals = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("val_binary_error" in e for e in evals if e.get("kind") == "eval")  # pruning sees it per eval
    assert {"val_binary_log_loss", "val_binary_accuracy_uncalibrated", "val_binary_log_loss_uncalibrated"} <= set(m)
    assert sum(v["rows"] for v in m["per_language"].values()) == m["n_val"]
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["task"]["task"] == "binary" and report["task"]["ties_dropped"] == 0  # to_binary dropped them
    out = tmp_path / "sub.csv"
    assert predict_main(["--run", str(tmp_path / "run"), "--data", str(test), "--out", str(out), "--no-progress"]) == 0
    assert out.read_text().splitlines()[0] == "id,winner"
    assert predict_main(["--check", str(out), "--data", str(test), "--task", "binary"]) == 0
    assert predict_main(["--check", str(out), "--data", str(test)]) == 1  # arena3 by default
    # predicting with a --task the runs were not trained for is one line, exit 2, nothing written
    other = tmp_path / "other.csv"
    assert predict_main(["--run", str(tmp_path / "run"), "--data", str(test), "--out", str(other),
                         "--task", "arena3", "--no-progress"]) == 2
    assert not other.exists()
    assert "trained with --task binary" in capsys.readouterr().err
    # labelled rows: the report carries the binary figures per language
    labelled = tmp_path / "val.csv"
    write_csv(df.iloc[150:190], labelled)
    rep = predict_main(["--run", str(tmp_path / "run"), "--data", str(labelled), "--out", str(tmp_path / "v.csv"),
                        "--no-progress"])
    assert rep == 0
    r = json.loads((tmp_path / "v_report.json").read_text())
    assert r["task"] == "binary" and r["metrics"]["binary"]["rows"] == 40
    assert sum(v["rows"] for v in r["metrics"]["per_language"].values()) == 40
