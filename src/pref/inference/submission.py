"""Submission files: every id of the input once, written with a probability floor, and checked.

    predict_file(runs, "test.csv", "submission.csv")   # every input id, in input order
    check_submission("submission.csv", "test.csv")     # -> list of one-line problems

Ids: `read_pairs` gives every data row exactly one slot, in `records` or in
`quarantine` (with its 1-based row number), so the input order is rebuilt by
giving the row numbers not quarantined to the records, in order. An
independent, quote-tolerant scan of the raw file (`data.rows.scan_ids`) finds
the ids of rows a parse could swallow (an unclosed quote runs a cell across
the next rows): they are written too, with the class prior, and
`check_submission` compares a submission with the scan's ids and refuses to
pass while the test file itself is damaged (a broken quote, or parse and
scan disagreeing on the ids).

Rows that cannot be parsed, and rows whose logits are not finite even in
fp32, get the class prior (`ensemble.run_prior`) and the report lists them:
Kaggle rejects a submission with a missing id. Every written probability is
at least `calibration.PROB_FLOOR` (1e-6), rows renormalised.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ...data.arena import ReadResult, is_jsonl_path, read_pairs
from ...data.records import LABEL_NAMES
from ...data.rows import IdScan, scan_ids
from ...data.tasks import BINARY_HEADER, BINARY_WINNERS, binary_winners, check_task, per_language, task_metrics
from ...files import atomic_write_text
from .calibration import floor_probs, log_loss
from ..checkpoint import expand_runs
from .ensemble import predict_runs

SUBMISSION_HEADER = ("id",) + LABEL_NAMES
SUM_TOLERANCE = 1e-6


# --- input rows ------------------------------------------------------------------

@dataclass
class InputRow:
    row: int  # 1-based data row, as in the quarantine report
    id: str | None
    record: int | None  # index into ReadResult.records; None when quarantined
    reason: str = ""
    detail: str = ""


def input_rows(result: ReadResult) -> list[InputRow]:
    """Every data row of the file in input order, parsed or not."""
    quarantined = {q.row: q for q in result.quarantine}
    out, next_record = [], 0
    for row in range(1, result.rows + 1):
        q = quarantined.get(row)
        if q is not None:
            rid = q.id.strip() if isinstance(q.id, str) and q.id.strip() else None
            out.append(InputRow(row, rid, None, q.reason, q.detail))
        else:
            out.append(InputRow(row, result.records[next_record].id, next_record))
            next_record += 1
    assert next_record == len(result.records), "quarantine row numbers do not match the records"
    return out


def scan_file_ids(data: str | os.PathLike) -> IdScan:
    """The independent, quote-tolerant scan of a CSV's ids (`data.rows.scan_ids`); JSON
    lines cannot swallow a row through a quote, so a JSONL file has nothing to scan."""
    if is_jsonl_path(Path(data)) or Path(data).suffix.lower() == ".json":
        return IdScan()
    return scan_ids(data)


def expected_ids(result: ReadResult, scan: IdScan | None = None) -> list[str]:
    """The ids a submission must hold: each id of the input once, in input order;
    ids only the scan found go after the scanned id before them."""
    seen: dict[str, None] = {}
    for r in input_rows(result):
        if r.id is not None:
            seen.setdefault(r.id, None)
    ids = list(seen)
    prev: str | None = None
    for rid in (scan.ids if scan is not None else []):
        if rid not in seen:
            ids.insert(ids.index(prev) + 1 if prev is not None else 0, rid)
            seen[rid] = None
        prev = rid
    return ids


def lost_ids(result: ReadResult, scan: IdScan) -> list[str]:
    """Ids the scan finds that the parse does not hold (a row swallowed into another row's cell)."""
    parsed = {r.id for r in input_rows(result) if r.id is not None}
    return list(dict.fromkeys(rid for rid in scan.ids if rid not in parsed))


def damage(result: ReadResult, scan: IdScan) -> list[str]:
    """Why the test file cannot vouch for its ids (empty when it can): the parse and the
    scan disagree, or a row's quoting is broken (its cells, id included, may belong to
    another row)."""
    scanned = set(scan.ids)
    out = [f"id {rid} is in the file (line scan) but not in its parse: a row merged into another"
           for rid in lost_ids(result, scan)]
    if scan.ids:  # the scan ran: a parsed id it does not see is suspect too
        out += [f"row {r.row}: id {r.id} is in the parse but the line scan does not see it"
                for r in input_rows(result) if r.id is not None and r.id not in scanned]
    out += [f"row {q.row} (id {q.id}): {q.reason}: {q.detail}" for q in result.quarantine
            if "quote" in q.reason]
    return out


# --- the whole file ----------------------------------------------------------------

def format_submission(ids: Sequence[str], probs: np.ndarray, task: str = "arena3") -> str:
    """CSV text of floored probabilities; %.10g keeps each row's sum within ~1e-10 of 1.
    The binary task writes WSDM's `id,winner` (model_a / model_b) instead."""
    probs = floor_probs(np.asarray(probs, dtype=np.float64).reshape(-1, 3))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if task == "binary":
        w.writerow(BINARY_HEADER)
        w.writerows(zip(ids, binary_winners(probs)))
        return buf.getvalue()
    w.writerow(SUBMISSION_HEADER)
    for rid, p in zip(ids, probs):
        w.writerow([rid, f"{p[0]:.10g}", f"{p[1]:.10g}", f"{p[2]:.10g}"])
    return buf.getvalue()


def predict_file(runs: Sequence[str | os.PathLike], data: str | os.PathLike, out: str | os.PathLike, *,
                 weights: Sequence[float] | None = None, tta: bool = True, device: str = "auto",
                 precision: str = "auto", max_len: int | None = None, batch_size: int | None = None,
                 max_tokens: int | None = None, data_parallel: bool = True, report_path: str | os.PathLike | None = None,
                 progress: bool = False, log: Callable[[str], None] | None = print,
                 ensemble_temperature: float = 1.0, quantize: str | None = None, task: str | None = None,
                 tta_budget_minutes: float | None = None, uncalibrated: bool = False) -> dict:
    """Write `out` (id + three probabilities for every id of `data`, in input order; `id,winner`
    when the runs were trained with --task binary) and a JSON report next to it; returns the report."""
    log = log or (lambda s: None)
    t_start = time.perf_counter()
    from .ensemble import LoadedRun
    run_dirs = [r for r in runs if isinstance(r, LoadedRun)] or expand_runs(runs)  # a zero-shot judge, or run dirs
    trained_for = runs_task(run_dirs)  # before reading data: runs of two tasks are refused at once
    if task is not None and task != trained_for:
        from ...errors import UsageError
        raise UsageError(f"--task {task}, but the runs were trained with --task {trained_for}")
    task = trained_for
    result = read_pairs(data)
    rows = input_rows(result)
    scan = scan_file_ids(data)
    lost = lost_ids(result, scan)
    records = result.records
    probs, prior, run_stats = predict_runs(run_dirs, records, weights=weights, log=log, device=device,
                                           precision=precision, tta=tta, max_len=max_len, batch_size=batch_size,
                                           max_tokens=max_tokens, data_parallel=data_parallel, progress=progress,
                                           quantize=quantize, uncalibrated=uncalibrated,
                                           **({} if tta_budget_minutes is None else
                                              {"tta_budget_minutes": tta_budget_minutes}))
    if ensemble_temperature != 1.0:  # from a weights file fitted on OOF (predict --fit-weights)
        from .ensemble_weights import temper
        probs = temper(probs, ensemble_temperature)
    failed = ~np.isfinite(probs).all(1)

    # Every input id gets exactly one row: its first parsed prediction, else the prior.
    chosen: dict[str, np.ndarray] = {}
    fallback: dict[str, dict] = {}
    no_id, duplicates = [], []
    for r in rows:
        if r.id is None:
            no_id.append({"row": r.row, "reason": r.reason, "detail": r.detail})
            continue
        have_real = r.id in chosen and r.id not in fallback
        if r.id in chosen:
            duplicates.append({"row": r.row, "id": r.id})
        if r.record is not None and not failed[r.record]:
            if not have_real:
                chosen[r.id] = probs[r.record]
                fallback.pop(r.id, None)
        elif r.id not in chosen:
            chosen[r.id] = prior
            fallback[r.id] = {"row": r.row, "id": r.id,
                              "reason": r.reason or "nonfinite_logits",
                              "detail": r.detail or "model output was not finite, even in fp32"}
    for rid in lost:
        chosen.setdefault(rid, prior)
        fallback.setdefault(rid, {"row": None, "id": rid, "reason": "swallowed_row",
                                  "detail": "the line scan finds this row start; the CSV parse merged it into "
                                            "another row (an unclosed quote?)"})
    ids = expected_ids(result, scan)
    matrix = np.array([chosen[i] for i in ids]).reshape(-1, 3)
    atomic_write_text(out, format_submission(ids, matrix, task))

    report: dict[str, Any] = {
        "data": str(data), "out": str(out), "rows_read": result.rows, "rows_parsed": len(records),
        "rows_scanned": len(scan.ids), "rows_swallowed": len(lost), "scan_damaged_rows": scan.damaged_rows,
        "ids_written": len(ids), "predicted": len(ids) - len(fallback), "prior_rows": len(fallback),
        "prior": np.round(prior, 6).tolist(), "prior_rows_list": list(fallback.values()),
        "rows_without_id": no_id, "duplicate_id_rows": duplicates,
        "runs": run_stats, "weights": None if weights is None else list(map(float, weights)),
        "ensemble_temperature": ensemble_temperature,
        "tta": tta, "seconds": time.perf_counter() - t_start, "task": task,
    }
    if tta and tta_budget_minutes is not None:  # gated swap TTA (inference/tta.py): how far the budget went
        report["tta_budget_minutes"] = tta_budget_minutes
        report["tta_rows_both_orders"] = [s.get("tta_rows_both_orders", 0) for s in run_stats]
    if records and run_stats:
        real = sum(s.get("real_tokens", 0) for s in run_stats)
        padded = sum(s.get("padded_tokens", 0) for s in run_stats)
        secs = sum(s.get("seconds_tokenize", 0) + s.get("seconds_model", 0) for s in run_stats)
        report["rows_per_s"] = len(records) / max(secs, 1e-9)  # all runs, tokenising included
        report["pad_fraction"] = 1.0 - real / max(padded, 1)
    if result.has_labels and any(r.label is not None for r in records):
        y = np.array([-1 if r.label is None else r.label for r in records])
        ok = ~failed & (y >= 0)  # scored against hard (human) labels only
        report["metrics"] = {"rows": int(ok.sum()), "log_loss": log_loss(floor_probs(probs[ok]), y[ok]),
                             "accuracy": float((probs[ok].argmax(1) == y[ok]).mean()),
                             "log_loss_prior": log_loss(np.tile(prior, (int(ok.sum()), 1)), y[ok])}
        if task == "binary":  # the competition's figures: A/B renormalised, tie rows not scored
            report["metrics"]["binary"] = task_metrics(task, probs, y)
        langs = per_language(task, records, probs, y)
        if langs:
            report["metrics"]["per_language"] = langs
    elif any(r.language for r in records):  # no labels: per-language row counts still
        report["languages"] = dict(Counter(r.language or "unknown" for r in records).most_common())
    report_path = Path(report_path) if report_path else default_report_path(out)
    atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    report["report"] = str(report_path)

    log(f"[predict] wrote {out}: {len(ids)} ids ({report['predicted']} predicted, {len(fallback)} given the "
        f"class prior {np.round(prior, 4).tolist()}); report {report_path}")
    for q in list(fallback.values())[:20]:
        where = f" (row {q['row']})" if q.get("row") is not None else ""
        log(f"[predict]   prior for id {q['id']}{where}: {q['reason']} {q['detail']}".rstrip())
    if len(fallback) > 20:
        log(f"[predict]   ... and {len(fallback) - 20} more (see the report)")
    for q in no_id[:20]:
        log(f"[predict]   row {q['row']} has no id and cannot be in the submission: {q['reason']} {q['detail']}".rstrip())
    if duplicates:
        log(f"[predict]   {len(duplicates)} rows repeat an earlier id (written once): "
            + ", ".join(f"row {d['row']} id {d['id']}" for d in duplicates[:10]))
    if "metrics" in report:
        m = report["metrics"]
        log(f"[predict] labels found: log loss {m['log_loss']:.4f} (class prior {m['log_loss_prior']:.4f}), "
            f"accuracy {m['accuracy']:.3f} on {m['rows']} parsed rows")
    return report


def runs_task(run_dirs: Sequence[Path]) -> str:
    """The task every run was trained for (config.yaml `task`; older runs: arena3); an
    ensemble of runs trained for different tasks is refused."""
    from ..checkpoint import load_config
    from ...errors import UsageError
    tasks = {str(getattr(d, "path", d)): (d.cfg if hasattr(d, "cfg") else load_config(d)).task for d in run_dirs}
    if len(set(tasks.values())) > 1:
        raise UsageError("the runs were trained for different tasks: "
                         + ", ".join(f"{d} ({t})" for d, t in tasks.items()) + "; ensemble runs of one task")
    return next(iter(tasks.values()), "arena3")


def default_report_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.stem + "_report.json")


