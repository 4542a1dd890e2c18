"""Read Kaggle LMSYS-arena CSVs and common pairwise JSONL files into PairRecords.

Contract: every data row read ends up either in `records` or in `quarantine`
(with its row number, id and a reason code), so `rows == ok + quarantined`
always holds and nothing is silently dropped. Problems that make the whole file
unreadable (missing file, empty file, missing column) raise `DataError` with a
one-line message naming the file.

Two CSV readers, one result. pandas' C parser reads a clean file
(`fast_arena_records`, `fast_csv.py`: about the time of pandas.read_csv plus
json.loads). Any row it cannot vouch for sends the whole file to the careful
reader (`iter_arena_csv`, the csv module): cells can be non-UTF-8 or enormous and
it quarantines exactly those rows (`surrogateescape` keeps bad bytes visible per
row), and it recovers from an unclosed quote at the next row start (`rows.py`).
Both give the same records (tests/test_fast_csv.py).

Quiet edges, and their treatment (counted under `responses` in the report):
- an empty response (`[null]`, `[]`, `[""]`, or only blank turns) is kept as
  read (`[null]` and `[""]` as one "" turn, `[]` as no turn), never dropped, and
  counted as `empty_a` / `empty_b`; the encoders render it as an empty answer;
- identical responses on both sides are kept with their human label and counted
  as `identical`; a predictor may lean such rows to a tie (`records.same_responses`).
- A TSV named `.csv` is read with tabs (`rows.sniff_delimiter`); a `.json` file
  holding an array of objects is read as JSON records; `.jsonl` in any case is JSONL.
"""
from __future__ import annotations

import csv
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .fast_csv import Refused, each_row, gc_paused, read_string_columns, string_lists
from .records import LABEL_NAMES, PairRecord, response_counts
from .targets import TEACHER_NAMES, label_kinds, parse_teacher, parse_winner
from .tasks import BINARY_HEADER
from .rows import (DEFAULT_MAX_CELL_CHARS, DataError, Quarantined, RowError, check_cells, check_file,
                   is_jsonl_path, iter_csv_records, iter_jsonl_objects, open_text, sniff_delimiter, stable_hash)

TEXT_COLUMNS = ("prompt", "response_a", "response_b")
REQUIRED_COLUMNS = ("id",) + TEXT_COLUMNS


@dataclass
class ReadResult:
    path: str
    records: list[PairRecord] = field(default_factory=list)
    quarantine: list[Quarantined] = field(default_factory=list)
    reader: str = "careful"  # "fast": a clean CSV read through pandas (fast_csv); not in the report
    fast_refused: str = ""  # why a CSV was not read by the fast path

    @property
    def rows(self) -> int:
        return len(self.records) + len(self.quarantine)

    @property
    def has_labels(self) -> bool:
        return bool(self.records) and all(r.label is not None or r.target is not None for r in self.records)

    def report(self, max_listed: int = 1000) -> dict[str, Any]:
        reasons = Counter(q.reason for q in self.quarantine)
        return {
            "file": self.path,
            "rows": self.rows,
            "ok": len(self.records),
            "quarantined": len(self.quarantine),
            "reasons": dict(reasons.most_common()),
            "labels": dict(sorted(Counter(r.label for r in self.records if r.label is not None).items())),
            "label_kinds": label_kinds(self.records),
            "responses": response_counts(self.records),
            "languages": dict(Counter(r.language for r in self.records if r.language).most_common()),
            "quarantined_rows": [q.__dict__ for q in self.quarantine[:max_listed]],
        }


