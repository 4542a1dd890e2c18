"""Rows are never lost: the recovering CSV reader, the independent id scan, the one coin.

The property test damages small real and synthetic CSVs at random (dropped
quotes, truncation, NUL bytes, stray newlines, a BOM mid-file) and checks that
reading never crashes, every row is read or quarantined, and every row whose
physical line survived intact is found by both the reader and the id scan.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.data.arena import DataError, read_pairs
from src.data.rows import coin, scan_ids, stable_hash

TEST_HEADER = ["id", "prompt", "response_a", "response_b"]


def test_rows(n: int = 12) -> list[list[str]]:
    return [[str(1000 + i), json.dumps([f"question {i}"]), json.dumps([f"answer a {i}, with a comma"]),
             json.dumps([f"answer b {i}"])] for i in range(1, n + 1)]


test_rows.__test__ = False  # a helper, not a test


def to_csv(header, rows) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows([header] + rows)
    return buf.getvalue().encode("utf-8")


def drop_closing_quote(data: bytes, row: int) -> bytes:
    """Remove the last `"` of data row `row` (1-based): its last cell never closes."""
    lines = data.split(b"\r\n")
    line = lines[row]
    k = line.rindex(b'"')
    lines[row] = line[:k] + line[k + 1:]
    return b"\r\n".join(lines)


def test_unclosed_quote_costs_one_row_not_two(tmp_path):
    p = tmp_path / "test.csv"
    p.write_bytes(drop_closing_quote(to_csv(TEST_HEADER, test_rows()), 6))
    res = read_pairs(p)
    rep = res.report()
    assert rep["rows"] == 12 and rep["ok"] + rep["quarantined"] == 12  # today's main: 11
    assert [r.id for r in res.records] == [str(1000 + i) for i in range(1, 13) if i != 6]
    (q,) = res.quarantine
    assert (q.row, q.id, q.reason) == (6, "1006", "unclosed_quote")
    assert "file lines 7-7" in q.detail


def test_unclosed_quote_in_train_file_keeps_following_labelled_rows(tmp_path):
    header = TEST_HEADER + ["winner_model_a", "winner_model_b", "winner_tie"]
    rows = [r + ["1", "0", "0"] for r in test_rows(10)]
    data = to_csv(header, rows).replace(b'"[""answer b 4""]"', b'"[""answer b 4""]')
    p = tmp_path / "train.csv"
    p.write_bytes(data)
    res = read_pairs(p)
    assert res.rows == 10 and len(res.records) == 9
    assert [q.id for q in res.quarantine] == ["1004"]


def test_scan_ids_finds_every_id_and_names_the_damaged_row(tmp_path):
    p = tmp_path / "test.csv"
    clean = to_csv(TEST_HEADER, test_rows())
    p.write_bytes(clean)
    ok = scan_ids(p)
    assert ok.ids == [str(1000 + i) for i in range(1, 13)] and ok.damaged_rows == []
    p.write_bytes(drop_closing_quote(clean, 6))
    damaged = scan_ids(p)
    assert damaged.ids == ok.ids and damaged.damaged_rows == [6]


def test_scan_ids_keeps_legitimate_multiline_cells(tmp_path):
    rows = test_rows(4)
    rows[1][2] = '[\n "two\\nlines, quoted \\"x\\""\n]'  # pretty-printed JSON across physical lines
    p = tmp_path / "t.csv"
    p.write_bytes(to_csv(TEST_HEADER, rows))
    scan = scan_ids(p)
    assert scan.ids == ["1001", "1002", "1003", "1004"] and scan.damaged_rows == []
    res = read_pairs(p)
    assert res.quarantine == [] and res.records[1].response_a == ['two\nlines, quoted "x"']


def test_scan_ids_on_tsv_and_without_id_column(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("id\tprompt\tresponse_a\tresponse_b\n7\t[]\t[]\t[]\n8\t[]\t[]\t[]\n")
    assert scan_ids(p).ids == ["7", "8"]
    p.write_text("key,prompt\n1,x\n")
    with pytest.raises(DataError, match="no 'id' column"):
        scan_ids(p)


# --- random damage ----------------------------------------------------------------------

def _base_files(tmp_root: Path) -> dict[str, bytes]:
    from src.data.synthetic import make_rows, write_csv
    syn = tmp_root / "syn.csv"
    write_csv(make_rows(12, seed=5), syn)
    files = {"synthetic": syn.read_bytes()}
    real = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_pairs_dev.csv"
    if real.exists():
        with open(real, "rb") as f:
            files["real"] = b"".join(f.readline() for _ in range(13))  # header + 12 rows
    return files


_BASES: dict[str, bytes] = {}

DAMAGE = st.sampled_from(["drop_quote", "truncate", "nul", "newline", "bom"])


def damage(data: bytes, ops: list[tuple[str, float]]) -> bytes:
    for op, where in ops:
        if op == "drop_quote":
            quotes = [i for i, b in enumerate(data) if b == ord('"')]
            if quotes:
                k = quotes[int(where * len(quotes)) % len(quotes)]
                data = data[:k] + data[k + 1:]
            continue
        k = int(where * len(data))
        if op == "truncate":
            data = data[:max(k, 1)]
        else:
            data = data[:k] + {"nul": b"\x00", "newline": b"\n", "bom": b"\xef\xbb\xbf"}[op] + data[k:]
    return data


def surviving_ids(original: bytes, damaged: bytes) -> list[str]:
    """Ids whose whole physical line is still in the damaged file at a line start. The
    header tells how many cells a row has, so nothing survives a damaged header (the
    reader then quarantines every row as bad_row_shape, and a checker refuses)."""
    header, *lines = original.splitlines(keepends=True)
    if not damaged.startswith(header):
        return []
    found = []
    for line in lines:
        if line.endswith(b"\n") and (b"\n" + line) in damaged:
            found.append(line.split(b",", 1)[0].decode())
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from(["synthetic", "real"]),
       ops=st.lists(st.tuples(DAMAGE, st.floats(0, 1, exclude_max=True)), min_size=0, max_size=4))
def test_random_damage_never_loses_a_surviving_row(tmp_path, base, ops):
    if not _BASES:
        _BASES.update(_base_files(tmp_path))
    if base not in _BASES:
        base = "synthetic"
    original = _BASES[base]
    data = damage(original, ops)
    p = tmp_path / "damaged.csv"
    p.write_bytes(data)
    try:
        res = read_pairs(p)
    except DataError as e:  # a destroyed header or an emptied file: one line naming the file
        assert str(p) in str(e) and "\n" not in str(e)
        return
    rep = res.report()
    assert rep["rows"] == rep["ok"] + rep["quarantined"] == len(res.records) + len(res.quarantine)
    assert [q.row for q in res.quarantine] == sorted({q.row for q in res.quarantine})
    alive = surviving_ids(original, data)
    read_ids = {r.id for r in res.records} | {q.id for q in res.quarantine}
    assert set(alive) <= read_ids
    assert rep["rows"] >= len(alive)
    scan = scan_ids(p)
    assert set(alive) <= set(scan.ids)
    if not ops:
        assert rep["quarantined"] == 0 and scan.damaged_rows == [] and scan.ids == alive == [r.id for r in res.records]


@pytest.mark.slow  # spawns the validate CLI in a child process
def test_validate_cli_on_damaged_file_exits_cleanly(tmp_path):
    import subprocess
    import sys
    p = tmp_path / "test.csv"
    p.write_bytes(drop_closing_quote(to_csv(TEST_HEADER, test_rows()), 6))
    proc = subprocess.run([sys.executable, "-m", "src.data.validate", str(p)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows"] == 12


# --- the one coin -----------------------------------------------------------------------

def test_coin_is_uniform_and_order_free():
    values = [coin(0, "purpose", i) for i in range(4000)]
    assert all(0 <= v < 1 for v in values)
    assert 0.47 < sum(v < 0.5 for v in values) / len(values) < 0.53
    assert coin(1, "x", "r") == coin(1, "x", "r") != coin(2, "x", "r")


def test_stable_hash_keeps_the_old_outputs():
    """Saved splits and converted files depend on these exact bytes (old per-module copies)."""
    import hashlib
    assert stable_hash("a\x1eb") == hashlib.blake2b(b"a\x1eb", digest_size=8).digest()  # split.prompt_group
    assert stable_hash("p", "q", sep="\x1e", size=16) == hashlib.blake2b(b"p\x1eq", digest_size=16).digest()
    assert stable_hash("0:42", size=2) == hashlib.blake2b(b"0:42", digest_size=2).digest()  # arena side coin
    old_coin = int.from_bytes(hashlib.blake2b(b"0\x1ftie\x1fr1", digest_size=8).digest(), "big") / 2**64
    assert coin(0, "tie", "r1") == old_coin


# --- quiet edges: empty and identical responses, TSV, .json arrays, .JSONL --------------

def test_empty_and_identical_responses_are_kept_and_counted(tmp_path):
    rows = [["1", '["q"]', "[null]", '["b"]'], ["2", '["q"]', '["a"]', "[]"], ["3", '["q"]', '[""]', '[" "]'],
            ["4", '["q"]', '["same  text"]', '["same text"]'], ["5", '["q"]', '["x"]', '["y"]']]
    p = tmp_path / "t.csv"
    p.write_bytes(to_csv(TEST_HEADER, rows))
    res = read_pairs(p)
    assert res.quarantine == [] and len(res.records) == 5  # nothing dropped
    assert res.records[0].response_a == [""] and res.records[1].response_b == []
    # row 3 is empty on both sides, so also identical; row 4 differs only in whitespace
    assert res.report()["responses"] == {"empty_a": 2, "empty_b": 2, "identical": 2}


WORDS = st.lists(st.sampled_from(["a", "b", "ab", "é", "", " ", "  ", "\n", "\t", "\u3000", "\x1c", "x" * 70]),
                 max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(a=st.lists(WORDS, max_size=3), b=st.lists(WORDS, max_size=3), share=st.booleans())
def test_same_and_empty_responses_keep_their_definitions(a, b, share):
    """The report's checks are short-cut for speed (first characters, the words of a head);
    they must still mean: equal with whitespace runs made one space; nothing but whitespace."""
    from src.data.records import PairRecord, is_empty_response, same_responses
    if share:  # the same words, spaced differently: the case the short cuts must not miss
        b = [" \n ".join(t.split()) + " " for t in a]
    record = PairRecord(id="1", prompt=["q"], response_a=a, response_b=b)
    assert same_responses(record) == ([" ".join(t.split()) for t in a] == [" ".join(t.split()) for t in b])
    assert is_empty_response(a) == (not any(t.strip() for t in a))


def test_tsv_named_csv_is_read_with_tabs(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("id\tprompt\tresponse_a\tresponse_b\n1\t[\"q\"]\t[\"a\"]\t[\"b\"]\n")
    res = read_pairs(p)  # today's main: "missing column(s)"
    assert [r.id for r in res.records] == ["1"] and res.records[0].response_b == ["b"]


def test_semicolon_file_gets_a_delimiter_hint(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("id;prompt;response_a;response_b\n1;a;b;c\n")
    with pytest.raises(DataError, match="delimiter"):
        read_pairs(p)


def test_json_array_file_is_read_as_records(tmp_path):
    objs = [{"id": f"r{i}", "prompt": "q", "response_a": "a", "response_b": "b", "winner": "tie"} for i in range(6)]
    p = tmp_path / "pairs.json"
    p.write_text(json.dumps(objs, indent=2))
    res = read_pairs(p)  # today's main: read as a 113-row CSV
    assert res.rows == 6 and [r.id for r in res.records] == [f"r{i}" for i in range(6)]
    assert all(r.label == 2 for r in res.records)
    p.write_text("[1, 2]")
    assert [q.reason for q in read_pairs(p).quarantine] == ["unknown_shape", "unknown_shape"]


@pytest.mark.parametrize("suffix", [".JSONL", ".Jsonl", ".jsonl"])
def test_jsonl_in_any_case(tmp_path, suffix):
    p = tmp_path / f"pairs{suffix}"
    p.write_text(json.dumps({"id": "x", "prompt": "q", "response_a": "a", "response_b": "b"}) + "\n")
    res = read_pairs(p)
    assert [r.id for r in res.records] == ["x"] and res.quarantine == []


def test_chat_reader_reads_json_array_and_upper_case_jsonl(tmp_path):
    from src.data.chat import read_chat
    ep = {"id": "e1", "turns": ["hi", "hello"]}
    arr = tmp_path / "eps.json"
    arr.write_text(json.dumps([ep, {**ep, "id": "e2"}]))
    assert [e.id for e in read_chat({"path": str(arr)}).episodes] == ["eps:e1", "eps:e2"]
    up = tmp_path / "EPS.JSONL"
    up.write_text(json.dumps(ep) + "\n")
    assert [e.id for e in read_chat({"path": str(up)}).episodes] == ["EPS:e1"]


def test_chat_pairs_quarantine_names_the_file_row(tmp_path):
    """A pair quarantined by the chat reader (empty winning response) keeps its file row,
    not its index among the rows the CSV reader kept (today's main said row 1 here)."""
    from src.data.chat import read_chat
    header = TEST_HEADER + ["winner_model_a", "winner_model_b", "winner_tie"]
    rows = [["1", "[oops", '["a"]', '["b"]', "1", "0", "0"],  # invalid JSON: quarantined by the CSV reader
            ["2", '["q"]', '[""]', '["b"]', "1", "0", "0"],  # A wins with an empty answer: nothing to train on
            ["3", '["q"]', '["a"]', '["b"]', "1", "0", "0"]]
    p = tmp_path / "pairs.csv"
    p.write_bytes(to_csv(header, rows))
    res = read_chat({"path": str(p)})
    assert sorted((q.row, q.id, q.reason) for q in res.quarantine) == [(1, "1", "invalid_json"),
                                                                      (2, "2", "empty_target")]
    assert res.rows == 3 and res.ok_rows == 1


def test_tsv_file_reads_as_pairs_in_the_chat_reader(tmp_path):
    from src.data.chat import read_chat
    p = tmp_path / "pairs.tsv"
    p.write_text("id\tprompt\tresponse_a\tresponse_b\twinner_model_a\twinner_model_b\twinner_tie\n"
                 "1\t[\"q\"]\t[\"good\"]\t[\"bad\"]\t1\t0\t0\n")
    res = read_chat({"path": str(p)})
    assert res.format == "pairs" and [t.text for t in res.episodes[0].turns] == ["q", "good"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from(["synthetic", "real"]),
       ops=st.lists(st.tuples(DAMAGE, st.floats(0, 1, exclude_max=True)), min_size=0, max_size=4),
       multiline=st.booleans())
def test_fast_csv_path_yields_exactly_the_careful_readers_records(tmp_path, base, ops, multiline):
    """The plain csv.reader pass hands over to the careful reader at the first record that
    needs recovery: together they must give the careful reader's records, cell for cell and
    with the same physical line numbers, for any damage (and for legitimate multi-line cells)."""
    from src.data.arena import _plausible_row, read_csv_header
    from src.data.rows import _careful_records, iter_csv_records, open_text
    if not _BASES:
        _BASES.update(_base_files(tmp_path))
    original = _BASES.get(base, _BASES["synthetic"])
    if multiline:  # a legitimate line break inside a quoted cell of the first data row
        original = original.replace(b'["', b'["line one\nline two ', 1)
    p = tmp_path / "damaged.csv"
    p.write_bytes(damage(original, ops))
    try:
        with open_text(p) as f:
            header, delim = read_csv_header(p, f)
    except DataError:
        return
    def records(fn):
        with open_text(p) as f:
            read_csv_header(p, f)
            return [(r.first_line, r.last_line, r.cells, r.resplit) for r in
                    fn(f, n_cols=len(header), delimiter=delim, plausible=_plausible_row(header))]
    careful = records(lambda f, **kw: _careful_records(f, kw["n_cols"], kw["delimiter"], kw["plausible"]))
    assert records(iter_csv_records) == careful
    # read_pairs first tries pandas (data/fast_csv.py): it must give the careful reader's records
    # and quarantine too, taking the fast path only where the careful reader quarantines nothing
    from src.data.arena import iter_arena_csv
    from src.data.records import PairRecord
    from src.data.rows import DEFAULT_MAX_CELL_CHARS
    try:
        res = read_pairs(p)
    except DataError as e:  # a header the careful reader refuses with the same line
        with pytest.raises(DataError) as careful_error:
            list(iter_arena_csv(p, DEFAULT_MAX_CELL_CHARS))
        assert str(careful_error.value) == str(e)
        return
    items = list(iter_arena_csv(p, DEFAULT_MAX_CELL_CHARS))
    assert res.records == [x for x in items if isinstance(x, PairRecord)]
    assert res.quarantine == [x for x in items if not isinstance(x, PairRecord)]
    assert res.reader == "careful" or not res.quarantine
    if not ops and not multiline:
        assert res.reader == "fast", res.fast_refused
