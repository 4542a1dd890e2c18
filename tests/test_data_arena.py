"""src.data.arena: the arena CSV / pairwise JSONL reader and `python -m src.data.validate`.

The contract under test: every data row ends up either as a record or in the
quarantine with its row number, id and a reason code; files that cannot be read
at all raise DataError with a one-line message naming the file.
"""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.data.arena import DataError, read_pairs, split_hh_dialogue, write_report
from src.data.records import A_WINS, B_WINS, TIE

REPO = Path(__file__).resolve().parents[1]
HEADER = ["id", "model_a", "model_b", "prompt", "response_a", "response_b",
          "winner_model_a", "winner_model_b", "winner_tie"]
ONE_HOT = {A_WINS: ("1", "0", "0"), B_WINS: ("0", "1", "0"), TIE: ("0", "0", "1")}


def row(rid, prompt=("hi",), a=("A",), b=("B",), label=A_WINS, *, raw=None):
    """One CSV row as a list of cells; `raw` overrides cells by column name."""
    cells = dict(zip(HEADER, [str(rid), "m-a", "m-b", json.dumps(list(prompt)), json.dumps(list(a)),
                              json.dumps(list(b)), *ONE_HOT[label]]))
    cells.update(raw or {})
    return [cells[h] for h in HEADER]


def csv_text(rows, header=HEADER) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def write_csv(path: Path, rows, header=HEADER) -> Path:
    path.write_bytes(csv_text(rows, header).encode("utf-8"))
    return path


def assert_accounted(result, n_rows: int) -> None:
    """Every written data row is either a record or quarantined, exactly once."""
    assert len(result.records) + len(result.quarantine) == n_rows
    rep = result.report()
    assert rep["rows"] == rep["ok"] + rep["quarantined"] == n_rows
    assert sum(rep["reasons"].values()) == rep["quarantined"]
    rows = [q.row for q in result.quarantine]
    assert len(set(rows)) == len(rows) and all(1 <= r <= n_rows for r in rows)


# --- parsing edge cases ---------------------------------------------------------------

def test_null_empty_and_empty_string_turns(tmp_path):
    p = write_csv(tmp_path / "t.csv", [
        row(1, raw={"prompt": "[null]", "response_a": "[]", "response_b": '[""]'}),
        row(2, raw={"prompt": '["q", null]', "response_a": '[null, "x"]', "response_b": "[null]"}),
    ])
    res = read_pairs(p)
    assert res.quarantine == []
    r1, r2 = res.records
    assert (r1.prompt, r1.response_a, r1.response_b) == ([""], [], [""])
    assert (r2.prompt, r2.response_a, r2.response_b) == (["q", ""], ["", "x"], [""])


def test_turn_counts_may_differ_between_columns(tmp_path):
    p = write_csv(tmp_path / "t.csv", [row(1, prompt=["q1", "q2", "q3"], a=["a1"], b=["b1", "b2"])])
    (r,) = read_pairs(p).records
    assert (len(r.prompt), len(r.response_a), len(r.response_b)) == (3, 1, 2)
    assert r.n_turns == 3


def test_bare_json_scalars_become_their_text(tmp_path):
    p = write_csv(tmp_path / "t.csv", [row(1, raw={"prompt": '["Is it?"]', "response_a": "[true]",
                                                   "response_b": "[false, 3, 1.5, null]"})])
    (r,) = read_pairs(p).records
    assert r.response_a == ["true"]
    assert r.response_b == ["false", "3", "1.5", ""]


def test_bare_string_cell_is_one_turn(tmp_path):
    p = write_csv(tmp_path / "t.csv", [row(1, raw={"prompt": '"just a string"'})])
    (r,) = read_pairs(p).records
    assert r.prompt == ["just a string"]


def test_multiline_cells_with_quotes_and_commas(tmp_path):
    tricky = ['He said "yes, no", then left.\nNew line, "quoted"\n\n- item, one', 'a,b,,"c"']
    # a multi-line CSV cell: JSON with whitespace newlines between elements, plus escaped ones inside
    pretty = json.dumps(tricky, indent=2)
    assert "\n" in pretty
    p = write_csv(tmp_path / "t.csv", [row(1, prompt=tricky, raw={"response_a": pretty}), row(2)])
    text = p.read_text(encoding="utf-8")
    assert text.count("\n") > 3  # the file really has multi-line cells
    res = read_pairs(p)
    assert [r.id for r in res.records] == ["1", "2"] and res.quarantine == []
    assert res.records[0].prompt == tricky
    assert res.records[0].response_a == tricky


