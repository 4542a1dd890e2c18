"""Style features of each response: verbosity and formatting carry much of the
human-preference signal in arena data (longer, structured answers win more
often), and an encoder with a 256-token window cannot count a 2,000-word answer.

Per side: log-counts of words, characters, lines, turns, markdown headers, list
items, code blocks, bold spans, and refusal markers. The head sees
[f_a, f_b, f_a - f_b]; swapping sides swaps f_a and f_b and negates the difference.
"""
from __future__ import annotations

import re

import numpy as np

from ...data.records import PairRecord

FEATURE_NAMES = ("words", "chars", "lines", "turns", "headers", "list_items", "code_blocks", "bold", "refusals",
                 "empty_turns")
_HEADER = re.compile(r"^\s{0,3}#{1,6}\s", re.M)
_LIST = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+", re.M)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*")
_REFUSAL = re.compile(r"\b(?:I'?m sorry|I apologi[sz]e|I can(?:no|')t (?:help|assist|provide)|as an AI"
                      r"|I am unable|I'm unable|I cannot)\b", re.I)


def side_features(turns: list[str]) -> np.ndarray:
    text = "\n".join(turns)
    counts = [
        len(text.split()), len(text), text.count("\n") + 1 if text else 0, len(turns),
        len(_HEADER.findall(text)), len(_LIST.findall(text)), text.count("```") // 2,
        len(_BOLD.findall(text)), len(_REFUSAL.findall(text)), sum(1 for t in turns if not t.strip()),
    ]
    return np.log1p(np.asarray(counts, dtype=np.float32))


def pair_features(record: PairRecord) -> np.ndarray:
    """[f_a, f_b]: the model builds the difference itself, so a swap is a plain exchange."""
    return np.stack([side_features(record.response_a), side_features(record.response_b)])


def features_matrix(records: list[PairRecord]) -> np.ndarray:
    """(n, 2, F) float32."""
    if not records:
        return np.zeros((0, 2, len(FEATURE_NAMES)), dtype=np.float32)
    return np.stack([pair_features(r) for r in records]).astype(np.float32)


N_FEATURES = len(FEATURE_NAMES)
