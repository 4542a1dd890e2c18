"""The rows one classifier run trains and validates on, from `--data`, `--extra-data` and `--teacher`.

* selection (`--select-frac`, default 0.1): whole prompt groups of the fold's
  training rows held out of training; the temperature is fitted and the best
  checkpoint chosen on their hard rows, so validation figures are untouched;
* validation: the fold's rows of `--data` that carry a HARD label (a soft row
  of `--data` that falls in validation is neither scored nor trained on: its
  prompt is a validation prompt), counted in data_report.json;
* training: the fold's other rows of `--data`, then each extra source after
  the leak guard and duplicate removal of `data.sources.merge_training`, each
  row once; the sources' weights are applied per epoch by the engine's batch
  plan through `SplitRows.epoch_rows` (`data.sources.epoch_rows`: a weight-2
  source appears twice, a weight-0.5 source by a seeded half, another half
  each epoch, from (seed, epoch) alone, so a resumed run replans the same epoch);
* teacher probabilities from `--teacher RUN`: the teacher's out-of-fold
  predictions for rows it has them for (it never trained on those), predicted
  by the teacher for the rest, cached in `teacher_predictions.csv` in the run
  dir (a teacher that trained on a row is over-confident on it: the cache
  names which rows came from where).

data_report.json gets a `sources` block per source and a `validation` block.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ...data.arena import read_pairs
from ...data.records import LABEL_NAMES, PairRecord
from ...data.sources import SourceSpec, epoch_rows, merge_training, parse_source_spec
from ...data.targets import label_kinds
from ...engine.rundir import RunDir
from ...errors import UsageError
from ...files import atomic_write_text

TEACHER_CACHE = "teacher_predictions.csv"
MIN_SELECT_ROWS = 10  # below this a fitted temperature is noise


@dataclass
class TrainingSources:
    """The extra sources as read, once per run (every fold filters them again)."""
    specs: list[SourceSpec]
    records: list[list[PairRecord]]
    reports: list[dict]
    max_rows_pick: str = "first"  # how each source's max_rows picks its rows (--max-rows-pick)
    seed: int = 0


def load_extra_sources(cfg) -> TrainingSources | None:
    if not cfg.extra_data:
        return None
    specs = [parse_source_spec(t) for t in cfg.extra_data]
    recs, reports = [], []
    for spec in specs:
        result = read_pairs(spec.path)
        unlabelled = [r.id for r in result.records if r.label is None and r.target is None]
        if unlabelled:
            raise UsageError(f"--extra-data {spec.path}: {len(unlabelled)} rows have no label (e.g. id {unlabelled[0]}): "
                             "pseudo-label it first (python -m src.predict --pseudo-label)")
        rep = result.report(max_listed=50)
        recs.append(result.records)
        reports.append({k: rep[k] for k in ("file", "rows", "ok", "quarantined", "reasons", "label_kinds")})
    return TrainingSources(specs, recs, reports, cfg.max_rows_pick, cfg.seed)


@dataclass
class SplitRows:
    train: list[PairRecord]  # every training row once (--data's, then each extra source's)
    select: list[PairRecord]  # held out of training: temperature + checkpoint choice (empty: use val)
    val: list[PairRecord]  # hard rows of the validation fold: scored only
    source: np.ndarray | None = None  # (len(train),) source index of each training row
    weights: tuple[float, ...] = ()  # sampling weight per source
    seed: int = 0

    def epoch_rows(self, epoch: int) -> np.ndarray | None:
        """Indices into `train` one epoch trains on (the Task hook the engine's batch plan
        calls); None when every weight is 1 (every row once, the plan of an unweighted run)."""
        if self.source is None or all(w == 1.0 for w in self.weights):
            return None
        return epoch_rows(self.source, self.weights, seed=self.seed, epoch=epoch)

    def drawn(self, epoch: int = 0) -> np.ndarray:
        """`epoch_rows` with None spelled out: what one epoch's counts and class prior are of."""
        rows = self.epoch_rows(epoch)
        return np.arange(len(self.train)) if rows is None else rows


