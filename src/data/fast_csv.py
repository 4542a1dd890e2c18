"""The fast path for a clean CSV: pandas' C parser, checked against the file's raw bytes.

Why: on 108k real arena rows the careful reader (`rows.iter_csv_records`, the csv
module fed from Python) took about twice the time of `pandas.read_csv` plus
`json.loads`; pandas' C tokenizer alone is ~5x faster than csv.reader. This module
reads a file's columns through pandas and says when that parse can be trusted;
the caller (`arena.fast_arena_records`) checks the cells and otherwise hands the
whole file to the careful reader, which quarantines row by row.

When pandas gives the careful reader's cells. Both implement the same CSV grammar
(a quote opens a cell only at its start, `""` is a quote inside it, text after a
closing quote is appended, a quote inside an unquoted cell is kept, NUL is kept,
`\\r`, `\\n` and `\\r\\n` end a record outside quotes; tests/test_fast_csv.py holds
them equal case by case). They differ only where a file is damaged, and each
difference is refused here:

- bytes that are not UTF-8: pandas decodes strictly and raises;
- a record with more cells than the header: pandas raises (a later row) or drops
  the extra cells with a ParserWarning (the first row), made an error here;
- a record with fewer cells: pandas pads it with "", so a row whose LAST cell is ""
  is refused (the careful reader quarantines a short row; a real arena row ends in a
  label or a JSON list, never in an empty cell);
- blank and whitespace-only lines: kept as rows of "" (`skip_blank_lines=False`),
  so refused as short rows;
- a header that is not one plain line (it holds a quote): the careful reader reads
  the header as one physical line, pandas as one record.

The independent witness: every `\\n` byte of the file must be accounted for by the
parse (one per record terminator, the last record's terminator optional, plus
those inside cells), counted on the raw bytes, not through pandas. A line pandas
skipped, or a record end it saw where the bytes hold none (a lone `\\r`), breaks it.
"""
from __future__ import annotations

import gc
import json
import mmap
import warnings
from bisect import bisect_right
from contextlib import contextmanager
from itertools import accumulate, chain, repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from .rows import RowError

if TYPE_CHECKING:
    import pandas as pd

_CHUNK = 1 << 22  # bytes per newline-count step: a 4 MiB temporary, not one the size of the file
_SCAN = json.JSONDecoder().scan_once  # json's C scanner: one value from an index, as json.loads does


class Refused(Exception):
    """The fast path cannot vouch for this file; the message says why (one line)."""


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building ~1M small lists and records.

    Each collection walks every live container, and allocating that many triggers
    hundreds of them (the older generations again and again as the heap grows): on
    108k rows ~30% of the JSON parsing time. Nothing built here forms a cycle. The
    collector still walks the new objects once when it next runs (~0.1 s there)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def newline_bytes(path: Path) -> tuple[int, bool]:
    """(number of `\\n` bytes, whether the last byte is one), counted on the raw file."""
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            return 0, False
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            raw = np.frombuffer(m, dtype=np.uint8)
            count = 0
            for start in range(0, len(raw), _CHUNK):
                count += int(np.count_nonzero(raw[start:start + _CHUNK] == 10))
            ends_with_newline = bool(raw[-1] == 10)
            del raw  # the mmap cannot close while numpy still views it
    return count, ends_with_newline


