"""Privileged teacher fields (`--privileged model,language`): columns a TEACHER run reads
that its students never see.

WSDM Cup 2025's 1st place gave its fold teachers the names of the two models (which
model wrote a response predicts a lot about the vote) and distilled them into a
student that reads the conversation alone, as the test rows require. Here a run
trained with `--privileged model` reads the names in training and in prediction
(its teacher predictions for `--teacher`), through the same `encode_pairs`; a
student run's config has no privileged fields, so its ids are built from the
conversation alone (tests/test_privileged.py holds the student's ids unchanged
whatever the model names are).

Fields: `model` puts each side's model name (model_a / model_b) before that side's
response, so the swap that exchanges responses exchanges the names with them (A/B
mirror symmetry holds); `language` and `source` (or any extra column of the data
file) go before the prompt, the same for both sides. Style features are computed
from the records as read, not from the text with the fields added.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from ...data.records import PairRecord
from ...errors import UsageError

SIDE_FIELDS = ("model",)  # per side: model_a / model_b
ROW_FIELDS = ("language", "source")  # plus any extra column of the file


def _row_value(r: PairRecord, name: str) -> str | None:
    if name in ROW_FIELDS:
        return getattr(r, name)
    if name in r.extra:
        return r.extra[name]
    raise UsageError(f"--privileged {name}: row {r.id} has no such field (fields: model, language, source, "
                     f"or a column of the data file: {', '.join(sorted(r.extra)) or 'none'})")


def with_privileged(r: PairRecord, fields: Sequence[str]) -> PairRecord:
    """The record with the privileged fields written into its text (what the teacher reads)."""
    if not fields:
        return r
    prompt, a, b = list(r.prompt) or [""], list(r.response_a) or [""], list(r.response_b) or [""]
    row = [f"{name}: {_row_value(r, name) or 'unknown'}" for name in fields if name not in SIDE_FIELDS]
    if row:
        prompt[0] = "; ".join(row) + "\n" + prompt[0]
    if "model" in fields:
        a[0] = f"model: {r.model_a or 'unknown'}\n{a[0]}"
        b[0] = f"model: {r.model_b or 'unknown'}\n{b[0]}"
    return dataclasses.replace(r, prompt=prompt, response_a=a, response_b=b)
