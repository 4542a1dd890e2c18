"""The judge sequence of `--arch cross` on a decoder: one chat turn asking which response is better.

    <template prefix> Which response better answers the user? ... <prompt> ... </prompt>
    <response_a> ... </response_a> <response_b> ... </response_b> Which is better: A, B, or tie? Answer with one word. <template suffix or "Answer:">

rendered through the tokenizer's chat template (as one user message with the
generation prompt, so the last token, the one `last` pooling reads, is where the
model would start its verdict). Without a chat template the same text is used plain.

Budgets are per segment, in tokens: the prompt, response A and response B get shares of
what the fixed text leaves (default 20/40/40); each prompt turn keeps at most
`prompt_turn_cap` tokens (its end: the question closes a turn); a segment that overflows
keeps its LAST turns (the final exchange is what the vote was about), and the turn at the
cut keeps its start (a response) or its end (a prompt). Budget the prompt leaves unused
goes to the responses and one response's unused budget to the other, A and B alike, so the B-first sequence is exactly the A-first
one with the two response segments exchanged (swap TTA averages two mirror images).

Why by hand: the tokenizer's truncation cuts one flat string; it cannot budget
segments or keep the last turns. Every piece is tokenised once, in one batched call.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...data.records import PairRecord
from ...errors import UsageError
from .truncate import CUT_MARK, clip_chars, head_tail, proportional_budgets

INSTRUCTION = ("Which response better answers the user's conversation below? "
               "Judge helpfulness, correctness and style.\n")
OPEN = {"p": "<prompt>\n", "a": "\n</prompt>\n<response_a>\n", "b": "\n</response_a>\n<response_b>\n"}
QUESTION = "\n</response_b>\nWhich is better: A, B, or tie? Answer with one word."
# Without a chat template the plain text ends on this cue, so the next token is the
# answer (--head lm reads the logits of "A" / "B" / "tie" there: modeling/lm_head.py).
PLAIN_ANSWER_CUE = "\nAnswer:"
TURN_SEP = "\n---\n"
_SLOT = "\x00JUDGE\x00"


@dataclass
class JudgeBudget:
    max_len: int = 1024
    shares: tuple[float, float, float] = (0.2, 0.4, 0.4)  # prompt, A, B
    prompt_turn_cap: int = 256
    keep: str = "last"


def template_parts(tokenizer) -> tuple[str, str]:
    """(text before, text after) the user message in the chat template (with the
    generation prompt); ("", PLAIN_ANSWER_CUE) when the tokenizer has no template."""
    if not getattr(tokenizer, "chat_template", None):
        return "", PLAIN_ANSWER_CUE
    text = tokenizer.apply_chat_template([{"role": "user", "content": _SLOT}], tokenize=False,
                                         add_generation_prompt=True)
    before, after = text.split(_SLOT)
    return before, after


def answer_context(tokenizer) -> str:
    """The text the judge sequence ends with (where the verdict's first token follows)."""
    return QUESTION + template_parts(tokenizer)[1]


class JudgeEncoder:
    """Caches the fixed pieces' ids for one tokenizer."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        enc = self._enc
        before, after = template_parts(tokenizer)
        bos = [] if not tokenizer.bos_token or tokenizer.bos_token in before else (
            [tokenizer.bos_token_id] if _adds_bos(tokenizer) else [])
        self.head = bos + enc(before + INSTRUCTION + OPEN["p"])
        self.mid_a, self.mid_b = enc(OPEN["a"]), enc(OPEN["b"])
        self.tail = enc(QUESTION + after)
        self.sep = enc(TURN_SEP)
        self.cut_mark = enc(CUT_MARK)
        self.fixed = len(self.head) + len(self.mid_a) + len(self.mid_b) + len(self.tail)

    def _enc(self, s: str) -> list[int]:
        return self.tok(s, add_special_tokens=False)["input_ids"] if s else []

    def room(self, budget: JudgeBudget) -> int:
        r = budget.max_len - self.fixed
        if r < 8:
            raise UsageError(f"--max-len {budget.max_len} leaves {r} tokens for the conversation after the "
                             f"judge template ({self.fixed} tokens): the minimum is --max-len {self.fixed + 8}, "
                             f"and a conversation needs a few hundred more (e.g. --max-len {self.fixed + 256})")
        return r

    def assemble(self, p: list[list[int]], a: list[list[int]], b: list[list[int]], budget: JudgeBudget) -> list[int]:
        room = self.room(budget)
        if budget.keep == "head_tail":  # shares in proportion to the segments' lengths (truncate.py)
            p_ids = head_tail(self._flat([head_tail(t, budget.prompt_turn_cap, self.cut_mark) for t in p]),
                              room, self.cut_mark)
            segs = [p_ids, self._flat(a), self._flat(b)]
            kp, ka, kb = proportional_budgets([len(x) for x in segs], room)
            cp, ca, cb = (head_tail(x, k, self.cut_mark) for x, k in zip(segs, (kp, ka, kb)))
            return self.head + cp + self.mid_a + ca + self.mid_b + cb + self.tail
        sp, sa, sb = budget.shares
        tot = sp + sa + sb
        p_ids = self._segment(p, int(room * sp / tot), prompt=True, budget=budget)
        left = room - len(p_ids)
        each = left // 2
        a_len, b_len = self._seg_len(a, budget), self._seg_len(b, budget)
        # a response shorter than its half gives the rest to the other; A and B treated alike
        ka = min(a_len, max(each, left - min(b_len, each)))
        kb = min(b_len, max(each, left - min(a_len, each)))
        if ka + kb > left:  # both long: equal halves
            ka = kb = each
        return (self.head + p_ids + self.mid_a + self._segment(a, ka, False, budget) + self.mid_b
                + self._segment(b, kb, False, budget) + self.tail)

    def _flat(self, turns: list[list[int]]) -> list[int]:
        """Turns joined by the turn separator, as `_segment` joins them."""
        out: list[int] = []
        for j, t in enumerate(turns):
            out += (self.sep if j else []) + t
        return out

    def _seg_len(self, turns: list[list[int]], budget: JudgeBudget) -> int:
        return sum(len(t) for t in turns) + len(self.sep) * max(len(turns) - 1, 0)

    def _segment(self, turns: list[list[int]], k: int, prompt: bool, budget: JudgeBudget) -> list[int]:
        """At most k tokens of these turns: the last turns by default (`keep="last"`)."""
        if k <= 0 or not turns:
            return []
        if prompt:
            turns = [t[-budget.prompt_turn_cap:] for t in turns]
        order = list(range(len(turns)))[::-1] if budget.keep == "last" else list(range(len(turns)))
        pieces: list[list[int]] = []
        used = 0
        for j, i in enumerate(order):
            sep = self.sep if j else []
            t = turns[i]
            if used + len(sep) + len(t) <= k:
                pieces.append(t + sep if budget.keep == "last" else sep + t)
                used += len(sep) + len(t)
                continue
            fit = k - used - len(sep)
            if fit > 0:  # the turn at the cut: a prompt keeps its end, a response its start
                cut = t[-fit:] if prompt else t[:fit]
                pieces.append(cut + sep if budget.keep == "last" else sep + cut)
            break
        if budget.keep == "last":
            pieces.reverse()
        return [x for piece in pieces for x in piece]

    def encode_records(self, records: list[PairRecord], budget: JudgeBudget, *,
                       both_orders: bool = True) -> dict[str, list[list[int]]]:
        """{"ab": ids per record, "ba": the B-first mirror (when both_orders)}."""
        texts, spans = [], []
        max_chars = budget.max_len * 12  # what cannot survive the token budget is cut before tokenising
        for r in records:
            spans.append((len(texts), len(r.prompt), len(r.response_a), len(r.response_b)))
            if budget.keep == "head_tail":
                texts += [clip_chars(t, max_chars) for t in r.prompt + r.response_a + r.response_b]
            else:
                texts += [t[-max_chars:] for t in r.prompt] + [t[:max_chars] for t in r.response_a + r.response_b]
        ids = self.tok(texts, add_special_tokens=False)["input_ids"] if texts else []
        out: dict[str, list[list[int]]] = {"ab": []}
        if both_orders:
            out["ba"] = []
        for s, n_p, n_a, n_b in spans:
            p, a, b = ids[s:s + n_p], ids[s + n_p:s + n_p + n_a], ids[s + n_p + n_a:s + n_p + n_a + n_b]
            out["ab"].append(self.assemble(p, a, b, budget))
            if both_orders:
                out["ba"].append(self.assemble(p, b, a, budget))
        return out


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("x")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id