def test_bom_at_file_start_is_ignored(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbf" + csv_text([row(7)]).encode("utf-8"))
    res = read_pairs(p)
    assert [r.id for r in res.records] == ["7"]  # header's first column is "id", not "\ufeffid"
    assert res.records[0].label == A_WINS


def test_blank_lines_are_not_rows(tmp_path):
    body = csv_text([row(1), row(2), row(3)])
    lines = body.split("\r\n")
    p = tmp_path / "blank.csv"
    p.write_text("\r\n".join([lines[0], "", lines[1], "", "", lines[2], lines[3], "", ""]), encoding="utf-8")
    res = read_pairs(p)
    assert [r.id for r in res.records] == ["1", "2", "3"]
    assert res.rows == 3 and res.quarantine == []


def test_row_numbers_skip_blank_lines(tmp_path):
    lines = csv_text([row(1), row(2, raw={"prompt": "{nope"})]).split("\r\n")
    p = tmp_path / "t.csv"
    p.write_text("\r\n".join([lines[0], "", lines[1], "", lines[2], ""]), encoding="utf-8")
    (q,) = read_pairs(p).quarantine
    assert (q.row, q.id, q.reason) == (2, "2", "invalid_json")


def test_labels_models_source_and_extra_columns(tmp_path):
    header = HEADER + ["source", "p_a"]
    rows = [row(i, label=lab) + ["hh", "0.25"] for i, lab in enumerate([A_WINS, B_WINS, TIE, B_WINS])]
    rows[0][HEADER.index("winner_model_a")] = "1.0"  # floats are fine
    res = read_pairs(write_csv(tmp_path / "t.csv", rows, header))
    assert [r.label for r in res.records] == [A_WINS, B_WINS, TIE, B_WINS]
    r = res.records[0]
    assert (r.model_a, r.model_b, r.source, r.extra) == ("m-a", "m-b", "hh", {"p_a": "0.25"})
    assert res.has_labels
    assert res.report()["labels"] == {0: 1, 1: 2, 2: 1}


def test_test_schema_has_no_labels(tmp_path):
    header = ["id", "prompt", "response_a", "response_b"]
    rows = [[str(i), '["q"]', '["a"]', '["b"]'] for i in range(3)]
    res = read_pairs(write_csv(tmp_path / "test.csv", rows, header))
    assert len(res.records) == 3 and all(r.label is None for r in res.records)
    assert not res.has_labels
    assert all(r.model_a is None for r in res.records)


turn_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
turns = st.lists(st.one_of(turn_text, st.none()), max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(st.tuples(turns, turns, turns, st.sampled_from([A_WINS, B_WINS, TIE])), min_size=1, max_size=6))
def test_roundtrip_property(tmp_path, data):
    """Whatever the text (quotes, commas, newlines, unicode), the turns read back are the turns written."""
    p = write_csv(tmp_path / "prop.csv", [row(i, p_, a, b, lab) for i, (p_, a, b, lab) in enumerate(data)])
    res = read_pairs(p)
    assert res.quarantine == []
    norm = lambda ts: [t or "" for t in ts]  # noqa: E731  (null turns read as "")
    for r, (p_, a, b, lab) in zip(res.records, data):
        assert (r.prompt, r.response_a, r.response_b, r.label) == (norm(p_), norm(a), norm(b), lab)


# --- bad input ---------------------------------------------------------------------------

def test_missing_column_names_file_and_column(tmp_path):
    header = [h for h in HEADER if h != "response_b"]
    p = tmp_path / "nocol.csv"
    p.write_text(csv_text([], header), encoding="utf-8")
    with pytest.raises(DataError) as ei:
        read_pairs(p)
    msg = str(ei.value)
    assert str(p) in msg and "response_b" in msg and "\n" not in msg


def test_partial_winner_columns_is_an_error(tmp_path):
    header = [h for h in HEADER if h != "winner_tie"]
    p = tmp_path / "partial.csv"
    p.write_text(csv_text([], header), encoding="utf-8")
    with pytest.raises(DataError, match="winner_tie"):
        read_pairs(p)


@pytest.mark.parametrize("name,content", [("empty.csv", b""), ("empty.jsonl", b"")])
def test_empty_file_is_an_error(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(DataError, match="empty") as ei:
        read_pairs(p)
    assert str(p) in str(ei.value)


def test_missing_file_and_directory_are_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_pairs(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="directory"):
        read_pairs(tmp_path)


def test_header_only_file_reads_zero_rows(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text(csv_text([]), encoding="utf-8")
    res = read_pairs(p)
    assert res.rows == 0 and res.report()["ok"] == 0


def test_invalid_json_cells_are_quarantined(tmp_path):
    rows = [row(1), row(2, raw={"prompt": '["unterminated'}), row(3, raw={"response_b": "not json"}),
            row(4, raw={"response_a": '{"a": 1}'}), row(5, raw={"prompt": '[["nested"]]'}), row(6)]
    res = read_pairs(write_csv(tmp_path / "t.csv", rows))
    assert [r.id for r in res.records] == ["1", "6"]
    got = [(q.row, q.id, q.reason) for q in res.quarantine]
    assert got == [(2, "2", "invalid_json"), (3, "3", "invalid_json"), (4, "4", "not_a_list"), (5, "5", "not_a_list")]
    assert "'response_b'" in res.quarantine[1].detail  # the detail names the column
    assert_accounted(res, 6)


# ("0.5", "0.5", "0") used to be here: probabilities summing to 1 are now a soft target
# (tests/test_soft_labels.py); these are neither one-hot nor a distribution.
@pytest.mark.parametrize("cells", [("1", "1", "0"), ("0", "0", "0"), ("x", "0", "0"), ("", "1", "0"),
                                   ("2", "0", "0"), ("0.5", "0.6", "0"), ("1", "0", "-1")])
def test_label_not_a_distribution(tmp_path, cells):
    r = row(9)
    r[6:9] = cells
    res = read_pairs(write_csv(tmp_path / "t.csv", [row(1), r]))
    assert [x.id for x in res.records] == ["1"]
    (q,) = res.quarantine
    assert (q.row, q.id, q.reason) == (2, "9", "label_not_a_distribution")


def test_duplicate_id_first_kept_later_quarantined(tmp_path):
    rows = [row(1, a=["first"]), row(2), row(1, a=["second"]), row(3), row(1, a=["third"])]
    res = read_pairs(write_csv(tmp_path / "t.csv", rows))
    assert [r.id for r in res.records] == ["1", "2", "3"]
    assert res.records[0].response_a == ["first"]
    assert [(q.row, q.id, q.reason) for q in res.quarantine] == [(3, "1", "duplicate_id"), (5, "1", "duplicate_id")]
    assert_accounted(res, 5)


def test_non_utf8_row_is_quarantined_others_fine(tmp_path):
    text = csv_text([row(1), row(2, a=["caf@@BAD@@"]), row(3, a=["café ✓ 日本"])])
    p = tmp_path / "bytes.csv"
    p.write_bytes(text.encode("utf-8").replace(b"@@BAD@@", b"\xe9\xff\xfe"))
    res = read_pairs(p)
    assert [r.id for r in res.records] == ["1", "3"]
    assert res.records[1].response_a == ["café ✓ 日本"]
    (q,) = res.quarantine
    assert (q.row, q.id, q.reason) == (2, "2", "non_utf8") and "response_a" in q.detail
    json.dumps(res.report())  # the report stays serialisable


def test_enormous_cell_is_quarantined(tmp_path):
    rows = [row(1, a=["x" * 500]), row(2, a=["y" * 5000]), row(3)]
    res = read_pairs(write_csv(tmp_path / "t.csv", rows), max_cell_chars=1000)
    assert [r.id for r in res.records] == ["1", "3"]
    (q,) = res.quarantine
    assert (q.row, q.id, q.reason) == (2, "2", "cell_too_large") and "response_a" in q.detail
    # the default limit lets a 200k-char cell through (the csv module's own 128 KiB limit would not)
    big = read_pairs(write_csv(tmp_path / "big.csv", [row(1, a=["z" * 200_000])]))
    assert big.quarantine == [] and len(big.records[0].response_a[0]) == 200_000


def test_ragged_rows_are_quarantined(tmp_path):
    short, long_ = row(2)[:5], row(3) + ["extra"]
    res = read_pairs(write_csv(tmp_path / "t.csv", [row(1), short, long_, row(4)]))
    assert [r.id for r in res.records] == ["1", "4"]
    assert [(q.row, q.id, q.reason) for q in res.quarantine] == [(2, "2", "bad_row_shape"), (3, "3", "bad_row_shape")]


def test_missing_id_is_quarantined(tmp_path):
    res = read_pairs(write_csv(tmp_path / "t.csv", [row(1), row(" ")]))
    (q,) = res.quarantine
    assert (q.row, q.id, q.reason) == (2, None, "missing_id")


BAD_KINDS = {
    "ok": (lambda i: row(i), None),
    "json": (lambda i: row(i, raw={"prompt": "[oops"}), "invalid_json"),
    "label": (lambda i: row(i, raw={"winner_model_b": "1"}), "label_not_a_distribution"),
    "shape": (lambda i: row(i)[:-1], "bad_row_shape"),
    "list": (lambda i: row(i, raw={"response_b": "42"}), "not_a_list"),
    "dup": (lambda i: row(0), "duplicate_id"),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(sorted(BAD_KINDS)), max_size=25))
def test_every_row_is_accounted_for(tmp_path, kinds):
    """rows == ok + quarantined, with the expected reason at the expected row number."""
    rows = [row(0)] + [BAD_KINDS[k][0](i + 1) for i, k in enumerate(kinds)]
    res = read_pairs(write_csv(tmp_path / "mix.csv", rows))
    assert_accounted(res, len(rows))
    expected = [(i + 2, BAD_KINDS[k][1]) for i, k in enumerate(kinds) if BAD_KINDS[k][1]]
    assert [(q.row, q.reason) for q in res.quarantine] == expected
    assert all(q.id is not None for q in res.quarantine)
    assert len(res.records) == 1 + kinds.count("ok")


def test_write_report_is_json_with_every_row(tmp_path, synthetic_csv):
    res = read_pairs(write_csv(tmp_path / "t.csv", [row(1), row(1), row(2, raw={"prompt": "x"})]))
    out = tmp_path / "reports" / "r.json"
    rep = write_report(res, out)
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(rep))
    assert on_disk["reasons"] == {"duplicate_id": 1, "invalid_json": 1}
    assert [q["row"] for q in on_disk["quarantined_rows"]] == [2, 3]


# --- JSONL shapes --------------------------------------------------------------------------

def write_jsonl(path: Path, objs) -> Path:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs), encoding="utf-8")
    return path