def parse_turns(cell: str, column: str) -> list[str]:
    """A JSON list of turn strings. `null` turns become "" (Kaggle has `[null]`)."""
    try:
        value = json.loads(cell)
    except (json.JSONDecodeError, TypeError) as e:
        raise RowError("invalid_json", f"column '{column}' is not valid JSON ({e.msg} at char {e.pos})") from None
    if isinstance(value, str):  # some exports store a bare string for single-turn chats
        return [value]
    if type(value) is list and all(type(t) is str for t in value):  # the common case, without the loop below
        return value
    if not isinstance(value, list):
        raise RowError("not_a_list", f"column '{column}' is JSON {type(value).__name__}, expected a list of turns")
    turns = []
    for t in value:
        if t is None:
            turns.append("")
        elif isinstance(t, str):
            turns.append(t)
        elif isinstance(t, (bool, int, float)):
            # Real exports hold bare JSON scalars as answers (`[true]` in LLMBar): keep their text.
            turns.append(json.dumps(t))
        else:
            raise RowError("not_a_list", f"column '{column}' has a {type(t).__name__} turn, expected strings")
    return turns


def parse_label(row: dict[str, str]) -> tuple[int | None, tuple[float, float, float] | None]:
    """(hard label, None) for one-hot winner columns, (None, soft target) for probabilities."""
    return parse_winner(LABEL_NAMES, [row.get(n) or "" for n in LABEL_NAMES])


# WSDM Cup 2025 (and the raw LMSYS arena dump) label a row with one `winner` cell.
WINNER_COLUMN = BINARY_HEADER[1]
WINNER_WORDS = {"model_a": 0, "model_b": 1, "tie": 2, "tie (bothbad)": 2}


def parse_winner_word(cell: str) -> int:
    """The class of a `winner` cell (model_a / model_b / tie / tie (bothbad)); RowError otherwise."""
    word = (cell or "").strip().lower()
    if word not in WINNER_WORDS:
        raise RowError("bad_winner", f"winner={cell.strip()[:40]!r} is not one of {', '.join(WINNER_WORDS)}")
    return WINNER_WORDS[word]


def parse_language(cell: str | None) -> str | None:
    """A non-empty language name; RowError when the file has the column but this row's cell is empty
    (an unknown language would silently join no per-language figure)."""
    lang = (cell or "").strip()
    if not lang:
        raise RowError("missing_language", "the language column is empty for this row")
    return lang


def _plausible_row(header: list[str]) -> "Callable[[list[str]], bool]":
    """A record is a real row (not two rows glued by an unclosed quote) when its text
    cells parse as JSON; consulted only for records spanning several physical lines."""
    text_idx = [header.index(c) for c in TEXT_COLUMNS]

    def plausible(cells: list[str]) -> bool:
        for i in text_idx:
            try:
                json.loads(cells[i])
            except (json.JSONDecodeError, TypeError, IndexError):
                return False
        return True
    return plausible


