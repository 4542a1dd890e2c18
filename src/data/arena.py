"""Read Kaggle LMSYS-arena CSVs and common pairwise JSONL files into PairRecords.

Contract: every data row read ends up either in `records` or in `quarantine`
(with its row number, id and a reason code), so `rows == ok + quarantined`
always holds and nothing is silently dropped. Problems that make the whole file
unreadable (missing file, empty file, missing column) raise `DataError` with a
one-line message naming the file.

Why the csv module and not pandas: cells can be non-UTF-8 or enormous, and we
want to quarantine exactly those rows instead of failing the whole file;
decoding with `surrogateescape` keeps the bad bytes visible per row.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .records import LABEL_NAMES, PairRecord

TEXT_COLUMNS = ("prompt", "response_a", "response_b")
REQUIRED_COLUMNS = ("id",) + TEXT_COLUMNS
DEFAULT_MAX_CELL_CHARS = 2_000_000  # ~0.5M tokens: far beyond any real turn, catches corrupt joins

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # the default 128 KiB limit rejects real arena rows


class DataError(ValueError):
    """The file cannot be read at all. The message is one line naming the file."""


@dataclass
class Quarantined:
    row: int  # 1-based data row (the header is row 0)
    id: str | None
    reason: str  # a short code, counted in the report
    detail: str = ""


@dataclass
class ReadResult:
    path: str
    records: list[PairRecord] = field(default_factory=list)
    quarantine: list[Quarantined] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.records) + len(self.quarantine)

    @property
    def has_labels(self) -> bool:
        return bool(self.records) and all(r.label is not None for r in self.records)

    def report(self, max_listed: int = 1000) -> dict[str, Any]:
        reasons = Counter(q.reason for q in self.quarantine)
        return {
            "file": self.path,
            "rows": self.rows,
            "ok": len(self.records),
            "quarantined": len(self.quarantine),
            "reasons": dict(reasons.most_common()),
            "labels": dict(sorted(Counter(r.label for r in self.records if r.label is not None).items())),
            "quarantined_rows": [q.__dict__ for q in self.quarantine[:max_listed]],
        }


def _has_surrogates(s: str) -> bool:
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


class _RowError(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def parse_turns(cell: str, column: str) -> list[str]:
    """A JSON list of turn strings. `null` turns become "" (Kaggle has `[null]`)."""
    try:
        value = json.loads(cell)
    except (json.JSONDecodeError, TypeError) as e:
        raise _RowError("invalid_json", f"column '{column}' is not valid JSON ({e.msg} at char {e.pos})") from None
    if isinstance(value, str):  # some exports store a bare string for single-turn chats
        return [value]
    if not isinstance(value, list):
        raise _RowError("not_a_list", f"column '{column}' is JSON {type(value).__name__}, expected a list of turns")
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
            raise _RowError("not_a_list", f"column '{column}' has a {type(t).__name__} turn, expected strings")
    return turns


def parse_label(row: dict[str, str]) -> int:
    values = []
    for name in LABEL_NAMES:
        raw = (row.get(name) or "").strip()
        try:
            v = float(raw)
        except ValueError:
            raise _RowError("label_not_one_hot", f"{name}={raw!r} is not a number") from None
        values.append(v)
    if sorted(values) != [0.0, 0.0, 1.0]:
        raise _RowError("label_not_one_hot", f"winner columns are {values}, expected exactly one 1")
    return values.index(1.0)


def _open_text(path: Path) -> io.TextIOWrapper:
    # newline="" is what the csv module wants; surrogateescape keeps bad bytes per row.
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a CSV/JSONL file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")


def iter_arena_csv(path: Path, max_cell_chars: int) -> Iterator[PairRecord | Quarantined]:
    with _open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: file is empty") from None
        except csv.Error as e:
            raise DataError(f"{path}: header is not valid CSV ({e})") from None
        header = [h.strip() for h in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (header has: {', '.join(header)[:200]})")
        has_labels = any(n in header for n in LABEL_NAMES)
        if has_labels and not all(n in header for n in LABEL_NAMES):
            absent = [n for n in LABEL_NAMES if n not in header]
            raise DataError(f"{path}: has some winner columns but not {', '.join(absent)}")
        seen: set[str] = set()
        row_no = 0
        while True:
            first_line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                row_no += 1
                yield Quarantined(row_no, None, "bad_csv", str(e))
                continue
            row_no += 1
            if not cells:
                row_no -= 1  # a blank line is not a data row
                continue
            if len(cells) != len(header):
                # name the physical lines: an unclosed quote swallows the rows after it into this one
                yield Quarantined(row_no, cells[0] if cells else None, "bad_row_shape",
                                  f"{len(cells)} cells, header has {len(header)} (file lines {first_line}-{reader.line_num})")
                continue
            row = dict(zip(header, cells))
            rid = row["id"].strip()
            try:
                if not rid:
                    raise _RowError("missing_id", "id is empty")
                big = [c for c in header if len(row[c]) > max_cell_chars]
                if big:
                    raise _RowError("cell_too_large", f"column '{big[0]}' has {len(row[big[0]]):,} chars > {max_cell_chars:,}")
                bad = [c for c in header if _has_surrogates(row[c])] if _has_surrogates("".join(cells)) else []
                if bad:
                    raise _RowError("non_utf8", f"column '{bad[0]}' has bytes that are not UTF-8")
                if rid in seen:
                    raise _RowError("duplicate_id", f"id {rid} already seen earlier in the file")
                turns = {c: parse_turns(row[c], c) for c in TEXT_COLUMNS}
                label = parse_label(row) if has_labels else None
            except _RowError as e:
                yield Quarantined(row_no, rid or None, e.reason, e.detail)
                continue
            seen.add(rid)
            extra = {k: row[k] for k in header if k not in REQUIRED_COLUMNS + LABEL_NAMES + ("model_a", "model_b", "source")}
            yield PairRecord(
                id=rid,
                prompt=turns["prompt"],
                response_a=turns["response_a"],
                response_b=turns["response_b"],
                label=label,
                model_a=row.get("model_a") or None,
                model_b=row.get("model_b") or None,
                source=row.get("source") or None,
                extra=extra,
            )


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
    raise _RowError("bad_field", f"cannot read a response from JSON {type(value).__name__}")


def _side_is_a(rid: str, seed: int = 0) -> bool:
    """Deterministic coin: put the chosen response on side A for about half the rows,
    so a chosen/rejected file does not become an all-'A wins' training set."""
    return hashlib.blake2b(f"{seed}:{rid}".encode(), digest_size=2).digest()[0] % 2 == 0


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
                raise _RowError("bad_field", f"field '{k}' must be a string or a list of strings")
            turns[k] = [t or "" for t in v]
        label = None
        if "label" in obj or "winner" in obj:
            raw = str(obj.get("label", obj.get("winner"))).strip().lower()
            raw = raw[:-2] if raw.endswith(".0") else raw  # 1.0 from a float column means 1
            if raw not in _LABEL_WORDS:
                raise _RowError("bad_label", f"label {raw!r} is not one of a/b/tie/0/1/2")
            label = _LABEL_WORDS[raw]
        elif all(n in obj for n in LABEL_NAMES):
            label = parse_label({n: str(obj[n]) for n in LABEL_NAMES})
        return PairRecord(id=rid, prompt=turns["prompt"], response_a=turns["response_a"],
                          response_b=turns["response_b"], label=label,
                          model_a=obj.get("model_a"), model_b=obj.get("model_b"), source=obj.get("source"))
    raise _RowError("unknown_shape", "expected chosen/rejected or prompt/response_a/response_b fields")


def iter_jsonl_objects(path: Path, max_cell_chars: int) -> Iterator[tuple[int, str | None, dict | _RowError]]:
    """(row number, id, object or the reason the line is unusable) per non-blank line.
    Shared by the pairwise and the chat JSONL readers. A missing or null id is the row number."""
    with _open_text(path) as f:
        row_no = 0
        for line in f:
            if not line.strip():
                continue
            row_no += 1
            if _has_surrogates(line):
                yield row_no, None, _RowError("non_utf8", "line has bytes that are not UTF-8")
            elif len(line) > max_cell_chars:
                yield row_no, None, _RowError("cell_too_large", f"line has {len(line):,} chars > {max_cell_chars:,}")
            else:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    yield row_no, None, _RowError("invalid_json", f"{e.msg} at char {e.pos}")
                    continue
                if not isinstance(obj, dict):
                    yield row_no, None, _RowError("unknown_shape", f"line is JSON {type(obj).__name__}, expected an object")
                    continue
                yield row_no, str(obj["id"]) if obj.get("id") is not None else str(row_no), obj
        if row_no == 0:
            raise DataError(f"{path}: file has no JSON lines")


def iter_pairs_jsonl(path: Path, max_cell_chars: int) -> Iterator[PairRecord | Quarantined]:
    seen: set[str] = set()
    for row_no, rid, obj in iter_jsonl_objects(path, max_cell_chars):
        try:
            if isinstance(obj, _RowError):
                raise obj
            if rid in seen:
                raise _RowError("duplicate_id", f"id {rid} already seen earlier in the file")
            rec = jsonl_object_to_record(obj, rid)
        except _RowError as e:
            yield Quarantined(row_no, rid, e.reason, e.detail)
            continue
        seen.add(rid)
        yield rec


def read_pairs(path: str | os.PathLike, *, max_cell_chars: int = DEFAULT_MAX_CELL_CHARS,
               progress: bool = False) -> ReadResult:
    """Read an arena CSV or a pairwise JSONL file. Raises DataError when unreadable."""
    p = Path(path)
    _check_file(p)
    it: Iterable = iter_pairs_jsonl(p, max_cell_chars) if p.suffix in (".jsonl", ".json") else iter_arena_csv(p, max_cell_chars)
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(it, desc=f"read {p.name}", unit="row", mininterval=1.0)
    result = ReadResult(path=str(p))
    for item in it:
        (result.quarantine if isinstance(item, Quarantined) else result.records).append(item)
    return result


def write_report(result: ReadResult, path: str | os.PathLike) -> dict:
    from ..config import atomic_write_text
    report = result.report()
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    return report


def turns_to_json(turns: list[str]) -> str:
    return json.dumps(turns, ensure_ascii=False)