def test_split_hh_dialogue():
    users, bots = split_hh_dialogue("\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: fine")
    assert users == ["hi there", "how are you?"] and bots == ["hello", "fine"]
    assert split_hh_dialogue("no markers at all") == (["no markers at all"], [""])


def test_hh_rlhf_chosen_rejected_strings(tmp_path):
    objs = [{"chosen": f"\n\nHuman: question {i}?\n\nAssistant: good {i}\n\nHuman: more?\n\nAssistant: best {i}",
             "rejected": f"\n\nHuman: question {i}?\n\nAssistant: good {i}\n\nHuman: more?\n\nAssistant: bad {i}"}
            for i in range(200)]
    res = read_pairs(write_jsonl(tmp_path / "hh.jsonl", objs))
    assert res.quarantine == [] and len(res.records) == 200
    for i, r in enumerate(res.records):
        assert r.id == str(i + 1)  # no id field: the line number
        assert r.prompt == [f"question {i}?", "more?"]
        chosen, rejected = [f"good {i}", f"best {i}"], [f"good {i}", f"bad {i}"]
        if r.label == A_WINS:
            assert (r.response_a, r.response_b) == (chosen, rejected)
        else:
            assert r.label == B_WINS and (r.response_a, r.response_b) == (rejected, chosen)
    # the deterministic coin puts the chosen side on A about half the time
    n_a = sum(r.label == A_WINS for r in res.records)
    assert 70 <= n_a <= 130
    again = read_pairs(tmp_path / "hh.jsonl")
    assert [r.label for r in again.records] == [r.label for r in res.records]