def read_string_columns(path: Path, header: Sequence[str], delimiter: str, header_line: str,
                        text_columns: Sequence[str] = (), max_chars: int = 2**62) -> dict[str, list[str]]:
    """Every column of the CSV at `path` as a list of the exact cell strings, through
    pandas' C parser; raises Refused when the careful reader could read the file differently,
    or when a cell has more than `max_chars` characters.

    `header` is the header as the caller parsed it (its names are used as given) and
    `header_line` its physical line. `text_columns` (the long ones) are left to pandas'
    type inference: it builds long strings straight into Arrow ~5x faster than an
    explicit dtype=str, and a column that does not come out as strings is refused."""
    try:  # here, not at the top: importing the readers stays light (~0.2 s less)
        import pandas as pd
    except ImportError as e:  # an exported predictor runs without pandas: the careful reader needs none
        raise Refused("pandas is not installed") from e
    if '"' in header_line:
        raise Refused("the header line holds a quote")
    dtype = {c: str for c in header if c not in text_columns}
    try:
        with warnings.catch_warnings():
            # the first row longer than the header: pandas drops its extra cells and only warns
            warnings.simplefilter("error", pd.errors.ParserWarning)
            warnings.simplefilter("error", pd.errors.DtypeWarning)
            df = pd.read_csv(path, sep=delimiter, engine="c", names=list(header), header=0, index_col=False,
                             dtype=dtype, keep_default_na=False, na_filter=False, skip_blank_lines=False,
                             encoding="utf-8", encoding_errors="strict", memory_map=True)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.ParserWarning,
            pd.errors.DtypeWarning) as e:
        raise Refused(f"pandas: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}") from None
    for c in header:  # a text column of numbers is inferred as numbers: no exact text to give back
        if not pd.api.types.is_string_dtype(df[c]):
            raise Refused(f"column '{c}' did not parse as text ({df[c].dtype})")
    if len(df) and header and (df[header[-1]] == "").any():
        row = int(np.flatnonzero((df[header[-1]] == "").to_numpy())[0]) + 1
        raise Refused(f"row {row}: the last cell is empty (a short or blank row pandas padded)")
    in_cells = sum(int(df[c].str.count("\n").sum()) for c in header)
    newlines, ends_with_newline = newline_bytes(path)
    expected = 1 + len(df) - (0 if ends_with_newline else 1) + in_cells  # header + rows: one terminator each
    if newlines != expected:
        raise Refused(f"the file has {newlines:,} line breaks, the parse accounts for {expected:,}")
    columns = {}
    for c in header:
        longest = _longest_utf8(df[c])
        cells = df[c].tolist()
        if set(map(type, cells)) - {str}:
            raise Refused(f"column '{c}' did not parse as text")
        if (longest is None or longest > max_chars) and max(map(len, cells), default=0) > max_chars:
            raise Refused(f"cell_too_large: a cell of column '{c}' has more than {max_chars:,} characters")
        columns[c] = cells
        del df[c]  # its Arrow copy is no longer needed: keeps the peak near one copy of the text
    return columns


def _longest_utf8(series: pd.Series) -> int | None:
    """Bytes of the longest cell when Arrow holds the column (read from its offsets, not its
    text; never fewer than the cell's characters), else None."""
    if getattr(series.dtype, "storage", None) != "pyarrow":
        return None
    import pyarrow.compute as pc  # present whenever pandas stores strings in Arrow
    return pc.max(pc.binary_length(series.array.__arrow_array__())).as_py() or 0


def json_values(cells: Sequence[str]) -> tuple[list[Any], list[int]]:
    """(json.loads of each cell, indices of the cells that are not one JSON value alone).

    A value at such an index is None; the caller re-reads those cells with json.loads
    (it allows surrounding whitespace, and raises the error to report). Where every
    cell is one complete value the result is exactly json.loads'. Call under gc_paused."""
    try:
        pairs = list(map(_SCAN, cells, repeat(0)))
    except ValueError:  # a JSON syntax error inside some cell
        pairs = []
    if len(pairs) != len(cells):  # or no JSON at a cell's start: the scanner's StopIteration ends map() early
        pairs = [_scan_alone(cell) for cell in cells]
    values = [v for v, _ in pairs]
    ends = [end for _, end in pairs]
    if ends == list(map(len, cells)):
        return values, []
    odd = [i for i, (end, cell) in enumerate(zip(ends, cells)) if end != len(cell)]
    for i in odd:
        values[i] = None
    return values, odd


def string_lists(cells: Sequence[str], reparse: Callable[[str], list[str]]) -> list[list[str]]:
    """Each cell as a JSON list of strings, by json's C scanner; a cell that is anything
    else (`[null]`, a bare string, an error) goes to `reparse`, and its RowError becomes a
    Refused naming the row. Those rows are found without a Python-level test of every row
    (a real column has a few). Call under gc_paused."""
    values, odd = json_values(cells)
    redo = set(odd)
    if set(map(type, values)) - {list}:
        redo.update(i for i, v in enumerate(values) if type(v) is not list)
    lists = [() if i in redo else v for i, v in enumerate(values)] if redo else values
    if set(map(type, chain.from_iterable(lists))) - {str}:  # some turn is not a string: in which rows?
        ends = list(accumulate(map(len, lists)))
        redo.update(bisect_right(ends, j) for j, t in enumerate(map(type, chain.from_iterable(lists))) if t is not str)
    for i in sorted(redo):
        try:
            values[i] = reparse(cells[i])
        except RowError as e:
            raise Refused(f"row {i + 1}: {e.reason}: {e.detail}") from None
    return values


def each_row(parse: Callable, *columns: Sequence[str]) -> list:
    """`parse` over the rows' cells; its first RowError becomes a Refused naming the row."""
    try:
        return list(map(parse, *columns))
    except RowError:
        for i, cells in enumerate(zip(*columns)):
            try:
                parse(*cells)
            except RowError as e:
                raise Refused(f"row {i + 1}: {e.reason}: {e.detail}") from None
        raise


def _scan_alone(cell: str) -> tuple[Any, int]:
    try:
        return _SCAN(cell, 0)
    except (StopIteration, ValueError):
        return None, -1
