"""Row-level machinery shared by every reader in `data/`: quarantine, file checks,
the JSONL line reader, the CSV record splitter that never loses a physical row,
the independent id scan, and the one seeded hash coin.

Contract of every reader: each data row read ends up either as a record or as a
`Quarantined` entry (row number, id where one can be read, reason code), so
`rows == ok + quarantined` holds for any byte sequence. A file that cannot be
read at all raises `DataError` (a `UsageError`) with one line naming the file.

Why the csv module and hand-written recovery instead of pandas: cells can be
non-UTF-8 or enormous and we quarantine exactly those rows; and when a quoted
cell loses its closing quote, every parser (pandas included) swallows the rows
after it into one field. `iter_csv_records` re-splits such a record at the
physical line where a well-formed row starts again, so the damaged row is
quarantined alone and the rows after it are read. pandas reads a CSV only where
none of this is needed: `fast_csv.py` lets it read a file it can verify clean
and hands any other file, whole, to this careful reader.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import UsageError

DEFAULT_MAX_CELL_CHARS = 2_000_000  # ~0.5M tokens: far beyond any real turn, catches corrupt joins
JSONL_SUFFIXES = (".jsonl", ".ndjson")
# How far past a damaged record we look for the end of a candidate row: a real row is a
# few lines at most; the bound keeps a stray quote from making the scan quadratic.
_LOOKAHEAD_LINES = 256

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # the default 128 KiB limit rejects real arena rows


class DataError(UsageError):
    """The file cannot be read at all. The message is one line naming the file."""


@dataclass
class Quarantined:
    row: int  # 1-based data row (the header is row 0)
    id: str | None
    reason: str  # a short code, counted in the report
    detail: str = ""


class RowError(Exception):
    """One row is unusable: becomes a `Quarantined` entry with this reason code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


# --- the one seeded hash ---------------------------------------------------------------

def stable_hash(*parts: Any, sep: str = "\x1f", size: int = 8) -> bytes:
    """blake2b of the parts joined by `sep`: per-row randomness and grouping keys that
    depend on the content only, never on the order rows are read in. Lone surrogates
    (non-UTF-8 bytes kept by `surrogateescape`) hash too."""
    text = sep.join(map(str, parts))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).digest()


def coin(*parts: Any) -> float:
    """A uniform number in [0, 1) from a hash of `parts` (e.g. seed, purpose, row id)."""
    return int.from_bytes(stable_hash(*parts), "big") / 2**64


# --- file and cell checks ----------------------------------------------------------------

def has_surrogates(s: str) -> bool:
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def open_text(path: Path) -> io.TextIOWrapper:
    # newline="" is what the csv module wants; surrogateescape keeps bad bytes per row.
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")


def check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a CSV/JSONL file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")


def check_cells(cells: dict[str, str], max_cell_chars: int) -> None:
    """Raise RowError for a cell over `max_cell_chars` or with non-UTF-8 bytes."""
    big = [c for c, v in cells.items() if len(v) > max_cell_chars]
    if big:
        raise RowError("cell_too_large", f"column '{big[0]}' has {len(cells[big[0]]):,} chars > {max_cell_chars:,}")
    if has_surrogates("".join(cells.values())):
        bad = next(c for c, v in cells.items() if has_surrogates(v))
        raise RowError("non_utf8", f"column '{bad}' has bytes that are not UTF-8")


def is_jsonl_path(path: Path) -> bool:
    return path.suffix.lower() in JSONL_SUFFIXES


def is_json_array_file(path: Path) -> bool:
    """A `.json` file whose first non-blank character is `[`: an array of records."""
    if path.suffix.lower() != ".json":
        return False
    with open_text(path) as f:
        head = f.read(4096).lstrip()
    return head.startswith("[")


# --- JSON records ------------------------------------------------------------------------

def _object_or_error(obj: Any, row_no: int) -> tuple[int, str | None, dict | RowError]:
    if not isinstance(obj, dict):
        return row_no, None, RowError("unknown_shape", f"row is JSON {type(obj).__name__}, expected an object")
    return row_no, str(obj["id"]) if obj.get("id") is not None else str(row_no), obj


def iter_json_array(path: Path, max_cell_chars: int) -> Iterator[tuple[int, str | None, dict | RowError]]:
    """A `.json` file holding one array of objects, as `iter_jsonl_objects` yields rows."""
    with open_text(path) as f:
        text = f.read()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                        "a file of one object per line should be named .jsonl") from None
    if not isinstance(value, list) or not value:
        raise DataError(f"{path}: expected a non-empty JSON array of objects")
    for row_no, obj in enumerate(value, 1):
        if isinstance(obj, dict) and len(json.dumps(obj, ensure_ascii=False)) > max_cell_chars:
            yield row_no, None, RowError("cell_too_large", f"row has more than {max_cell_chars:,} chars")
            continue
        yield _object_or_error(obj, row_no)


