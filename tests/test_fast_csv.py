"""The pandas fast path (src/data/fast_csv.py, arena.fast_arena_records) against the careful reader.

What must hold: when the fast path reads a file, its records are the careful
reader's, field for field, and the careful reader quarantines nothing there; when
anything is in doubt it refuses and `read_pairs` gives exactly the careful
reader's records and quarantine. A clean file must actually take the fast path
(else the speed-up is gone without a test noticing), and each kind of damage
pandas reads differently from the csv module must make it refuse.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from src.data.arena import iter_arena_csv, read_pairs
from src.data.fast_csv import json_values, newline_bytes
from src.data.records import PairRecord
from src.data.rows import DEFAULT_MAX_CELL_CHARS
from tests.test_data_rows import _BASES, _base_files, damage

REAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_pairs_dev.csv"
HEADER = ["id", "prompt", "response_a", "response_b", "winner_model_a", "winner_model_b", "winner_tie", "source"]


def rows(n: int = 6) -> list[list[str]]:
    return [[str(100 + i), json.dumps([f"q {i}"]), json.dumps([f"a, {i}"]), json.dumps([f'b "{i}"']),
             *("1", "0", "0")[i % 3:] + ("1", "0", "0")[:i % 3], "lmsys"] for i in range(n)]


def to_csv(header, body, terminator: str = "\r\n") -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator=terminator).writerows([header] + body)
    return buf.getvalue().encode("utf-8")


def careful(path: Path) -> tuple[list, list]:
    """(records, quarantine) of the careful reader alone."""
    items = list(iter_arena_csv(path, DEFAULT_MAX_CELL_CHARS))
    return [x for x in items if isinstance(x, PairRecord)], [x for x in items if not isinstance(x, PairRecord)]


def assert_same_as_careful(path: Path):
    res = read_pairs(path)
    records, quarantine = careful(path)
    assert res.records == records and res.quarantine == quarantine
    if res.reader == "fast":
        assert quarantine == [] and res.fast_refused == ""
    else:
        assert res.reader == "careful" and res.fast_refused
    return res


# --- clean files take the fast path ------------------------------------------------------

def _clean_files(tmp_path: Path) -> dict[str, Path]:
    from src.data.synthetic import make_rows, write_csv
    files = {"synthetic": tmp_path / "syn.csv", "ours": tmp_path / "ours.csv", "tsv": tmp_path / "t.csv",
             "lf_no_final_newline": tmp_path / "lf.csv", "wsdm": tmp_path / "wsdm.csv",
             "soft_and_teacher": tmp_path / "soft.csv", "unlabelled": tmp_path / "test.csv"}
    write_csv(make_rows(40, seed=3), files["synthetic"])
    files["ours"].write_bytes(to_csv(HEADER, rows()))
    tsv = io.StringIO()
    csv.writer(tsv, delimiter="\t", lineterminator="\n").writerows([HEADER] + rows())
    files["tsv"].write_text(tsv.getvalue())
    files["lf_no_final_newline"].write_bytes(to_csv(HEADER, rows(), "\n").rstrip(b"\n"))
    wsdm = [["id", "prompt", "response_a", "response_b", "winner", "language"]] + [
        [r[0], r[1], r[2], r[3], ("model_a", "model_b", "Tie (bothbad)")[i % 3], "English"] for i, r in enumerate(rows())]
    files["wsdm"].write_bytes(to_csv(wsdm[0], wsdm[1:]))
    soft = [r[:4] + ["0.2", "0.3", "0.5", "0.1", "0.1", "0.8", "x, y"] for r in rows()]
    soft[1][4:7] = ["1", "0", "0"]  # a hard row among soft ones
    soft[2][4:7] = ["1.0", "0.0", "0"]  # one-hot spelled as floats
    soft[3][7:10] = ["", "", ""]  # no teacher for this row
    files["soft_and_teacher"].write_bytes(to_csv(HEADER[:7] + ["teacher_a", "teacher_b", "teacher_tie", "note"], soft))
    files["unlabelled"].write_bytes(to_csv(HEADER[:4], [r[:4] for r in rows()]))
    if REAL_DEV.exists():
        files["real_dev"] = REAL_DEV
    return files


CLEAN = ["synthetic", "ours", "tsv", "lf_no_final_newline", "wsdm", "soft_and_teacher", "unlabelled", "real_dev"]


@pytest.mark.parametrize("name", CLEAN)
def test_clean_file_takes_the_fast_path_with_the_careful_readers_records(tmp_path, name):
    files = _clean_files(tmp_path)
    if name not in files:
        pytest.skip(f"{REAL_DEV} is not here")
    res = assert_same_as_careful(files[name])
    assert res.reader == "fast", res.fast_refused
    assert res.rows > 0 and res.quarantine == []


def test_fast_path_keeps_bare_strings_nulls_and_scalars_as_parse_turns_does(tmp_path):
    body = rows(4)
    body[0][1] = '"a bare string"'
    body[1][2] = "[null, 3, true]"
    body[2][3] = ' ["surrounded by spaces"] '
    p = tmp_path / "odd.csv"
    p.write_bytes(to_csv(HEADER, body))
    res = assert_same_as_careful(p)
    assert res.reader == "fast"
    assert res.records[0].prompt == ["a bare string"] and res.records[1].response_a == ["", "3", "true"]
    assert res.records[2].response_b == ["surrounded by spaces"]


# --- damage pandas reads differently: the fast path refuses ---------------------------------

def _damaged(kind: str) -> bytes:
    clean = to_csv(HEADER, rows())
    lines = clean.split(b"\r\n")
    if kind == "unclosed_quote":
        lines[3] = lines[3].replace(b'"]"', b'"]', 1)
    elif kind == "non_utf8":
        lines[2] = lines[2].replace(b"lmsys", b"lm\xffsys")
    elif kind == "short_row":  # pandas pads it with "": the careful reader quarantines it
        lines[2] = lines[2].rsplit(b",", 1)[0]
    elif kind == "long_first_row":  # pandas drops the extra cell with only a warning
        lines[1] += b",extra"
    elif kind == "long_later_row":
        lines[4] += b",extra"
    elif kind == "blank_line":
        lines.insert(3, b"")
    elif kind == "whitespace_line":  # pandas skips it by default, the csv module reads a 1-cell row
        lines.insert(3, b"   ")
    elif kind == "duplicate_id":
        lines[4] = lines[2]
    elif kind == "invalid_json":
        lines[2] = lines[2].replace(b"[", b"{", 1)
    elif kind == "lone_cr":  # a record ended by \r alone: both parsers agree, the newline count does not
        lines[2] = lines[2] + b"\r" + lines.pop(3)
    elif kind == "numeric_text_column":  # pandas infers numbers: their exact text is gone
        lines[1:-1] = [line.replace(b'"[""q ', b'"', 1).replace(b'""]"', b'"', 1) for line in lines[1:-1]]
    elif kind == "quoted_header":
        lines[0] = lines[0].replace(b"source", b'"source"')
    return b"\r\n".join(lines)


REFUSALS = {"unclosed_quote": "", "non_utf8": "UnicodeDecodeError", "short_row": "last cell is empty",
            "long_first_row": "ParserWarning", "long_later_row": "ParserError", "blank_line": "last cell is empty",
            "whitespace_line": "last cell is empty", "duplicate_id": "duplicate_id", "invalid_json": "invalid_json",
            "lone_cr": "line breaks", "quoted_header": "header line holds a quote",
            "numeric_text_column": "did not parse as text"}


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_damage_makes_the_fast_path_refuse_and_the_careful_reader_decide(tmp_path, kind):
    p = tmp_path / "damaged.csv"
    p.write_bytes(_damaged(kind))
    res = assert_same_as_careful(p)
    if kind == "quoted_header":  # harmless, and read right, but not by the fast path
        assert res.reader == "careful" and "quote" in res.fast_refused and res.quarantine == []
        return
    assert res.reader == "careful" and REFUSALS[kind] in res.fast_refused
    if kind not in ("blank_line", "lone_cr"):  # the careful reader skips a blank line and reads a lone \r
        assert res.quarantine, "the damage should cost a row"


@pytest.mark.parametrize("cell, expected", [
    (b"lm\x00sys", "lm\x00sys"),  # NUL kept by both
    (b'lm"sys', 'lm"sys'),  # a quote inside an unquoted cell is kept
    (b'"lm"sys', "lmsys"),  # text after a closing quote is appended
    (b'"a\r\nb"', "a\r\nb"),  # a line break inside quotes belongs to the cell
    (b'"a\rb"', "a\rb"),
    (b"\xef\xbb\xbflmsys", "\ufefflmsys"),  # a BOM inside the file is a character
    ("a\u2028b\x85c".encode(), "a\u2028b\x85c"),
])
def test_grammar_corners_read_alike_by_both_parsers(tmp_path, cell, expected):
    """Where the csv module and pandas read a cell the same way the fast path may read it."""
    lines = to_csv(HEADER, rows(3)).split(b"\r\n")
    lines[2] = lines[2].rsplit(b",", 1)[0] + b"," + cell
    p = tmp_path / "corner.csv"
    p.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(lines))  # and a BOM at the start, which both drop
    res = assert_same_as_careful(p)
    assert res.reader == "fast", res.fast_refused
    assert res.records[1].source == expected


def test_cell_too_large_refuses_and_the_careful_reader_quarantines_it(tmp_path):
    body = rows(3)
    body[1][2] = json.dumps(["x" * 500])
    p = tmp_path / "big.csv"
    p.write_bytes(to_csv(HEADER, body))
    res = read_pairs(p, max_cell_chars=400)
    assert res.reader == "careful" and "cell_too_large" in res.fast_refused
    assert [(q.row, q.reason) for q in res.quarantine] == [(2, "cell_too_large")]
    assert read_pairs(p, max_cell_chars=600).reader == "fast"
    body[1][2] = json.dumps(["\u00e9" * 300], ensure_ascii=False)  # 604 bytes of UTF-8, 304 characters
    p.write_bytes(to_csv(HEADER, body))
    assert_same_as_careful(p)  # at the default limit; and at 400, a limit in characters, not bytes:
    res = read_pairs(p, max_cell_chars=400)
    assert res.reader == "fast" and res.records[1].response_a == ["\u00e9" * 300]


# --- any damage: the fast path or the careful reader, never a third answer ------------------

MORE_DAMAGE = st.sampled_from(["drop_quote", "truncate", "nul", "newline", "bom", "comma", "drop_comma", "cr",
                               "space_line", "bad_byte", "repeat_line"])


def more_damage(data: bytes, ops: list[tuple[str, float]]) -> bytes:
    """`test_data_rows.damage`, plus what pandas and the csv module could read differently."""
    for op, where in ops:
        k = int(where * len(data))
        if op == "comma":
            data = data[:k] + b"," + data[k:]
        elif op == "drop_comma":
            commas = [i for i, b in enumerate(data) if b == ord(",")]
            if commas:
                i = commas[int(where * len(commas))]
                data = data[:i] + data[i + 1:]
        elif op in ("cr", "space_line", "bad_byte"):
            data = data[:k] + {"cr": b"\r", "space_line": b"\n  \n", "bad_byte": b"\xff"}[op] + data[k:]
        elif op == "repeat_line":  # a duplicated row: a duplicate id
            lines = data.split(b"\n")
            j = 1 + int(where * (len(lines) - 1))
            data = b"\n".join(lines[:j + 1] + lines[j:j + 1] + lines[j + 1:])
        else:
            data = damage(data, [(op, where)])
    return data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from(["synthetic", "real", "ours"]),
       ops=st.lists(st.tuples(MORE_DAMAGE, st.floats(0, 1, exclude_max=True)), min_size=0, max_size=3))
def test_random_damage_fast_path_equals_careful_reader(tmp_path, base, ops):
    from src.data.rows import DataError
    if not _BASES:
        _BASES.update(_base_files(tmp_path))
    original = to_csv(HEADER, rows(8)) if base == "ours" else _BASES.get(base, _BASES["synthetic"])
    p = tmp_path / "damaged.csv"
    p.write_bytes(more_damage(original, ops))
    try:
        res = assert_same_as_careful(p)
    except DataError as e:  # the header is gone: the careful reader refuses the file with the same line
        with pytest.raises(DataError) as careful_error:
            careful(p)
        assert str(careful_error.value) == str(e)
        return
    if not ops:
        assert res.reader == "fast"


# --- the pieces -------------------------------------------------------------------------

JSONISH = st.one_of(
    st.lists(st.one_of(st.text(max_size=8), st.none(), st.integers()), max_size=3).map(json.dumps),
    st.text(alphabet='[]"{},: \t\nabn0ul', max_size=12),
    st.text(max_size=6).map(json.dumps),
)


@given(cells=st.lists(JSONISH, max_size=12))
def test_json_values_is_json_loads_or_names_the_cell(cells):
    values, odd = json_values(cells)
    assert len(values) == len(cells) and odd == sorted(set(odd))
    for i, cell in enumerate(cells):
        if i in odd:
            assert values[i] is None
            continue
        assert values[i] == json.loads(cell)


@given(cells=st.lists(st.one_of(JSONISH, st.lists(st.text(max_size=5), max_size=3).map(json.dumps)), max_size=12))
def test_string_lists_is_parse_turns_of_every_cell_or_refuses(cells):
    from src.data.arena import parse_turns
    from src.data.fast_csv import Refused, string_lists
    from src.data.rows import RowError
    try:
        expected = [parse_turns(c, "prompt") for c in cells]
    except RowError as e:
        with pytest.raises(Refused, match=e.reason):
            string_lists(cells, lambda cell: parse_turns(cell, "prompt"))
        return
    assert string_lists(cells, lambda cell: parse_turns(cell, "prompt")) == expected


def test_newline_bytes_counts_the_raw_file(tmp_path):
    p = tmp_path / "f"
    for data, expected in [(b"", (0, False)), (b"a\nb", (1, False)), (b'a\r\n"b\nc"\n', (3, True))]:
        p.write_bytes(data)
        assert newline_bytes(p) == expected


def test_without_pandas_the_careful_reader_reads_the_file(tmp_path, monkeypatch):
    # an exported predictor (src/pref/export.py) runs where pandas may be missing
    path = tmp_path / "pairs.csv"
    path.write_text('id,prompt,response_a,response_b\n1,"[""hi""]","[""a""]","[""b""]"\n2,"[""yo""]","[""c""]","[""d""]"\n')
    with_pandas = read_pairs(path)
    monkeypatch.setitem(sys.modules, "pandas", None)
    without = read_pairs(path)
    assert with_pandas.reader == "fast" and without.reader == "careful"
    assert "pandas is not installed" in without.fast_refused
    assert without.records == with_pandas.records and not without.quarantine