def select_slice(records: Sequence[PairRecord], train_idx: Sequence[int], frac: float,
                 seed: int) -> tuple[list[int], list[int], int]:
    """(train rows kept, select rows, soft rows dropped): whole prompt groups of the
    training rows, about `frac` of them; only hard rows are scored, a soft row of a
    select group is dropped (its prompt is a selection prompt).

    Grouped by prompt and stratified by label: of the round(1 / frac) grouped,
    stratified folds (data.split.fold_ids), the one whose label shares are closest to
    the training rows' is held out. Stratification alone cannot split a prompt group,
    and the dev file's ties cluster by prompt (up to 10 on one PandaLM prompt), so fold 0
    of a 300-row sample once held 7 of its 29 rows as ties: the temperature fitted
    there softened every row (0.706 -> 0.948 on validation)."""
    from ...data.split import fold_ids, train_val_split
    if not frac:
        return list(train_idx), [], 0
    sub = [records[i] for i in train_idx]
    k = 1.0 / frac
    if abs(k - round(k)) > 0.05 or k < 2:  # no whole number of folds: a grouped fraction
        keep, held = train_val_split(sub, val_frac=frac, seed=seed + 7919)
    else:
        folds = fold_ids(sub, round(k), seed + 7919)  # another draw than the folds
        best = _closest_fold(folds, [r.label for r in sub], round(k))
        keep, held = list(np.flatnonzero(folds != best)), list(np.flatnonzero(folds == best))
    select = [train_idx[j] for j in held if sub[j].label is not None]
    return [train_idx[j] for j in keep], select, len(held) - len(select)


def _closest_fold(folds: np.ndarray, labels: Sequence[int | None], n_folds: int) -> int:
    """The fold whose hard-label shares are nearest (total variation) to all rows' (lowest index on ties)."""
    y = np.array([-1 if v is None else v for v in labels])
    whole = np.bincount(y[y >= 0], minlength=3) / max(int((y >= 0).sum()), 1)
    gaps = []
    for k in range(n_folds):
        part = y[(folds == k) & (y >= 0)]
        share = np.bincount(part, minlength=3) / len(part) if len(part) else np.full(3, np.inf)
        gaps.append(0.5 * float(np.abs(share - whole).sum()))
    return int(np.argmin(gaps))


def training_rows(cfg, records: Sequence[PairRecord], train_idx: Sequence[int], val_idx: Sequence[int],
                  run_dir: Path, extras: TrainingSources | None, *, main_process: bool = True) -> SplitRows:
    """Training, selection and validation records of one split; updates data_report.json.
    The leak guard keeps extra rows off the prompts of validation AND selection rows."""
    val_hard = [i for i in val_idx if records[i].label is not None]
    kept, select_idx, soft_in_select = select_slice(records, list(train_idx), cfg.select_frac, cfg.seed)
    if cfg.select_frac and len(select_idx) < MIN_SELECT_ROWS:
        # too few rows to fit a temperature on: say so, and fall back to the in-sample
        # behaviour (metrics.json["figures"] then names the figures in-sample)
        print(f"[select] --select-frac {cfg.select_frac} holds out only {len(select_idx)} hard rows "
              f"(< {MIN_SELECT_ROWS}): temperature and checkpoint chosen on the validation rows (in-sample)")
        kept, select_idx, soft_in_select = list(train_idx), [], 0
    train_idx = kept
    merged = merge_training(records, train_idx, list(val_idx) + select_idx,
                            list(zip(extras.specs, extras.records)) if extras else [],
                            primary_name=Path(cfg.data).name if cfg.data else "demo", primary_path=cfg.data,
                            extra_reports=extras.reports if extras else None,
                            max_rows_pick=extras.max_rows_pick if extras else "first", seed=extras.seed if extras else 0)
    merged.blocks[0].val = len(val_hard)  # its `train` counts exclude the selection slice
    rows = epoch_rows(merged.source, merged.weights, seed=cfg.seed, epoch=0)  # per-epoch counts for the report
    train = list(merged.records)
    if cfg.teacher:
        train = with_teacher(train, cfg.teacher, run_dir, main_process=main_process)
    if not val_hard:
        raise UsageError(f"{cfg.data or 'data'}: the validation split holds no hard-labelled rows "
                         f"({len(val_idx)} soft rows): validation scores human labels only")
    if main_process:
        _update_report(run_dir, merged, rows, [records[i] for i in val_idx], len(val_hard),
                       {"rows": len(select_idx), "soft_rows_dropped": soft_in_select, "frac": cfg.select_frac})
    return SplitRows(train, [records[i] for i in select_idx], [records[i] for i in val_hard],
                     source=merged.source, weights=tuple(merged.weights), seed=cfg.seed)