def read_csv_header(path: Path, f) -> tuple[list[str], str]:
    """(header cells, delimiter) of an arena CSV; a TSV named .csv is read with tabs."""
    delimiter = sniff_delimiter(path)
    line = f.readline()
    try:
        header = next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error as e:
        raise DataError(f"{path}: header is not valid CSV ({e})") from None
    header = [h.strip() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        hint = ""
        if delimiter == "," and ";" in line:
            hint = " (the header has ';': is the delimiter ';'? save it as comma-separated)"
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (header has: {', '.join(header)[:200]}){hint}")
    return header, delimiter


@dataclass
class ArenaColumns:
    """What an arena CSV's header says, checked once per file; both readers use it."""
    header: list[str]
    delimiter: str
    has_labels: bool
    has_winner: bool
    has_language: bool
    has_teacher: bool
    extra_columns: list[str]  # columns kept as they are in `PairRecord.extra`


def arena_columns(path: Path, f) -> ArenaColumns:
    """Read and check the header of an arena CSV open at its start; DataError names the file."""
    header, delimiter = read_csv_header(path, f)
    has_labels = any(n in header for n in LABEL_NAMES)
    has_winner = WINNER_COLUMN in header
    if has_labels and has_winner:
        raise DataError(f"{path}: has both a '{WINNER_COLUMN}' column and {', '.join(LABEL_NAMES)}: "
                        "one label format per file (WSDM winner=model_a/model_b, or Kaggle's one-hot columns)")
    if has_labels and not all(n in header for n in LABEL_NAMES):
        absent = [n for n in LABEL_NAMES if n not in header]
        raise DataError(f"{path}: has some winner columns but not {', '.join(absent)}")
    has_teacher = any(n in header for n in TEACHER_NAMES)
    if has_teacher and not all(n in header for n in TEACHER_NAMES):
        absent = [n for n in TEACHER_NAMES if n not in header]
        raise DataError(f"{path}: has some teacher columns but not {', '.join(absent)}")
    known = REQUIRED_COLUMNS + LABEL_NAMES + TEACHER_NAMES + ("model_a", "model_b", "source", WINNER_COLUMN,
                                                              "language")
    return ArenaColumns(header, delimiter, has_labels, has_winner, "language" in header, has_teacher,
                        [k for k in header if k not in known])


def to_record(rid: str, turns: Sequence[list[str]], label: int | None, target, teacher, language: str | None,
              cell: Callable[[str], str | None], extra_columns: Sequence[str]) -> PairRecord:
    """The one mapping from a checked row to its record; `cell(name)` is a cell, None when absent."""
    return PairRecord(id=rid, prompt=turns[0], response_a=turns[1], response_b=turns[2], label=label,
                      target=target, teacher=teacher, model_a=cell("model_a") or None,
                      model_b=cell("model_b") or None, source=cell("source") or None,
                      extra={k: cell(k) for k in extra_columns}, language=language)


def iter_arena_csv(path: Path, max_cell_chars: int) -> Iterator[PairRecord | Quarantined]:
    """The careful reader: row by row, every damaged row quarantined alone (rows.py)."""
    with open_text(path) as f:
        cols = arena_columns(path, f)
        header, delimiter = cols.header, cols.delimiter
        seen: set[str] = set()
        id_col = header.index("id")
        row_no = 0
        for rec in iter_csv_records(f, n_cols=len(header), delimiter=delimiter, plausible=_plausible_row(header)):
            row_no += 1
            cells = rec.cells
            lines = f"file lines {rec.first_line}-{rec.last_line}"
            if cells is None:
                yield Quarantined(row_no, None, "bad_csv", f"{rec.error} ({lines})")
                continue
            rid_cell = cells[id_col].strip() if len(cells) > id_col and "\n" not in cells[id_col] else ""
            if rec.resplit:
                yield Quarantined(row_no, rid_cell or None, "unclosed_quote", f"{rec.error} ({lines})")
                continue
            if len(cells) != len(header):
                # name the physical lines: an unclosed quote swallows the rows after it into this one
                yield Quarantined(row_no, rid_cell or None, "bad_row_shape",
                                  f"{len(cells)} cells, header has {len(header)} ({lines})")
                continue
            row = dict(zip(header, cells))
            rid = rid_cell
            try:
                if not rid:
                    raise RowError("missing_id", "id is empty")
                check_cells(row, max_cell_chars)
                if rid in seen:
                    raise RowError("duplicate_id", f"id {rid} already seen earlier in the file")
                turns = [parse_turns(row[c], c) for c in TEXT_COLUMNS]
                label, target = parse_label(row) if cols.has_labels else (None, None)
                if cols.has_winner:
                    label = parse_winner_word(row[WINNER_COLUMN])
                language = parse_language(row["language"]) if cols.has_language else None
                teacher = parse_teacher([row[n] for n in TEACHER_NAMES]) if cols.has_teacher else None
            except RowError as e:
                yield Quarantined(row_no, rid or None, e.reason, e.detail)
                continue
            seen.add(rid)
            yield to_record(rid, turns, label, target, teacher, language, row.get, cols.extra_columns)


def fast_arena_records(path: Path, max_cell_chars: int) -> list[PairRecord]:
    """Every row of a clean arena CSV as records, read by pandas (`fast_csv`), column by column.

    Raises `Refused` (why, one line) when any row would not become a record: a row the
    careful reader would quarantine, or any doubt that pandas saw the rows it sees; the
    caller then reads the whole file with the careful reader. The records are the careful
    reader's, field for field (tests/test_fast_csv.py). DataError as the careful reader."""
    with open_text(path) as f:
        cols = arena_columns(path, f)
    with open_text(path) as f:
        header_line = f.readline()
    # check_cells' checks: a non-UTF-8 byte stops pandas (strict decoding), a long cell stops this
    columns = read_string_columns(path, cols.header, cols.delimiter, header_line, TEXT_COLUMNS, max_cell_chars)
    with gc_paused():
        raw_ids = columns.pop("id")
        ids = [c.strip() for c in raw_ids]
        if not all(ids) or "\n" in "".join(raw_ids):
            row = next(i for i, (rid, raw) in enumerate(zip(ids, raw_ids)) if not rid or "\n" in raw) + 1
            raise Refused(f"row {row}: missing_id")
        if len(set(ids)) != len(ids):
            raise Refused("duplicate_id")
        turns = [string_lists(columns.pop(c), partial(parse_turns, column=c)) for c in TEXT_COLUMNS]
        n = len(ids)
        labels: list = [(None, None)] * n
        if cols.has_labels:
            labels = each_row(lambda *raw: parse_winner(LABEL_NAMES, raw), *(columns[c] for c in LABEL_NAMES))
        if cols.has_winner:
            labels = [(label, None) for label in each_row(parse_winner_word, columns[WINNER_COLUMN])]
        languages = each_row(parse_language, columns["language"]) if cols.has_language else [None] * n
        teachers = (each_row(lambda *raw: parse_teacher(raw), *(columns[c] for c in TEACHER_NAMES))
                    if cols.has_teacher else [None] * n)
        optional = [c for c in ("model_a", "model_b", "source", *cols.extra_columns) if c in columns]
        optional_cells = zip(*(columns[c] for c in optional)) if optional else repeat(())
        return [to_record(rid, turn, label, target, teacher, language, dict(zip(optional, opt)).get,
                          cols.extra_columns)
                for rid, turn, (label, target), teacher, language, opt
                in zip(ids, zip(*turns), labels, teachers, languages, optional_cells)]


# --- JSONL pairwise shapes -------------------------------------------------------

_LABEL_WORDS = {"a": 0, "model_a": 0, "0": 0, "b": 1, "model_b": 1, "1": 1, "tie": 2, "2": 2, "draw": 2}


def split_hh_dialogue(text: str) -> tuple[list[str], list[str]]:
    """hh-rlhf style "\\n\\nHuman: ...\\n\\nAssistant: ..." -> (user turns, assistant turns)."""
    users, bots = [], []
    for chunk in text.split("\n\nHuman:")[1:] if "\n\nHuman:" in text else [text]:
        human, _, rest = chunk.partition("\n\nAssistant:")
        users.append(human.strip())
        bots.append(rest.strip())
    return users, bots


def _messages_to_turns(messages: list[dict]) -> tuple[list[str], list[str]]:
    users, bots = [], []
    for m in messages:
        role = m.get("role") or m.get("from")
        text = m.get("content") if "content" in m else m.get("value", "")
        if role in ("user", "human", "prompter"):
            users.append(text or "")
        elif role in ("assistant", "gpt", "bot", "model"):
            bots.append(text or "")
    return users, bots


def _side_turns(value: Any) -> tuple[list[str], list[str]]:
    if isinstance(value, str):
        return split_hh_dialogue(value) if "\n\nHuman:" in value else ([], [value])
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return _messages_to_turns(value)
    if isinstance(value, list) and all(isinstance(m, (str, type(None))) for m in value):
        return [], [m or "" for m in value]
    raise RowError("bad_field", f"cannot read a response from JSON {type(value).__name__}")


def _side_is_a(rid: str, seed: int = 0) -> bool:
    """Deterministic coin: put the chosen response on side A for about half the rows,
    so a chosen/rejected file does not become an all-'A wins' training set.
    (This exact hash keeps the sides of files converted before the shared coin.)"""
    return stable_hash(f"{seed}:{rid}", size=2)[0] % 2 == 0


def jsonl_object_to_record(obj: dict, rid: str) -> PairRecord:
    if "chosen" in obj and "rejected" in obj:
        users_c, chosen = _side_turns(obj["chosen"])
        users_r, rejected = _side_turns(obj["rejected"])
        prompt = obj.get("prompt")
        if isinstance(prompt, str):
            users = [prompt]
        elif isinstance(prompt, list):
            users = _side_turns(prompt)[0] or [p for p in prompt if isinstance(p, str)]
        else:
            users = users_c if len(users_c) >= len(users_r) else users_r
        a_first = _side_is_a(rid)
        return PairRecord(
            id=rid, prompt=users,
            response_a=chosen if a_first else rejected,
            response_b=rejected if a_first else chosen,
            label=0 if a_first else 1, source=obj.get("source"),
        )
    if all(k in obj for k in TEXT_COLUMNS):
        turns = {k: obj[k] if isinstance(obj[k], list) else [obj[k]] for k in TEXT_COLUMNS}
        for k, v in turns.items():
            if not all(isinstance(t, (str, type(None))) for t in v):
                raise RowError("bad_field", f"field '{k}' must be a string or a list of strings")
            turns[k] = [t or "" for t in v]
        label, target = None, None
        if ("label" in obj or "winner" in obj) and any(n in obj for n in LABEL_NAMES):
            raise RowError("mixed_label_formats", f"has both a label/winner field and {', '.join(LABEL_NAMES)}")
        if "label" in obj or "winner" in obj:
            raw = str(obj.get("label", obj.get("winner"))).strip().lower()
            raw = raw[:-2] if raw.endswith(".0") else raw  # 1.0 from a float column means 1
            if raw not in _LABEL_WORDS:
                raise RowError("bad_label", f"label {raw!r} is not one of a/b/tie/0/1/2")
            label = _LABEL_WORDS[raw]
        elif all(n in obj for n in LABEL_NAMES):
            label, target = parse_label({n: str(obj[n]) for n in LABEL_NAMES})
        teacher = parse_teacher([str(obj.get(n) if obj.get(n) is not None else "") for n in TEACHER_NAMES])
        return PairRecord(id=rid, prompt=turns["prompt"], response_a=turns["response_a"],
                          response_b=turns["response_b"], label=label, target=target, teacher=teacher,
                          model_a=obj.get("model_a"), model_b=obj.get("model_b"), source=obj.get("source"),
                          language=parse_language(str(obj["language"] or "")) if "language" in obj else None)
    raise RowError("unknown_shape", "expected chosen/rejected or prompt/response_a/response_b fields")


def iter_pairs_jsonl(path: Path, max_cell_chars: int) -> Iterator[PairRecord | Quarantined]:
    seen: set[str] = set()
    for row_no, rid, obj in iter_jsonl_objects(path, max_cell_chars):
        try:
            if isinstance(obj, RowError):
                raise obj
            if rid in seen:
                raise RowError("duplicate_id", f"id {rid} already seen earlier in the file")
            rec = jsonl_object_to_record(obj, rid)
        except RowError as e:
            yield Quarantined(row_no, rid, e.reason, e.detail)
            continue
        seen.add(rid)
        yield rec


def read_pairs(path: str | os.PathLike, *, max_cell_chars: int = DEFAULT_MAX_CELL_CHARS,
               progress: bool = False) -> ReadResult:
    """Read an arena CSV or a pairwise JSONL file. Raises DataError when unreadable."""
    p = Path(path)
    check_file(p)
    as_json = is_jsonl_path(p) or p.suffix.lower() == ".json"
    result = ReadResult(path=str(p))
    if not as_json:
        try:  # a clean file reads at pandas' speed; any doubt, and the careful reader reads all of it
            result.records, result.reader = fast_arena_records(p, max_cell_chars), "fast"
            return result
        except Refused as e:
            result.fast_refused = str(e)
    it: Iterable = iter_pairs_jsonl(p, max_cell_chars) if as_json else iter_arena_csv(p, max_cell_chars)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=f"read {p.name}", unit="row", mininterval=1.0)
    for item in it:
        (result.quarantine if isinstance(item, Quarantined) else result.records).append(item)
    return result


def write_report(result: ReadResult, path: str | os.PathLike) -> dict:
    from ..files import atomic_write_text
    report = result.report()
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    return report