def test_chosen_rejected_message_lists(tmp_path):
    conv = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"}]
    objs = [{"id": f"m{i}", "chosen": conv + [{"role": "assistant", "content": "good"}],
             "rejected": conv + [{"role": "assistant", "content": "bad"}], "source": "ultra"} for i in range(40)]
    objs.append({"id": "sharegpt", "chosen": [{"from": "human", "value": "hey"}, {"from": "gpt", "value": "yo"}],
                 "rejected": [{"from": "human", "value": "hey"}, {"from": "gpt", "value": "meh"}]})
    objs.append({"id": "p", "prompt": "explicit prompt", "chosen": "yes", "rejected": "no"})
    res = read_pairs(write_jsonl(tmp_path / "msgs.jsonl", objs))
    assert res.quarantine == []
    by_id = {r.id: r for r in res.records}
    r = by_id["m0"]
    assert r.prompt == ["Q1", "Q2"] and r.source == "ultra"
    winner = r.response_a if r.label == A_WINS else r.response_b
    loser = r.response_b if r.label == A_WINS else r.response_a
    assert winner == ["A1", "good"] and loser == ["A1", "bad"]
    sg = by_id["sharegpt"]
    assert sg.prompt == ["hey"] and sorted([sg.response_a, sg.response_b]) == [["meh"], ["yo"]]
    p = by_id["p"]
    assert p.prompt == ["explicit prompt"]
    assert (p.response_a if p.label == A_WINS else p.response_b) == ["yes"]
    assert 0 < sum(r.label == A_WINS for r in res.records) < len(res.records)


