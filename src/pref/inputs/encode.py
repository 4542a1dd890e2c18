"""Pair records -> token ids: the one place the classifier's input is built,
for training, validation and prediction alike.

    enc = encode_pairs(records, tokenizer, arch="siamese", max_len=256, prompt_budget=64)
    enc.ids["a"][i], enc.ids["b"][i]     # siamese: one sequence per side
    enc.ids["ab"][i], enc.ids["ba"][i]   # cross: prompt + A + B, and the B-first order

Layout per side (siamese): [CLS] prompt: p1 response: r1 ... [SEP]; cross:
[CLS] prompt [SEP] answer a: A [SEP] answer b: B [SEP].

Every turn is tokenised once, without special tokens, in one batched call to
the fast tokenizer; sides are then assembled from those pieces under a token
budget. Budgets:
  * each prompt turn keeps at most `prompt_budget` tokens (its end: the question
    usually closes the turn), each response turn at most what is left;
  * when the conversation does not fit, the LAST turns are kept (left
    truncation of history) rather than cutting the end of the final answer.

Why assembled by hand: the tokenizer's own truncation cuts one flat string and
cannot keep the last turns of a multi-turn chat or budget segments separately.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...data.records import PairRecord
from ...data.targets import targets_matrix, teachers_matrix
from .features import features_matrix
from .truncate import CUT_MARK, clip_chars, head_tail, proportional_budgets

PROMPT_MARK, RESPONSE_MARK = "prompt:", "response:"  # plain words: every vocab has them


@dataclass
class Budget:
    max_len: int = 256
    prompt_budget: int = 64
    keep: str = "last"  # "last": keep the last turns when a side overflows; "first": the first; "head_tail"


class TurnTokenizer:
    """Caches ids of markers and special tokens for one tokenizer."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        self.prompt_mark, self.response_mark = enc(PROMPT_MARK), enc(RESPONSE_MARK)
        self.a_mark, self.b_mark = enc("answer a:"), enc("answer b:")
        self.cut_mark = enc(CUT_MARK)
        self.cls = [tokenizer.cls_token_id] if tokenizer.cls_token_id is not None else (
            [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else [])
        sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        self.sep = [sep] if sep is not None else []

    def encode_many(self, texts: list[str], max_chars: int, keep_end: list[bool | None]) -> list[list[int]]:
        # Characters beyond ~max_chars cannot survive the token budget anyway;
        # cutting first keeps tokenisation of huge cells cheap. Prompts keep
        # their end (the question), responses their start, head_tail (None) both. verbose=False: the ids are
        # cut to the segment budgets afterwards, so the tokenizer's "longer than the
        # model's maximum" warning is noise here.
        clipped = [clip_chars(t, max_chars) if end is None else t[-max_chars:] if end else t[:max_chars]
                   for t, end in zip(texts, keep_end)]
        return self.tok(clipped, add_special_tokens=False, verbose=False)["input_ids"] if clipped else []


def side_sequence(prompt: list[list[int]], resp: list[list[int]], tt: TurnTokenizer, b: Budget) -> list[int]:
    """[CLS] prompt: p1 response: r1 ... [SEP], within b.max_len, by the keep policy."""
    if b.keep == "head_tail":
        return side_head_tail(prompt, resp, tt, b)
    room = b.max_len - len(tt.cls) - len(tt.sep)
    n = max(len(prompt), len(resp))
    pieces: list[list[int]] = []
    order = range(n - 1, -1, -1) if b.keep == "last" else range(n)
    for i in order:
        p = prompt[i][-b.prompt_budget:] if i < len(prompt) else []
        r = resp[i] if i < len(resp) else []
        turn = tt.prompt_mark + p + tt.response_mark
        if len(turn) >= room:  # not even the question fits: keep its end
            if not pieces:
                pieces.append(turn[-room:])
            break
        turn = turn + r[:room - len(turn)]
        pieces.append(turn)
        room -= len(turn)
        if room <= len(tt.prompt_mark) + len(tt.response_mark):
            break
    if b.keep == "last":
        pieces.reverse()
    return tt.cls + [t for piece in pieces for t in piece] + tt.sep


def side_head_tail(prompt: list[list[int]], resp: list[list[int]], tt: TurnTokenizer, b: Budget) -> list[int]:
    """head_tail for one side: each prompt turn first capped at prompt_budget (head+tail), then every
    turn's prompt and response share what the markers leave, in proportion to their lengths. Turns
    whose markers alone would leave under 4 tokens per segment are dropped from the front (oldest)."""
    n = max(len(prompt), len(resp))
    marks = len(tt.prompt_mark) + len(tt.response_mark)
    room = b.max_len - len(tt.cls) - len(tt.sep)
    first = 0
    while first < n - 1 and room - (n - first) * marks < 8 * (n - first):
        first += 1
    segs: list[list[int]] = []
    for i in range(first, n):
        p = prompt[i] if i < len(prompt) else []
        segs += [head_tail(p, b.prompt_budget, tt.cut_mark), resp[i] if i < len(resp) else []]
    room -= (n - first) * marks
    if room <= 0:  # not even one turn's markers fit: the last turn's markers, cut
        return tt.cls + (tt.prompt_mark + tt.response_mark)[:b.max_len - len(tt.cls) - len(tt.sep)] + tt.sep
    cut = [head_tail(s, k, tt.cut_mark) for s, k in zip(segs, proportional_budgets([len(s) for s in segs], room))]
    body = [t for j in range(0, len(cut), 2) for t in tt.prompt_mark + cut[j] + tt.response_mark + cut[j + 1]]
    return tt.cls + body + tt.sep


def cross_sequence(prompt: list[list[int]], resp_a: list[list[int]], resp_b: list[list[int]], tt: TurnTokenizer,
                   b: Budget) -> list[int]:
    """[CLS] prompt [SEP] answer a: A [SEP] answer b: B [SEP]; each segment keeps its
    last tokens (last turns) within its budget; A and B share what the prompt leaves."""
    flat = lambda turns: [t for turn in turns for t in turn]  # noqa: E731
    fixed = len(tt.cls) + 3 * len(tt.sep) + len(tt.a_mark) + len(tt.b_mark)
    ra, rb = flat(resp_a), flat(resp_b)
    if b.keep == "head_tail":  # prompt capped, then all three share the room by length: symmetric in A/B
        p = head_tail(flat(prompt), min(b.prompt_budget, b.max_len - fixed), tt.cut_mark)
        kp, ka, kb = proportional_budgets([len(p), len(ra), len(rb)], b.max_len - fixed)
        p, ra, rb = (head_tail(x, k, tt.cut_mark) for x, k in ((p, kp), (ra, ka), (rb, kb)))
        return tt.cls + p + tt.sep + tt.a_mark + ra + tt.sep + tt.b_mark + rb + tt.sep

    def cut(x: list[int], k: int) -> list[int]:
        if k <= 0:
            return []  # (x[-0:] would be the whole list)
        return (x[-k:] if b.keep == "last" else x[:k]) if len(x) > k else x
    p = cut(flat(prompt), min(b.prompt_budget, b.max_len - fixed))
    each = (b.max_len - fixed - len(p)) // 2
    ra_c, rb_c = cut(ra, each), cut(rb, each)
    # give budget one side does not use to the other
    spare = b.max_len - fixed - len(p) - len(ra_c) - len(rb_c)
    if spare > 0:
        ra_c = cut(ra, len(ra_c) + spare) if len(ra) > len(ra_c) else ra_c
        spare = b.max_len - fixed - len(p) - len(ra_c) - len(rb_c)
        rb_c = cut(rb, len(rb_c) + spare) if len(rb) > len(rb_c) else rb_c
    return tt.cls + p + tt.sep + tt.a_mark + ra_c + tt.sep + tt.b_mark + rb_c + tt.sep


def encode_sequences(records: list[PairRecord], tokenizer, budget: Budget, arch: str = "siamese",
                     *, swapped_too: bool = False) -> dict[str, list[list[int]]]:
    """ids per record. siamese: {"a": [...], "b": [...]}; cross: {"ab": [...]} and,
    with swapped_too, {"ba": [...]} (the B-first order, for swap augmentation/TTA)."""
    tt = TurnTokenizer(tokenizer)
    max_chars = budget.max_len * 12
    texts, keep_end, spans = [], [], []
    for r in records:
        start = len(texts)
        texts += r.prompt + r.response_a + r.response_b
        ends = None if budget.keep == "head_tail" else True  # head_tail: both ends of every cell
        keep_end += [ends] * len(r.prompt) + [None if ends is None else False] * (len(r.response_a) + len(r.response_b))
        spans.append((start, len(r.prompt), len(r.response_a), len(r.response_b)))
    ids = tt.encode_many(texts, max_chars, keep_end)
    out: dict[str, list[list[int]]] = {"a": [], "b": []} if arch == "siamese" else {"ab": [], "ba": []}
    for start, np_, na, nb in spans:
        p = ids[start:start + np_]
        a = ids[start + np_:start + np_ + na]
        b = ids[start + np_ + na:start + np_ + na + nb]
        if arch == "siamese":
            out["a"].append(side_sequence(p, a, tt, budget))
            out["b"].append(side_sequence(p, b, tt, budget))
        else:
            out["ab"].append(cross_sequence(p, a, b, tt, budget))
            if swapped_too:
                out["ba"].append(cross_sequence(p, b, a, tt, budget))
    if arch != "siamese" and not swapped_too:
        del out["ba"]
    return out


@dataclass
class PairEncoding:
    """Token ids, style features and labels of n pairs, as the model reads them."""
    arch: str
    ids: dict[str, list[list[int]]]  # siamese: a, b; cross: ab (+ ba)
    style: np.ndarray  # (n, 2, F)
    labels: np.ndarray  # (n,), -1 where unknown or soft
    pad_id: int
    targets: np.ndarray | None = None  # (n, 3) training distributions (one-hot or soft); None: from labels
    teachers: np.ndarray | None = None  # (n, 3) teacher probabilities, NaN rows without a teacher

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self) -> np.ndarray:
        """The padded width a row needs (both sides of a siamese pair share a width in training)."""
        if self.arch == "siamese":
            return np.array([max(len(a), len(b)) for a, b in zip(self.ids["a"], self.ids["b"])], dtype=np.int64)
        return np.array([max(len(x) for x in seqs) for seqs in zip(*self.ids.values())], dtype=np.int64)