def iter_jsonl_objects(path: Path, max_cell_chars: int) -> Iterator[tuple[int, str | None, dict | RowError]]:
    """(row number, id, object or the reason the line is unusable) per non-blank line.
    Shared by the pairwise and the chat JSONL readers. A missing or null id is the row number.
    A `.json` file holding an array is read as its objects."""
    if is_json_array_file(path):
        yield from iter_json_array(path, max_cell_chars)
        return
    with open_text(path) as f:
        row_no = 0
        for line in f:
            if not line.strip():
                continue
            row_no += 1
            if has_surrogates(line):
                yield row_no, None, RowError("non_utf8", "line has bytes that are not UTF-8")
            elif len(line) > max_cell_chars:
                yield row_no, None, RowError("cell_too_large", f"line has {len(line):,} chars > {max_cell_chars:,}")
            else:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    yield row_no, None, RowError("invalid_json", f"{e.msg} at char {e.pos}")
                    continue
                yield _object_or_error(obj, row_no)
        if row_no == 0:
            raise DataError(f"{path}: file has no JSON lines")


# --- CSV records that never lose a physical row ------------------------------------------

@dataclass
class CsvRecord:
    first_line: int  # physical lines of the file (1-based, the header is line 1)
    last_line: int
    cells: list[str] | None  # None when the csv module refused the record
    error: str = ""  # the csv module's complaint, or why the record was cut at a row start
    resplit: bool = False  # cut off before a row start inside it (an unclosed quote)


class _LineFeed:
    """Physical lines for csv.reader, with push-back: a damaged record's tail is fed again."""

    def __init__(self, f):
        self._f = f
        self._back: deque[str] = deque()
        self.taken: list[str] = []  # lines of the record being parsed
        self.line_no = 0  # physical lines handed out so far

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self._back.popleft() if self._back else next(self._f)
        self.line_no += 1
        self.taken.append(line)
        return line

    def peek(self, n: int) -> list[str]:
        while len(self._back) < n:
            try:
                self._back.append(next(self._f))
            except StopIteration:
                break
        return list(self._back)[:n]

    def push_back(self, lines: list[str]) -> None:
        self._back.extendleft(reversed(lines))
        self.line_no -= len(lines)


def _parse_one(lines: list[str], delimiter: str) -> tuple[list[str] | None, int]:
    """The first CSV record of `lines` and how many lines it took (cells None on error)."""
    it = iter(lines)
    reader = csv.reader(it, delimiter=delimiter)
    try:
        return next(reader), reader.line_num
    except (csv.Error, StopIteration):
        return None, reader.line_num


def first_cell(line: str, delimiter: str = ",") -> str | None:
    """The first cell of a physical line read on its own, unquoted; None when empty."""
    head = line.replace("\x00", "").split(delimiter, 1)[0].strip().strip('"').strip()
    return head or None


def iter_csv_records(f, *, n_cols: int, delimiter: str = ",",
                     plausible: Callable[[list[str]], bool] = lambda cells: True) -> Iterator[CsvRecord]:
    """CSV records of an open text file (header already read), recovering at line boundaries.

    A record that spans several physical lines and is wrong (csv error, not `n_cols`
    cells, or not `plausible`) is searched for an inner line where a well-formed,
    plausible record starts; the record is cut there, its head yielded as a `resplit`
    record, and parsing resumes at that line. So an unclosed quote costs one row, not
    every row up to the next stray quote. Blank lines are not records.

    Speed: the careful reader feeds csv.reader one physical line at a time through
    Python (it must be able to push lines back), which cost ~40% over a plain parse.
    So the file is first read by csv.reader directly (C speed). Until a record would
    need recovery, both readers yield the same records from the same lines, so when
    one does, the file is rewound and the careful reader takes over from the first
    record not yet yielded: clean files never pay for the recovery machinery."""
    start = f.tell()
    done = 0
    for rec in _plain_records(f, n_cols, delimiter, plausible):
        if rec is None:  # this record needs the careful reader
            break
        done += 1
        yield rec
    else:
        return
    f.seek(start)
    for i, rec in enumerate(_careful_records(f, n_cols, delimiter, plausible)):
        if i >= done:
            yield rec


def _plain_records(f, n_cols: int, delimiter: str, plausible: Callable[[list[str]], bool]) -> Iterator[CsvRecord | None]:
    """The careful reader's records for as long as none needs recovery; then one None."""
    reader = csv.reader(f, delimiter=delimiter)
    last = 1  # the header
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield None
            return
        first, last = last + 1, 1 + reader.line_num
        if not cells:
            continue  # a blank line is not a data row
        if last > first and (len(cells) != n_cols or not plausible(cells)):
            yield None
            return
        yield CsvRecord(first, last, cells, "")