def _update_report(run_dir: Path, merged, rows: np.ndarray, val_records: list[PairRecord], n_val_hard: int,
                   select: dict) -> None:
    path = RunDir(run_dir).data_report
    report = json.loads(path.read_text()) if path.exists() else {}
    per_source = np.bincount(merged.source[rows], minlength=len(merged.blocks)) if len(rows) else np.zeros(len(merged.blocks))
    blocks = []
    for s, b in enumerate(merged.blocks):
        d = b.as_dict()
        d["train_draws"] = int(per_source[s])  # rows each epoch trains on after the sampling weight
        d["label_kinds"] = label_kinds([r for r, src in zip(merged.records, merged.source) if src == s])
        blocks.append(d)
    report["sources"] = blocks
    report["validation"] = {"rows": len(val_records), "scored_hard_rows": n_val_hard,
                            "soft_rows_left_out": len(val_records) - n_val_hard,
                            "note": "validation scores hard (human) labels only; a soft row in a validation "
                                    "fold is neither scored nor trained on"}
    report["selection"] = {**select, "note": "held out of training: fits the temperature and chooses the checkpoint"}
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


# --- the teacher ---------------------------------------------------------------------

def _teacher_oof(teacher: Path) -> pd.DataFrame | None:
    for path in RunDir(teacher).predictions():
        if path.exists():
            df = pd.read_csv(path, dtype={"id": str})
            return df.dropna(subset=list(LABEL_NAMES))
    return None


def teacher_probabilities(records: Sequence[PairRecord], teacher: str | Path, run_dir: Path,
                          **predict_kw) -> tuple[np.ndarray, list[str]]:
    """(n, 3) teacher probabilities and where each row's came from ("oof" / "predicted" / "cache")."""
    teacher = Path(teacher)
    cache = run_dir / TEACHER_CACHE
    ids = [r.id for r in records]
    if cache.exists():
        df = pd.read_csv(cache, dtype={"id": str})
        if df["teacher"].iloc[0] == str(teacher) and set(ids) <= set(df["id"]):
            df = df.drop_duplicates("id").set_index("id").loc[ids]
            return df[list(LABEL_NAMES)].to_numpy(), df["origin"].tolist()
    probs = np.full((len(records), 3), np.nan)
    origin = ["predicted"] * len(records)
    oof = _teacher_oof(teacher)
    if oof is not None:
        pos = dict(zip(oof["id"], oof[list(LABEL_NAMES)].to_numpy()))
        for i, rid in enumerate(ids):
            if rid in pos:
                probs[i], origin[i] = pos[rid], "oof"
    todo = [i for i, o in enumerate(origin) if o == "predicted"]
    if todo:
        from ..checkpoint import expand_runs
        from ..inference.ensemble import predict_runs
        unique = {}
        for i in todo:
            unique.setdefault(records[i].id, records[i])
        order = list(unique)
        p, _, _ = predict_runs(expand_runs([teacher]), [unique[k] for k in order], **predict_kw)
        at = dict(zip(order, p))
        for i in todo:
            probs[i] = at[records[i].id]
    df = pd.DataFrame(probs, columns=list(LABEL_NAMES))
    df.insert(0, "id", ids)
    df["origin"], df["teacher"] = origin, str(teacher)
    atomic_write_text(cache, df.to_csv(index=False))
    return probs, origin


def with_teacher(train: list[PairRecord], teacher: str, run_dir: Path, *, main_process: bool = True) -> list[PairRecord]:
    """Training records with `teacher` set from --teacher (teacher columns in the file are replaced)."""
    probs, origin = teacher_probabilities(train, teacher, run_dir)
    out = []
    for r, p in zip(train, probs):
        t = None if not np.isfinite(p).all() else tuple(float(x) for x in p / p.sum())
        out.append(dataclasses.replace(r, teacher=t))
    print(f"[teacher] {teacher}: {origin.count('oof')} rows from its out-of-fold predictions, "
          f"{origin.count('predicted')} predicted by it (in-sample where it trained on them), cached in "
          f"{run_dir / TEACHER_CACHE}")
    return out
