"""Pairwise preference files -> tokenised (chosen, rejected) pairs for DPO.

The same arena CSV / pairwise JSONL files the classifier reads (src.data.arena.read_pairs)
become pairs of chat episodes that share the prompt and differ in the final bot turn:
the winner's reply is `chosen`, the loser's `rejected`. Each side is tokenised by the one
encoder (src.gen.encode) with `train_on=last_bot`, so its labels cover exactly the final
reply (the log-probability DPO compares) and generation later sees the same prompt ids.

What is skipped is counted, never dropped silently (`report`, written to the run dir as
`data_report.json`): unlabelled rows, ties (no preference), identical chosen and rejected
(no signal: the DPO gradient is zero), an empty reply on either side, the cleaning
filters (run on the chosen side only: the rejected reply is *meant* to be the worse one,
so dropping short or junky rejected replies would remove the signal), and pairs where the
encoder drops either side. A file that yields no pair at all is one UsageError line.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..data.arena import read_pairs
from ..data.chat import BOT, ChatEpisode, interleave_turns, pair_group_id
from ..data.filters import apply_filters, filter_config, FILTERS
from ..data.records import A_WINS, B_WINS, TIE, is_empty_response
from ..data.sources import limit_rows
from ..errors import UsageError
from .dataset import split_by_group
from .encode import tokenize_episodes
from .render import TokenizeConfig


class NoPairsError(UsageError):
    """A preference file that gives no (chosen, rejected) pair to train on."""


def pair_episodes(record: Any, name: str) -> tuple[ChatEpisode, ChatEpisode] | str:
    """(chosen, rejected) episodes of one pairwise record, or the reason it gives none.
    Multi-turn rows keep each side's own earlier replies (that is what each model saw);
    only the final reply is scored."""
    if record.label is None:
        return "unlabelled"
    if record.label == TIE:
        return "tie"
    if record.label not in (A_WINS, B_WINS):
        return "unlabelled"
    win, lose = ((record.response_a, record.response_b) if record.label == A_WINS
                 else (record.response_b, record.response_a))
    if is_empty_response(win[-1:]) or is_empty_response(lose[-1:]):
        return "empty_reply"
    if [t.strip() for t in win] == [t.strip() for t in lose]:
        return "identical"
    base = dict(persona="", scenario="", source=record.source or name, group_id=pair_group_id(record))
    rid = f"{name}:{record.id}"
    return (ChatEpisode(id=f"{rid}:chosen", turns=interleave_turns(record.prompt, win), **base),
            ChatEpisode(id=f"{rid}:rejected", turns=interleave_turns(record.prompt, lose), **base))


def _as_row(ex: Any) -> dict:
    return {"input_ids": np.asarray(ex.input_ids, dtype=np.int64), "labels": np.asarray(ex.labels, dtype=np.int64),
            "truncated": ex.truncated}


def _tokenize_pairs(pairs: list[tuple[ChatEpisode, ChatEpisode]], tokenizer: Any,
                    tok_cfg: TokenizeConfig) -> tuple[list[dict], dict]:
    chosen, c_rep = tokenize_episodes([c for c, _ in pairs], tokenizer, tok_cfg)
    rejected, r_rep = tokenize_episodes([r for _, r in pairs], tokenizer, tok_cfg)
    by_id = {e.id: e for e in chosen + rejected}
    rows = []
    for c, r in pairs:
        if c.id in by_id and r.id in by_id:  # the encoder may drop one side (too long, nothing to train)
            ec, er = by_id[c.id], by_id[r.id]
            rows.append({"id": c.id[:-len(":chosen")], "source": c.source, "group_id": c.group_id,
                         "chosen": _as_row(ec), "rejected": _as_row(er)})
    return rows, {"chosen": c_rep, "rejected": r_rep, "pairs_in": len(pairs), "pairs_out": len(rows)}


def _dedup_pairs(pairs: list[tuple[ChatEpisode, ChatEpisode]]) -> tuple[list, int]:
    """The first of each (conversation, chosen, rejected) text; later copies are counted."""
    seen, out = set(), []
    for c, r in pairs:
        key = (tuple((t.role, t.text.strip()) for t in c.turns), tuple(t.text.strip() for t in r.turns))
        if key not in seen:
            seen.add(key)
            out.append((c, r))
    return out, len(pairs) - len(out)


def prepare_pairs(paths: list[str], tokenizer: Any, tok_cfg: TokenizeConfig, *, val_frac: float, seed: int,
                  max_rows: int = 0, max_rows_pick: str = "first") -> tuple[list[dict], list[dict], dict]:
    """(train pairs, val pairs, report) from pairwise files. Raises NoPairsError when
    nothing is left to train on, naming the file and what each row became."""
    tok_cfg = dataclasses.replace(tok_cfg, train_on="last_bot", labels="response_only")
    report: dict[str, Any] = {"inputs": []}
    all_pairs: list[tuple[ChatEpisode, ChatEpisode]] = []
    for path in paths:
        result = read_pairs(path)
        records = limit_rows(result.records, max_rows, max_rows_pick, seed=seed)
        skipped: Counter = Counter()
        kept = []
        for rec in records:
            got = pair_episodes(rec, Path(path).stem)
            if isinstance(got, str):
                skipped[got] += 1
            else:
                kept.append(got)
        entry = {"file": str(path), "rows": result.rows, "quarantined": len(result.quarantine),
                 "used_rows": len(records), "skipped": dict(skipped.most_common()), "pairs": len(kept)}
        report["inputs"].append(entry)
        if not kept:
            why = ", ".join(f"{n} {k}" for k, n in skipped.most_common()) or "no readable rows"
            raise NoPairsError(f"{path}: no preference pairs to train on ({len(records)} rows used: {why}); "
                               "DPO needs rows where one reply beat a different one")
        all_pairs += kept
    # Filters on the chosen side; a pair stays when its chosen episode does (possibly cleaned).
    # Episode dedup is off there: one prompt and winner beating several different losers are
    # distinct pairs (arena data has many); exact duplicate *pairs* are dropped instead.
    all_pairs, n_dup = _dedup_pairs(all_pairs)
    report["duplicate_pairs"] = n_dup
    configs = {name: filter_config(name, {"enabled": False} if name == "dedup" else {}) for name in FILTERS}
    clean, entries = apply_filters([c for c, _ in all_pairs], configs, seed)
    report["filters_on_chosen"] = entries
    clean_by_id = {e.id: e for e in clean}
    filtered = [(clean_by_id[c.id], r) for c, r in all_pairs if c.id in clean_by_id]
    train_c, val_c = split_by_group([c for c, _ in filtered], val_frac, seed)
    val_ids = {e.id for e in val_c}
    train_pairs = [(c, r) for c, r in filtered if c.id not in val_ids]
    val_pairs = [(c, r) for c, r in filtered if c.id in val_ids]
    train, t_rep = _tokenize_pairs(train_pairs, tokenizer, tok_cfg)
    val, v_rep = _tokenize_pairs(val_pairs, tokenizer, tok_cfg)
    report["tokenize"] = {"train": t_rep, "val": v_rep}
    report["totals"] = {"pairs_read": len(all_pairs) + n_dup, "duplicate_pairs": n_dup,
                        "pairs_after_filters": len(filtered),
                        "train_pairs": len(train), "val_pairs": len(val),
                        "skipped": dict(sum((Counter(e["skipped"]) for e in report["inputs"]), Counter()))}
    if not train:
        raise NoPairsError(f"{', '.join(paths)}: no training pairs left after filters and tokenising "
                           f"({len(filtered)} after filters, {len(val)} held out); see the data report")
    return train, val, report


def prompt_of(row: dict) -> list[int]:
    """The prompt ids both sides share (everything before the chosen reply's labels)."""
    labels = row["chosen"]["labels"]
    start = int(np.flatnonzero(labels != -100)[0])
    return [int(t) for t in row["chosen"]["input_ids"][:start]]


def last_bot_text(ep: ChatEpisode) -> str:
    return [t for t in ep.turns if t.role == BOT][-1].text


@dataclasses.dataclass
class DPOData:
    """Everything a DPO run takes from its --data files."""
    tokenizer: Any
    train: list[dict]
    val: list[dict]
    report: dict
    meta: dict  # tokenize config etc., as a prepared dataset's meta.json


def load_dpo_data(cfg: Any) -> DPOData:
    """Read and tokenise the pairwise --data files (comma-separated) of a DPO run. Done in
    memory, before the run dir is created, so bad input leaves nothing behind; every
    process does it (deterministic and quick: no coordination needed)."""
    from .model import ensure_pad_token
    from .render import config_dict, tokenize_config, uses_chat_template
    from ..models.names import load_tokenizer
    paths = [p.strip() for p in str(cfg.data).split(",") if p.strip()]
    if not paths:
        raise UsageError("--objective dpo needs --data: arena CSV or pairwise JSONL file(s) with chosen/rejected pairs")
    for p in paths:
        if Path(p).is_dir():
            raise UsageError(f"--data {p}: a folder; DPO reads pairwise files (arena CSV / pairwise JSONL) directly")
    tok_cfg = tokenize_config({"template": cfg.template, "max_len": cfg.max_len, "train_on": "last_bot",
                               "distinct_pad": cfg.distinct_pad})
    tok = load_tokenizer(cfg.model, chat_template=tok_cfg.template == "chat_template")
    pad = ensure_pad_token(None, tok, tok_cfg.pad_token, distinct=tok_cfg.distinct_pad)
    train, val, report = prepare_pairs(paths, tok, tok_cfg, val_frac=cfg.val_frac, seed=cfg.seed,
                                       max_rows=cfg.max_rows, max_rows_pick=cfg.max_rows_pick)
    if not val:
        raise NoPairsError(f"{', '.join(paths)}: no held-out pairs ({len(train)} train); more rows or a larger --val-frac")
    report["pad"] = pad
    meta = {"tokenizer": cfg.model, "tokenize": config_dict(tok_cfg), "embedding_multiple_of": 64,
            "chat_template": uses_chat_template(tok, tok_cfg)}
    return DPOData(tok, train, val, report, meta)
