"""Privileged teacher fields (src/pref/inputs/privileged.py, --privileged): a teacher reads the
model names (and row fields) that its student never sees; the student's ids do not change
whatever the names are, and the teacher's input keeps exact A/B mirror symmetry."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.data.records import PairRecord, swap
from src.errors import UsageError
from src.pref.inputs.encode import encode_pairs

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=20)
words = st.text(alphabet="abcdefgh ijk.?", min_size=0, max_size=120)


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer
    from src.models import resolve
    return AutoTokenizer.from_pretrained(resolve("minilm"))


def _rec(rid, p, a, b, ma, mb, lang):
    return PairRecord(id=rid, prompt=[p], response_a=[a], response_b=[b], model_a=ma, model_b=mb, language=lang,
                      label=0)


@settings(max_examples=25, deadline=None)
@given(words, words, words, names, names, names, names, st.sampled_from(["siamese", "cross"]))
def test_student_ids_do_not_depend_on_privileged_fields(tok, p, a, b, ma, mb, ma2, mb2, arch):
    r1, r2 = _rec("1", p, a, b, ma, mb, "en"), _rec("1", p, a, b, ma2, mb2, "xx")
    kw = dict(arch=arch, max_len=64, prompt_budget=16)
    s1, s2 = encode_pairs([r1], tok, **kw), encode_pairs([r2], tok, **kw)
    assert s1.ids == s2.ids and np.array_equal(s1.style, s2.style)
    t1, t2 = (encode_pairs([r], tok, privileged=["model", "language"], **kw) for r in (r1, r2))
    assert np.array_equal(t1.style, s1.style)  # style features come from the records as read
    if (ma, mb) != (ma2, mb2):
        assert t1.ids != t2.ids  # the teacher does read them


@settings(max_examples=25, deadline=None)
@given(words, words, words, names, names, st.sampled_from(["siamese", "cross"]))
def test_teacher_input_mirrors_exactly(tok, p, a, b, ma, mb, arch):
    r = _rec("1", p, a, b, ma, mb, "en")
    enc = encode_pairs([r, swap(r)], tok, arch=arch, max_len=96, prompt_budget=16, privileged=["model", "language"])
    if arch == "siamese":
        assert enc.ids["a"][0] == enc.ids["b"][1] and enc.ids["b"][0] == enc.ids["a"][1]
    else:
        assert enc.ids["ba"][0] == enc.ids["ab"][1]


def test_teacher_text_names_each_sides_model(tok):
    r = _rec("1", "question?", "answer one", "answer two", "zebramodel", "quokkamodel", "German")
    enc = encode_pairs([r], tok, arch="siamese", max_len=96, prompt_budget=32, privileged=["model", "language"])
    a, b = tok.decode(enc.ids["a"][0]), tok.decode(enc.ids["b"][0])
    assert "zebramodel" in a and "quokkamodel" not in a and "quokkamodel" in b and "german" in a
    with pytest.raises(UsageError, match="--privileged nosuch"):
        encode_pairs([r], tok, arch="siamese", max_len=64, prompt_budget=16, privileged=["nosuch"])


@pytest.mark.slow
def test_student_of_a_privileged_teacher_never_sees_the_names(tmp_path, monkeypatch):
    """A teacher trained with --privileged model labels a student's rows; every sequence the
    student's training encodes is free of the model names, the teacher's are not."""
    import src.pref.train as train_mod
    from src.data.synthetic import make_rows, write_csv
    from src.pref.config import PrefConfig
    df = make_rows(80, seed=3)
    df["model_a"] = [f"zebra{i % 3}" for i in range(len(df))]
    df["model_b"] = [f"quokka{i % 3}" for i in range(len(df))]
    data = tmp_path / "train.csv"
    write_csv(df, data)
    seen: dict[str, list[str]] = {}
    real = train_mod.encode_pairs

    def spy(records, tokenizer, **kw):
        enc = real(records, tokenizer, **kw)
        key = "teacher" if kw.get("privileged") else "student"
        seen.setdefault(key, []).extend(tokenizer.decode(s) for v in enc.ids.values() for s in v)
        return enc
    monkeypatch.setattr(train_mod, "encode_pairs", spy)
    common = dict(model="minilm", data=str(data), epochs=1, max_len=48, prompt_budget=8, batch_size=16,
                  progress=False, seed=0)
    train_mod.run(PrefConfig(out=str(tmp_path / "teacher"), privileged=["model"], **common))
    train_mod.run(PrefConfig(out=str(tmp_path / "student"), teacher=str(tmp_path / "teacher"),
                             distill_kl=1.0, **common))
    assert any("zebra" in t for t in seen["teacher"])
    assert seen["student"] and not any("zebra" in t or "quokka" in t for t in seen["student"])
    import json
    teach = (tmp_path / "student" / "teacher_predictions.csv").read_text().splitlines()
    n_train = json.loads((tmp_path / "student" / "metrics.json").read_text())["n_train_distinct"]
    assert len(teach) == n_train + 1  # the privileged teacher's probabilities for every training row
