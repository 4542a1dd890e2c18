"""A prepared chat dataset: the validation split by group, and the on-disk format.

`OUT/{train,val}.safetensors` (flat int32 ids/labels + offsets, position ids when
packed), `{train,val}.index.jsonl` (id, source, group_id, truncated, ...),
`tokenizer/`, `meta.json`, `data_report.json`, written atomically.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.chat import ChatEpisode
from ..data.rows import DataError, coin
from ..engine.rundir import DATA_REPORT
from ..files import atomic_dir
from .encode import Example

FORMAT_VERSION = "prefpipe.chat_tokens/1"


def split_by_group(episodes: list[ChatEpisode], val_frac: float, seed: int) -> tuple[list[ChatEpisode], list[ChatEpisode]]:
    """A group goes to validation when its hash coin is below val_frac: deterministic,
    order-independent, and stable as data is added. Near-duplicates share a group_id
    (ties, SFT + CoH of one pair, arena rows with one prompt), so they never straddle it."""
    if not 0.0 <= val_frac < 1.0:
        raise ValueError(f"val_frac must be in [0, 1), got {val_frac}")
    groups = {ep.group_id for ep in episodes}
    val_groups = {g for g in groups if coin(seed, "val_split", g) < val_frac}
    if val_frac > 0 and not val_groups and len(groups) >= 2:  # small data: at least one group
        val_groups = {min(groups, key=lambda g: coin(seed, "val_split", g))}
    if val_groups == groups and len(groups) >= 2:
        val_groups -= {max(groups, key=lambda g: coin(seed, "val_split", g))}
    train = [ep for ep in episodes if ep.group_id not in val_groups]
    return train, [ep for ep in episodes if ep.group_id in val_groups]


# --- on disk -----------------------------------------------------------------------------------

def _save_split(folder: Path, name: str, examples: list[Example]) -> None:
    from safetensors.numpy import save_file
    lens = np.array([len(e.input_ids) for e in examples], dtype=np.int64)
    tensors = {
        "input_ids": np.array([i for e in examples for i in e.input_ids], dtype=np.int32),
        "labels": np.array([i for e in examples for i in e.labels], dtype=np.int32),
        "offsets": np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
    }
    if any(e.position_ids is not None for e in examples):
        tensors["position_ids"] = np.array([i for e in examples for i in (e.position_ids or range(len(e.input_ids)))],
                                           dtype=np.int32)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    with open(folder / f"{name}.index.jsonl", "w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps({"id": e.id, "source": e.source, "group_id": e.group_id, "truncated": e.truncated,
                                "trimmed": e.trimmed, "n_examples": e.n_examples}, ensure_ascii=False) + "\n")


def save_tokenized(out_dir: str | os.PathLike, splits: dict[str, list[Example]], tokenizer: Any, meta: dict,
                   report: dict, extra_files: dict[str, str] | None = None, overwrite: bool = False) -> Path:
    """Write everything into a temp folder next to `out_dir`, then rename it into place,
    so a crash never leaves a half-written dataset that looks complete."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass --overwrite to replace it)")
    with atomic_dir(out) as tmp:  # src/files.py: whole or absent after a crash, the old one kept until then
        for name, examples in splits.items():
            _save_split(tmp, name, examples)
        tokenizer.save_pretrained(tmp / "tokenizer")
        meta = {**meta, "format": FORMAT_VERSION, "tokenizer_path": "tokenizer",
                "splits": {k: len(v) for k, v in splits.items()}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / DATA_REPORT).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for fname, text in (extra_files or {}).items():
            (tmp / fname).write_text(text, encoding="utf-8")
    return out


@dataclass
class TokenizedData:
    train: list[dict]
    val: list[dict]
    meta: dict
    folder: Path = field(default=Path("."))

    def tokenizer(self):
        """The exact tokenizer the ids were made with (pad token included)."""
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(self.folder / self.meta["tokenizer_path"], trust_remote_code=False)


def _load_split(folder: Path, name: str) -> list[dict]:
    from safetensors.numpy import load_file
    path = folder / f"{name}.safetensors"
    if not path.exists():
        return []
    t = load_file(str(path))
    off = t["offsets"]
    with open(folder / f"{name}.index.jsonl", encoding="utf-8") as f:
        index = [json.loads(line) for line in f]
    rows = []
    for k, info in enumerate(index):
        a, b = int(off[k]), int(off[k + 1])
        row = {"input_ids": t["input_ids"][a:b], "labels": t["labels"][a:b], **info}
        if "position_ids" in t:
            row["position_ids"] = t["position_ids"][a:b]
        rows.append(row)
    return rows


def load_tokenized(folder: str | os.PathLike) -> TokenizedData:
    """Load a dataset written by `prepare_chat`: rows are dicts with input_ids, labels
    (int32 numpy views), position_ids (packed only), id, source, group_id, truncated."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder}: no meta.json (not a prepared chat dataset)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT_VERSION:
        raise DataError(f"{folder}: format {meta.get('format')!r}, expected {FORMAT_VERSION}")
    return TokenizedData(_load_split(folder, "train"), _load_split(folder, "val"), meta, folder)