# --- checking a submission -----------------------------------------------------------

def check_submission(path: str | os.PathLike, data: str | os.PathLike, *, max_per_kind: int = 20,
                     tolerance: float = SUM_TOLERANCE, task: str = "arena3") -> list[str]:
    """One line per problem (empty list = valid): header, every id of `data`
    exactly once (the ids of the parse and of the independent `scan_ids`),
    probabilities numeric, finite, in [0, 1], rows summing to 1 (task binary:
    `id,winner` with model_a / model_b); and none while `data` has rows the parse lost.
    At most `max_per_kind` lines per kind of problem, then a count of the rest."""
    check_task(task)
    expected_header = BINARY_HEADER if task == "binary" else SUBMISSION_HEADER
    result, scan = read_pairs(data), scan_file_ids(data)
    expected = expected_ids(result, scan)
    problems: dict[str, list[str]] = {}

    def add(kind: str, msg: str) -> None:
        problems.setdefault(kind, []).append(msg)

    for why in damage(result, scan):  # the test file itself cannot vouch for its ids: never "ok"
        add("data", f"{data} is damaged: {why}")

    p = Path(path)
    if not p.is_file():
        return [*problems.get("data", []), f"{path}: no such file"]
    with open(p, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            return [f"{path}: file is empty"]
        except csv.Error as e:
            return [f"{path}: header is not valid CSV ({e})"]
        header = [h.strip() for h in header]
        if header != list(expected_header):
            other = "binary" if task == "arena3" else "arena3"
            looks = f" (that is the {other} task's header)" if header == list(
                BINARY_HEADER if other == "binary" else SUBMISSION_HEADER) else ""
            named = f" for task {task}{looks}" if task != "arena3" or looks else ""  # arena3's line as before
            add("header", f"header is {','.join(header)!r}, expected {','.join(expected_header)!r}{named}")
            if any(c not in header for c in expected_header):
                missing = [c for c in expected_header if c not in header]
                return [*problems["header"], f"cannot check rows: column(s) {', '.join(missing)} missing"]
        col = {c: header.index(c) for c in expected_header}
        wanted = set(expected)
        first_row: dict[str, int] = {}
        line = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                line += 1
                add("csv", f"row {line}: not valid CSV ({e})")
                continue
            line += 1
            if not cells:
                line -= 1
                continue
            if len(cells) != len(header):
                add("shape", f"row {line}: {len(cells)} cells, header has {len(header)}")
                continue
            rid = cells[col["id"]].strip()
            if not rid:
                add("id", f"row {line}: empty id")
            elif rid in first_row:
                add("duplicate", f"row {line}: duplicate id {rid} (first at row {first_row[rid]})")
            else:
                first_row[rid] = line
                if rid not in wanted:
                    add("unknown", f"row {line}: id {rid} is not in {data}")
            if task == "binary":
                winner = cells[col["winner"]].strip()
                if winner not in BINARY_WINNERS:
                    add("winner", f"row {line} (id {rid}): winner={winner!r}, expected {' or '.join(BINARY_WINNERS)}")
                continue
            values = []
            for name in LABEL_NAMES:
                raw = cells[col[name]].strip()
                try:
                    v = float(raw)
                except ValueError:
                    add("number", f"row {line} (id {rid}): {name}={raw!r} is not a number")
                    values = None
                    break
                values.append(v)
            if values is None:
                continue
            bad = [n for n, v in zip(LABEL_NAMES, values) if not math.isfinite(v)]
            if bad:
                add("finite", f"row {line} (id {rid}): {', '.join(bad)} not finite "
                              f"({', '.join(cells[col[n]].strip() for n in bad)})")
                continue
            out_of_range = [f"{n}={v}" for n, v in zip(LABEL_NAMES, values) if not 0.0 <= v <= 1.0]
            if out_of_range:
                add("range", f"row {line} (id {rid}): outside [0, 1]: {', '.join(out_of_range)}")
            s = math.fsum(values)
            if abs(s - 1.0) > tolerance:
                add("sum", f"row {line} (id {rid}): probabilities sum to {s:.9g}, not 1 (tolerance {tolerance:g})")
    for rid in expected:
        if rid not in first_row:
            add("missing", f"id {rid} from {data} is missing")
    lines: list[str] = []
    for kind, msgs in problems.items():
        lines += msgs[:max_per_kind]
        if len(msgs) > max_per_kind:
            lines.append(f"... and {len(msgs) - max_per_kind} more {kind} problems")
    return lines
