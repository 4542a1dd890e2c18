"""Training on several sources: `--data` plus `--extra-data PATH[:weight[:max_rows]]`.

Validation folds come from `--data` alone. Extra rows only ever train, and:

* an extra row whose prompt group (`split.prompt_group`, the same key the
  folds are grouped by) belongs to a validation row is dropped and counted: a
  pseudo-labelled copy of a validation prompt would leak it into training;
* an exact duplicate pair (same prompt turns and the same two responses, in
  either order: a swap is the same comparison) of a row already taken, from
  `--data` or an earlier extra source, is dropped once and counted;
* `max_rows` keeps N rows of the source as read (before the two filters
  above, like `--max-rows` for `--data`, and picked the same way: the first N,
  or with `--max-rows-pick sample` whole prompt groups drawn from the seed,
  `limit_rows`), so the count is a property of the file and not of the fold.

Each source has a sampling weight: per epoch a source of n rows and weight w
contributes floor(w) full passes plus round(frac(w) * n) rows drawn without
replacement, seeded by (seed, epoch, source) alone, so a resumed run and every
DDP rank see the same rows and each epoch draws another fraction (`epoch_rows`,
which the engine's batch plan calls through the Task's `epoch_rows` hook).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UsageError
from .records import PairRecord
from .split import prompt_group, sample_by_group

MAX_ROWS_PICKS = ("first", "sample")


@dataclass(frozen=True)
class SourceSpec:
    path: str
    weight: float = 1.0
    max_rows: int = 0  # 0 = all

    @property
    def name(self) -> str:
        return Path(self.path).name


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_source_spec(text: str, flag: str = "--extra-data") -> SourceSpec:
    """`PATH`, `PATH:weight` or `PATH:weight:max_rows`. A colon followed by something
    that is not a number stays part of the path (so `C:\\data\\x.csv` works)."""
    parts = text.split(":")
    nums: list[str] = []
    while len(parts) > 1 and len(nums) < 2 and _number(parts[-1]) is not None:
        nums.insert(0, parts.pop())
    path = ":".join(parts)
    if not path:
        raise UsageError(f"{flag} {text!r}: no path before the ':'")
    weight = float(nums[0]) if nums else 1.0
    if not math.isfinite(weight) or weight <= 0:
        raise UsageError(f"{flag} {text!r}: weight must be a positive number, got {nums[0]}")
    max_rows = 0
    if len(nums) == 2:
        m = float(nums[1])
        if m < 0 or m != int(m):
            raise UsageError(f"{flag} {text!r}: max_rows must be a whole number >= 0, got {nums[1]}")
        max_rows = int(m)
    return SourceSpec(path, weight, max_rows)


def limit_rows(records: Sequence[PairRecord], n: int, pick: str = "first", *, seed: int = 0,
               stream: int = 0) -> list[PairRecord]:
    """At most n rows (0 = all): the first n as read (`first`), or a seeded sample of
    whole prompt groups in file order (`sample`; `stream` keeps sources' draws apart)."""
    if pick not in MAX_ROWS_PICKS:
        raise UsageError(f"--max-rows-pick {pick!r} is not one of {', '.join(MAX_ROWS_PICKS)}")
    if not n or n >= len(records):
        return list(records)
    if pick == "first":
        return list(records[:n])
    return [records[i] for i in sample_by_group(list(records), n, seed, stream)]


def pair_key(r: PairRecord) -> tuple:
    """Exact identity of a comparison: the prompt turns and the unordered pair of responses."""
    a, b = tuple(r.response_a), tuple(r.response_b)
    return (tuple(r.prompt),) + ((a, b) if a <= b else (b, a))


@dataclass
class SourceBlock:
    """One source's lines in data_report.json."""
    name: str
    path: str
    role: str  # "primary" (--data: train + validation) or "extra" (train only)
    weight: float = 1.0
    max_rows: int = 0
    read: int = 0  # records read (after quarantine)
    used: int = 0  # after max_rows
    dropped_validation_prompt: int = 0
    dropped_duplicate: int = 0
    train: int = 0
    val: int = 0
    read_report: dict = field(default_factory=dict)  # the reader's own report (rows, quarantined, reasons)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class MergedTraining:
    records: list[PairRecord]  # training rows: --data train rows first, then each extra source's kept rows
    source: np.ndarray  # (n,) index into `blocks` for each record
    blocks: list[SourceBlock]

    @property
    def weights(self) -> list[float]:
        return [b.weight for b in self.blocks]


def merge_training(primary: Sequence[PairRecord], train_idx: Sequence[int], val_idx: Sequence[int],
                   extras: Sequence[tuple[SourceSpec, Sequence[PairRecord]]], *, primary_name: str = "data",
                   primary_path: str = "", primary_report: dict | None = None,
                   extra_reports: Sequence[dict] | None = None, max_rows_pick: str = "first",
                   seed: int = 0) -> MergedTraining:
    """Training rows of --data (train_idx) plus the extra sources, with the leak guard
    (against val_idx's prompt groups) and cross-source duplicate removal applied."""
    val_groups = {prompt_group(primary[i]) for i in val_idx}
    seen = {pair_key(primary[i]) for i in (*train_idx, *val_idx)}
    blocks = [SourceBlock(primary_name, primary_path, "primary", read=len(primary), used=len(primary),
                          train=len(train_idx), val=len(val_idx), read_report=primary_report or {})]
    records = [primary[i] for i in train_idx]
    source = [0] * len(records)
    for s, (spec, recs) in enumerate(extras, start=1):
        block = SourceBlock(spec.name, spec.path, "extra", spec.weight, spec.max_rows, read=len(recs),
                            read_report=(extra_reports[s - 1] if extra_reports else {}))
        used = limit_rows(recs, spec.max_rows, max_rows_pick, seed=seed, stream=s)
        block.used = len(used)
        for r in used:
            if prompt_group(r) in val_groups:
                block.dropped_validation_prompt += 1
                continue
            key = pair_key(r)
            if key in seen:
                block.dropped_duplicate += 1
                continue
            seen.add(key)
            records.append(r)
            source.append(s)
            block.train += 1
        blocks.append(block)
    return MergedTraining(records, np.asarray(source, dtype=np.int64), blocks)


def epoch_rows(source: np.ndarray, weights: Sequence[float], *, seed: int, epoch: int) -> np.ndarray:
    """Row indices one epoch trains on (sorted; repeats for weights > 1), from (seed, epoch).

    Source s (rows where source == s) contributes floor(w_s) copies of all its
    rows and round(frac(w_s) * n_s) more drawn without replacement.
    """
    source = np.asarray(source)
    out = []
    for s, w in enumerate(weights):
        rows = np.flatnonzero(source == s)
        if not len(rows):
            continue
        whole, frac = divmod(float(w), 1.0)
        out += [rows] * int(whole)
        k = int(round(frac * len(rows)))
        if k:
            rng = np.random.default_rng([seed, epoch, s, 7919])  # one stream per (seed, epoch, source)
            out.append(np.sort(rng.choice(rows, size=k, replace=False)))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def uniform_weights(blocks: Sequence[SourceBlock]) -> bool:
    return all(b.weight == 1.0 for b in blocks)


def check_paths(specs: Sequence[SourceSpec]) -> None:
    for spec in specs:
        if not os.path.exists(spec.path):
            raise UsageError(f"--extra-data {spec.path}: no such file")