@pytest.mark.parametrize("raw,expected", [("a", A_WINS), ("b", B_WINS), ("tie", TIE), ("0", A_WINS),
                                          (1, B_WINS), (2, TIE), ("model_a", A_WINS), ("TIE", TIE)])
def test_prompt_response_label_shape(tmp_path, raw, expected):
    obj = {"id": "x", "prompt": "q", "response_a": ["a1", None], "response_b": "b", "label": raw, "model_a": "m"}
    (r,) = read_pairs(write_jsonl(tmp_path / "p.jsonl", [obj])).records
    assert (r.prompt, r.response_a, r.response_b, r.label, r.model_a) == (["q"], ["a1", ""], ["b"], expected, "m")


def test_prompt_response_one_hot_and_unlabelled(tmp_path):
    objs = [{"id": 1, "prompt": ["q"], "response_a": ["a"], "response_b": ["b"],
             "winner_model_a": 0, "winner_model_b": 0, "winner_tie": 1},
            {"id": 2, "prompt": ["q"], "response_a": ["a"], "response_b": ["b"]}]
    res = read_pairs(write_jsonl(tmp_path / "p.jsonl", objs))
    assert [(r.id, r.label) for r in res.records] == [("1", TIE), ("2", None)]


def test_bad_jsonl_lines_are_quarantined(tmp_path):
    good = {"id": "g", "prompt": "q", "response_a": "a", "response_b": "b", "label": "a"}
    lines = [good, "{not json", "[1, 2]", {"id": "u", "text": "no known fields"},
             {"id": "l", "prompt": "q", "response_a": "a", "response_b": "b", "label": "maybe"},
             {"id": "f", "prompt": "q", "response_a": [1], "response_b": "b"},
             good, "", {"id": "c", "chosen": 5, "rejected": "x"},
             {"id": "ok2", "chosen": "x", "rejected": "y"}]
    p = write_jsonl(tmp_path / "bad.jsonl", lines)
    res = read_pairs(p)
    assert [r.id for r in res.records] == ["g", "ok2"]
    got = [(q.row, q.id, q.reason) for q in res.quarantine]
    assert got == [(2, None, "invalid_json"), (3, None, "unknown_shape"), (4, "u", "unknown_shape"),
                   (5, "l", "bad_label"), (6, "f", "bad_field"), (7, "g", "duplicate_id"), (8, "c", "bad_field")]
    assert_accounted(res, 9)  # the blank line is not a row


def test_jsonl_non_utf8_and_too_large(tmp_path):
    p = tmp_path / "b.jsonl"
    good = json.dumps({"id": "1", "chosen": "x", "rejected": "y"}).encode()
    bad = json.dumps({"id": "2", "chosen": "@@", "rejected": "y"}).encode().replace(b"@@", b"\xff")
    big = json.dumps({"id": "3", "chosen": "z" * 3000, "rejected": "y"}).encode()
    p.write_bytes(b"\n".join([good, bad, big, b""]))
    res = read_pairs(p, max_cell_chars=1000)
    assert [r.id for r in res.records] == ["1"]
    assert [(q.row, q.reason) for q in res.quarantine] == [(2, "non_utf8"), (3, "cell_too_large")]


