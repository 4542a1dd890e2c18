"""The pairwise record that every stage reads, and the A/B swap.

Labels follow the Kaggle column order: 0 = model A wins, 1 = model B wins,
2 = tie. A row holds either a hard `label` (a human vote) or a soft `target`
(three probabilities: a pseudo-label, an ensemble, a judge), never both, and
optionally a `teacher`'s probabilities for distillation (`data.targets`). The swap is the single place that knows how sides and labels move
together; training augmentation and prediction averaging both call it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

LABEL_NAMES = ("winner_model_a", "winner_model_b", "winner_tie")
A_WINS, B_WINS, TIE = 0, 1, 2
SWAP_LABEL = (B_WINS, A_WINS, TIE)
SWAP_COLUMNS = [1, 0, 2]  # probability columns after swapping sides


@dataclass
class PairRecord:
    id: str
    prompt: list[str]
    response_a: list[str]
    response_b: list[str]
    label: int | None = None
    model_a: str | None = None
    model_b: str | None = None
    source: str | None = None
    extra: dict = field(default_factory=dict)  # e.g. true probabilities of synthetic rows
    target: tuple[float, float, float] | None = None  # soft label (label is None then)
    teacher: tuple[float, float, float] | None = None  # teacher probabilities (distillation)
    language: str | None = None  # the row's language column (WSDM); per-language metrics (data.tasks)

    @property
    def n_turns(self) -> int:
        return max(len(self.prompt), len(self.response_a), len(self.response_b))


def is_empty_response(turns: list[str]) -> bool:
    """`[null]`, `[]`, `[""]` or only blank turns: nothing was answered."""
    # t.strip() would copy every answer; isspace() stops at the first visible character
    return not any(t and not t.isspace() for t in turns)


def same_responses(record: PairRecord) -> bool:
    """Both sides say the same thing (whitespace aside): the vote can only be taste or noise,
    so such rows lean to a tie; counted in the data report."""
    a, b = record.response_a, record.response_b
    return len(a) == len(b) and all(map(_same_words, a, b))


_HEAD_CHARS = 64


def _same_words(t: str, u: str) -> bool:
    """t.split() == u.split(), i.e. equal with runs of whitespace made one space. Splitting
    every answer made the data report cost more than reading the file, and two different
    answers nearly always differ in their first words: the whole words of each text's first
    _HEAD_CHARS characters are a prefix of its words, so where those prefixes disagree the texts do."""
    if t == u:
        return True
    first_t, first_u = t[:1], u[:1]
    if first_t != first_u and not first_t.isspace() and not first_u.isspace():
        return False  # their first visible characters differ (or one text is empty)
    head_t, head_u = t[:_HEAD_CHARS].split()[:-1], u[:_HEAD_CHARS].split()[:-1]  # the last may be cut
    k = min(len(head_t), len(head_u))
    return head_t[:k] == head_u[:k] and t.split() == u.split()


def response_counts(records: list[PairRecord]) -> dict[str, int]:
    """The data report's count of empty responses per side and of identical A/B responses."""
    return {
        "empty_a": sum(is_empty_response(r.response_a) for r in records),
        "empty_b": sum(is_empty_response(r.response_b) for r in records),
        "identical": sum(same_responses(r) for r in records),
    }


def _swap_dist(p: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
    return None if p is None else (p[1], p[0], p[2])


def swap(record: PairRecord) -> PairRecord:
    """Exchange sides A and B; the label follows (A wins <-> B wins, tie stays), and so
    do a soft target and teacher probabilities."""
    return dataclasses.replace(
        record,
        response_a=record.response_b,
        response_b=record.response_a,
        model_a=record.model_b,
        model_b=record.model_a,
        label=None if record.label is None else SWAP_LABEL[record.label],
        target=_swap_dist(record.target),
        teacher=_swap_dist(record.teacher),
    )


def swap_probs(probs: np.ndarray) -> np.ndarray:
    """Probabilities predicted for (B, A) expressed in the (A, B) order."""
    return np.asarray(probs)[..., SWAP_COLUMNS]
