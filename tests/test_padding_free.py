"""--padding-free: a training batch packed into one row (position ids restarting per
sequence, no mask) gives the padded batch's logits, with no padding at all."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from src.errors import UsageError
from src.models.tiny import TINY_DECODERS
from src.models import resolve
from src.pref.modeling import backbone as bb
from src.pref.inputs.collate import collate, collate_packed
from src.pref.inputs.encode import PairEncoding
from src.pref.inputs.features import N_FEATURES
from src.pref.modeling.model import PrefModel


def _encoding(lengths_ab, lengths_ba, pad_id, seed=0, vocab=100):
    rng = np.random.default_rng(seed)
    ids = {"ab": [rng.integers(5, vocab, n).tolist() for n in lengths_ab],
           "ba": [rng.integers(5, vocab, n).tolist() for n in lengths_ba]}
    n = len(lengths_ab)
    return PairEncoding("cross", ids, rng.normal(size=(n, 2, N_FEATURES)).astype(np.float32),
                        rng.integers(0, 3, n).astype(np.int64), pad_id)


@pytest.fixture(scope="module", params=list(TINY_DECODERS))
def decoder(request):
    torch.manual_seed(0)
    return bb.load_backbone(request.param, log=None)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_packed_logits_equal_padded_logits_per_row(decoder, pooling):
    model = PrefModel(decoder.model, arch="cross", pooling=pooling, chunks=1).eval()
    enc = _encoding([7, 19, 3, 12], [9, 4, 15, 6], decoder.tokenizer.pad_token_id)
    model.set_style_stats(torch.from_numpy(enc.style))
    rows = [0, 1, 2, 3]
    padded, packed = collate(enc, rows, True), collate_packed(enc, rows, True)
    with torch.no_grad():
        ab, ba = model(padded["input_ids"], padded["attention_mask"], padded["style"], both_orders=True)
        pab, pba = model(packed["input_ids"], None, packed["style"], both_orders=True,
                         position_ids=packed["position_ids"], seq_ends=packed["seq_ends"])
    torch.testing.assert_close(pab, ab, atol=1e-5, rtol=0)
    torch.testing.assert_close(pba, ba, atol=1e-5, rtol=0)
    assert padded["attention_mask"].float().mean() < 0.8  # the padded batch really had padding


def test_without_restarting_positions_the_sequences_would_mix(decoder):
    """The control: one running position range makes the mask causal over the whole row,
    so later sequences see earlier ones and their pooled vectors change."""
    model = PrefModel(decoder.model, arch="cross", pooling="last", chunks=1).eval()
    enc = _encoding([7, 19], [9, 4], decoder.tokenizer.pad_token_id)
    packed = collate_packed(enc, [0, 1], True)
    with torch.no_grad():
        good = model.encode_packed(packed["input_ids"], packed["position_ids"], packed["seq_ends"])
        mixed = model.encode_packed(packed["input_ids"], torch.arange(packed["input_ids"].shape[1])[None],
                                    packed["seq_ends"])
    assert torch.allclose(good[0], mixed[0], atol=1e-6)  # the first sequence sees only itself either way
    assert (good[1:] - mixed[1:]).abs().max() > 1e-3


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.integers(1, 30)), min_size=1, max_size=8),
       st.booleans())
def test_packed_collator_invariants(lengths, both_orders):
    enc = _encoding([a for a, _ in lengths], [b for _, b in lengths], pad_id=0)
    rows = list(range(len(lengths)))[::-1]
    b = collate_packed(enc, rows, both_orders)
    seqs = [enc.ids["ab"][i] for i in rows] + ([enc.ids["ba"][i] for i in rows] if both_orders else [])
    flat, pos, ends = b["input_ids"][0], b["position_ids"][0], b["seq_ends"]
    assert flat.tolist() == [t for s in seqs for t in s]  # no pad token anywhere: padding fraction 0

    assert (ends + 1).tolist() == np.cumsum([len(s) for s in seqs]).tolist()
    starts = [0] + (ends[:-1] + 1).tolist()
    for s, e, seq in zip(starts, ends.tolist(), seqs):  # positions restart at 0 in every sequence
        assert pos[s:e + 1].tolist() == list(range(len(seq)))
        assert flat[e].item() == seq[-1]  # `last` pooling reads this sequence's own last token
    assert b["labels"].tolist() == enc.labels[rows].tolist() and b["style"].shape[0] == len(rows)


def test_task_counts_no_padding_for_packed_batches():
    from src.pref.task import PrefTask
    enc = _encoding([5, 11, 2], [6, 3, 9], pad_id=0)
    cfg = SimpleNamespace(swap_aug=True, padding_free=True, length_chunks=1)
    task = PrefTask.__new__(PrefTask)
    task.cfg, task.train, task.pad_multiple = cfg, enc, 1
    rows, real, padded = task.stats(task.collate([0, 1, 2]))
    assert (rows, real, padded) == (3, 36, 36)
    cfg.padding_free = False
    rows, real, padded = task.stats(task.collate([0, 1, 2]))
    assert real == 36 and padded > real


def test_padding_free_refusals(monkeypatch):
    from transformers import AutoConfig
    llama = AutoConfig.from_pretrained(resolve("tiny-llama"))
    gemma = AutoConfig.from_pretrained(resolve("tiny-gemma2"))
    cfg = SimpleNamespace(padding_free=True, arch="cross", attn="", model="tiny-llama")
    bb.check_padding_free(cfg, llama, "cpu")  # sdpa with this transformers: allowed
    bb.check_padding_free(cfg, gemma, "cpu")  # eager (softcapping): allowed
    cases = [(dict(arch="siamese"), llama, "--arch cross"),
             (dict(attn="flash_attention_2"), llama, "flash-attn"),
             (dict(model="bert"), SimpleNamespace(model_type="bert"), "encoder")]
    for over, config, needle in cases:
        with pytest.raises(UsageError, match=needle) as e:
            bb.check_padding_free(SimpleNamespace(**{**cfg.__dict__, **over}), config, "cpu")
        assert "\n" not in str(e.value)
    monkeypatch.setattr(bb, "packed_masks_supported", lambda: False)
    with pytest.raises(UsageError, match="find_packed_sequence_indices"):
        bb.check_padding_free(cfg, llama, "cpu")
    bb.check_padding_free(SimpleNamespace(**{**cfg.__dict__, "padding_free": False}), llama, "cpu")


def test_task_loss_and_gradients_match_on_packed_batches(decoder):
    """Through PrefTask.loss (what the engine calls): same loss, same head gradients."""
    from src.pref.task import PrefTask
    torch.manual_seed(0)
    model = PrefModel(decoder.model, arch="cross", pooling="last", chunks=1, dropout=0.0).eval()
    enc = _encoding([7, 19, 3], [9, 4, 15], decoder.tokenizer.pad_token_id)
    model.set_style_stats(torch.from_numpy(enc.style))
    task = PrefTask.__new__(PrefTask)
    task.train, task.pad_multiple = enc, 1
    task.cfg = SimpleNamespace(swap_aug=True, padding_free=False, distill_ce=1.0, distill_kl=0.0, distill_cos=0.0,
                               label_smoothing=0.0)
    out = []
    for packed in (False, True):
        task.cfg.padding_free = packed
        model.zero_grad()
        loss, _ = task.loss(model, task.collate([0, 1, 2]))
        loss.backward()
        out.append((loss.detach(), [p.grad.clone() for p in model.head.parameters()]))
    torch.testing.assert_close(out[1][0], out[0][0], atol=1e-5, rtol=0)
    for g_packed, g_padded in zip(out[1][1], out[0][1]):
        torch.testing.assert_close(g_packed, g_padded, atol=1e-5, rtol=1e-4)


def test_train_checks_padding_free_before_any_work():
    from src.pref.config import PrefConfig
    from src.pref.train import check_before_work
    check_before_work(PrefConfig(model="tiny-llama", arch="cross", lora=True, padding_free=True))
    for kw, needle in ((dict(model="tiny-llama", arch="siamese"), "--arch cross"),
                       (dict(model="minilm", arch="cross"), "encoder")):
        with pytest.raises(UsageError, match=needle) as e:
            check_before_work(PrefConfig(padding_free=True, **kw))
        assert "\n" not in str(e.value)