def _careful_records(f, n_cols: int, delimiter: str, plausible: Callable[[list[str]], bool]) -> Iterator[CsvRecord]:
    feed = _LineFeed(f)
    feed.line_no = 1  # the header
    reader = csv.reader(feed, delimiter=delimiter)
    while True:
        feed.taken = []
        first = feed.line_no + 1
        error = ""
        try:
            cells: list[str] | None = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            cells, error = None, str(e)
        lines = feed.taken
        if cells == [] or (cells is None and not "".join(lines).strip()):
            continue  # a blank line is not a data row
        if len(lines) > 1 and (cells is None or len(cells) != n_cols or not plausible(cells)):
            cut = _inner_row_start(lines, feed, n_cols, delimiter, plausible)
            if cut:
                feed.push_back(lines[cut:])
                head, _ = _parse_one(lines[:cut], delimiter)
                yield CsvRecord(first, first + cut - 1, head,
                                f"a quoted cell runs into the row starting at file line {first + cut}", resplit=True)
                continue
        yield CsvRecord(first, feed.line_no, cells, error)


def _inner_row_start(lines: list[str], feed: _LineFeed, n_cols: int, delimiter: str,
                     plausible: Callable[[list[str]], bool]) -> int:
    """Index of the first inner line of `lines` where a well-formed record starts, else 0."""
    ahead = None
    for j in range(1, len(lines)):
        if first_cell(lines[j], delimiter) is None:
            continue
        if ahead is None:
            ahead = feed.peek(_LOOKAHEAD_LINES)
        cells, _ = _parse_one(lines[j:] + ahead, delimiter)
        if cells is not None and len(cells) == n_cols and cells[0].strip() and "\n" not in cells[0] \
                and plausible(cells):
            return j
    return 0


# --- the independent id scan ------------------------------------------------------------

@dataclass
class IdScan:
    """Every row id a CSV holds, found without the reader's parse.

    `ids` in file order (one per row start, duplicates kept); `damaged_rows` are the
    1-based data rows whose quoting or shape is broken (their ids are in `ids` where the
    row start could be read). A checker compares a submission with `ids` and refuses to
    pass when `damaged_rows` is not empty."""
    ids: list[str] = field(default_factory=list)
    damaged_rows: list[int] = field(default_factory=list)


def scan_ids(path: str | Path, *, delimiter: str | None = None, id_column: str = "id") -> IdScan:
    """Quote-tolerant scan of the `id` column of a CSV, independent of `iter_csv_records`.

    Walks physical lines tracking quote parity (a `"` toggles quoting; `""` leaves it).
    A line that starts outside quotes starts a row. A line that starts inside quotes
    continues the row, unless on its own it is a complete row (even quotes, exactly the
    header's number of cells, an id): then the row before it lost a closing quote, is
    marked damaged, and this line starts the next row. Raises DataError when the file
    or its id column cannot be found."""
    p = Path(path)
    check_file(p)
    delimiter = delimiter or sniff_delimiter(p)
    with open_text(p) as f:
        header_line = f.readline()
        header = [h.strip() for h in next(csv.reader([header_line], delimiter=delimiter), [])]
        if id_column not in header:
            raise DataError(f"{p}: no '{id_column}' column (header has: {', '.join(header)[:200]})")
        col, n_cols = header.index(id_column), len(header)
        scan = IdScan()
        row: list[str] = []  # physical lines of the current row
        in_quote = False
        row_no = 0

        def close(damaged: bool) -> None:
            nonlocal row_no
            text = "".join(row)
            if not text.strip():
                return
            row_no += 1
            cells, _ = _parse_one([text.replace("\x00", "")], delimiter)
            if cells is None or len(cells) != n_cols:
                damaged = True
            rid = cells[col].strip() if cells is not None and len(cells) > col else None
            if rid is None or "\n" in rid:
                rid = first_cell(row[0], delimiter) if col == 0 else None
            if rid:
                scan.ids.append(rid)
            if damaged:
                scan.damaged_rows.append(row_no)

        for line in f:
            odd = line.count('"') % 2 == 1
            if in_quote and not odd and _complete_row(line, n_cols, col, delimiter):
                close(damaged=True)  # the row before lost its closing quote
                row, in_quote = [], False
            if not in_quote and row:
                close(damaged=False)
                row = []
            row.append(line)
            in_quote ^= odd
        if row:
            close(damaged=in_quote)
    return scan


def _complete_row(line: str, n_cols: int, col: int, delimiter: str) -> bool:
    cells, _ = _parse_one([line.replace("\x00", "")], delimiter)
    return cells is not None and len(cells) == n_cols and bool(cells[col].strip()) and "\n" not in cells[col]


def sniff_delimiter(path: Path) -> str:
    """',' unless the header line has tabs and no commas (a TSV named .csv)."""
    with open_text(path) as f:
        header = f.readline()
    if "\t" in header and "," not in header:
        return "\t"
    if path.suffix.lower() == ".tsv":
        return "\t"
    return ","