def encode_pairs(records: list[PairRecord], tokenizer, *, arch: str, max_len: int, prompt_budget: int,
                 keep: str = "last", both_orders: bool = True, judge: bool = False,
                 privileged: Sequence[str] = ()) -> PairEncoding:
    """The classifier's input for `records`, built the same way in training and prediction.
    `judge`: the judge prompt even without a chat template (--head lm needs its question).
    `privileged`: fields only a teacher run reads (inputs/privileged.py); a student's is empty."""
    style = features_matrix(records)  # from the records as read, privileged fields or not
    if privileged:
        from .privileged import with_privileged
        text_records = [with_privileged(r, privileged) for r in records]
    else:
        text_records = records
    if arch == "cross" and (judge or getattr(tokenizer, "chat_template", None)):
        # decoders with a chat template read one judge turn (pref/inputs/judge.py); prompt_budget caps each prompt turn
        from .judge import JudgeBudget, JudgeEncoder
        ids = JudgeEncoder(tokenizer).encode_records(text_records, JudgeBudget(max_len, prompt_turn_cap=prompt_budget,
                                                                          keep=keep), both_orders=both_orders)
    else:
        ids = encode_sequences(text_records, tokenizer, Budget(max_len, prompt_budget, keep), arch, swapped_too=both_orders)
    labels = np.array([-1 if r.label is None else r.label for r in records], dtype=np.int64)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    labelled = [r for r in records if r.label is not None or r.target is not None]
    targets = targets_matrix(records).astype(np.float32) if len(labelled) == len(records) and records else None
    teachers = teachers_matrix(records).astype(np.float32) if any(r.teacher is not None for r in records) else None
    return PairEncoding(arch, ids, style, labels, pad, targets, teachers)