@pytest.mark.slow  # spawns the validate CLI in a child process
def test_jsonl_of_blank_lines_is_an_error(tmp_path):
    p = tmp_path / "blank.jsonl"
    p.write_text("\n \n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no JSON lines"):
        read_pairs(p)


# --- python -m src.data.validate ------------------------------------------------------------

def run_validate(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "src.data.validate", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # spawns the validate CLI in a child process
def test_validate_real_data(real_dev_csv):
    proc = run_validate(real_dev_csv)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["rows"] == 3768 and rep["ok"] == 3768 and rep["quarantined"] == 0
    assert sum(rep["labels"].values()) == 3768 and set(rep["labels"]) == {"0", "1", "2"}


def _broken_copy(real: Path, out: Path) -> dict:
    """Corrupt known rows of the real file; return what the validator must report."""
    with open(real, encoding="utf-8", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert len(rows) == 3768
    col = {h: i for i, h in enumerate(header)}
    expected: dict[int, tuple[str, str]] = {}  # 0-based data index -> (id, reason)
    for i in (10, 1000, 2222):  # invalid JSON: cut the closing bracket
        rows[i][col["prompt"]] = rows[i][col["prompt"]].rstrip()[:-1]
        expected[i] = (rows[i][col["id"]], "invalid_json")
    for i, earlier in ((1501, 1500), (3000, 5)):  # duplicated ids: the later row goes
        rows[i][col["id"]] = rows[earlier][col["id"]]
        expected[i] = (rows[i][col["id"]], "duplicate_id")
    for i, cells in zip((50, 777, 2500, 3767), (("1", "1", "0"), ("0", "0", "0"), ("x", "0", "0"), ("0", "1", "1"))):
        for name, v in zip(("winner_model_a", "winner_model_b", "winner_tie"), cells):
            rows[i][col[name]] = v
        expected[i] = (rows[i][col["id"]], "label_not_a_distribution")
    i = 1234  # non-UTF-8 bytes inside a response
    rows[i][col["response_a"]] = json.dumps(["broken @@NONUTF8@@ text"])
    expected[i] = (rows[i][col["id"]], "non_utf8")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows([header] + rows)
    data = buf.getvalue().encode("utf-8")
    assert data.count(b"@@NONUTF8@@") == 1
    out.write_bytes(data.replace(b"@@NONUTF8@@", b"\xc3\x28\xff"))
    return expected


@pytest.mark.slow  # spawns the validate CLI in a child process
def test_validate_broken_copy_of_real_data(real_dev_csv, tmp_path):
    broken = tmp_path / "broken.csv"
    expected = _broken_copy(real_dev_csv, broken)
    report_path = tmp_path / "report.json"
    proc = run_validate(broken, "--report", report_path)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["rows"] == 3768
    assert rep["quarantined"] == 10 and rep["ok"] == 3758
    assert rep["reasons"] == {"label_not_a_distribution": 4, "invalid_json": 3, "duplicate_id": 2, "non_utf8": 1}
    got = {(q["row"], q["id"], q["reason"]) for q in rep["quarantined_rows"]}
    assert got == {(i + 1, rid, reason) for i, (rid, reason) in expected.items()}
    assert json.loads(report_path.read_text()) == rep
    assert Counter(q["reason"] for q in rep["quarantined_rows"]) == Counter(rep["reasons"])


@pytest.mark.parametrize("kind", ["missing", "empty"])
@pytest.mark.slow  # spawns the validate CLI in a child process
def test_validate_unreadable_file(tmp_path, kind):
    p = tmp_path / f"{kind}.csv"
    if kind == "empty":
        p.write_bytes(b"")
    proc = run_validate(p)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and str(p) in err
    assert proc.stdout == ""


@pytest.mark.slow  # spawns the validate CLI in a child process
def test_validate_max_cell_chars_flag(synthetic_csv):
    proc = run_validate(synthetic_csv, "--max-cell-chars", "60")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["rows"] == 400 and rep["ok"] + rep["quarantined"] == 400
    assert rep["quarantined"] > 0 and set(rep["reasons"]) == {"cell_too_large"}
    assert len(rep["quarantined_rows"]) == min(20, rep["quarantined"])  # the printed summary lists at most 20
    assert json.loads(run_validate(synthetic_csv).stdout)["ok"] == 400
