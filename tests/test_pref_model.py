"""The classifier's model-level invariants: head input layout, swap symmetry, budgets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from src.data.records import PairRecord, swap, swap_probs
from src.pref.inputs.features import N_FEATURES, pair_features
from src.pref.inference.calibration import average_probs
from src.pref.inputs.encode import Budget, encode_pairs, encode_sequences
from src.pref.modeling.model import PrefModel
from src.pref.inference.predict import predict_logits
from src.pref.registry import load_encoder
from tests.pref_helpers import make_tiny_encoder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = make_tiny_encoder(tmp_path_factory.mktemp("enc"))
    return load_encoder(str(folder))


def _records(n: int, seed: int = 0) -> list[PairRecord]:
    rng = np.random.default_rng(seed)
    words = "the cat sat on a mat while python lists append items sorted quickly # - * ``` sorry".split()
    say = lambda k: " ".join(rng.choice(words, size=k))  # noqa: E731
    out = []
    for i in range(n):
        t = int(rng.integers(1, 4))
        out.append(PairRecord(str(i), [say(int(rng.integers(1, 20))) for _ in range(t)],
                              [say(int(rng.integers(1, 80))) for _ in range(t)],
                              [say(int(rng.integers(1, 80))) for _ in range(t)], label=int(rng.integers(3))))
    return out


@pytest.mark.parametrize("arch", ["siamese", "cross"])
def test_swap_averaged_probabilities_are_exactly_symmetric(tiny, arch):
    encoder, tok = tiny
    torch.manual_seed(0)
    model = PrefModel(encoder, arch=arch, dropout=0.0).eval()
    recs = _records(24)
    kw = dict(arch=arch, max_len=64, prompt_budget=16)
    enc, enc_sw = encode_pairs(recs, tok, **kw), encode_pairs([swap(r) for r in recs], tok, **kw)
    logits = lambda e, **kw: (lambda o: (o.ab, o.ba))(predict_logits(model, e, device="cpu", **kw))  # noqa: E731
    p = average_probs(*logits(enc))
    p_sw = average_probs(*logits(enc_sw))
    np.testing.assert_allclose(p, swap_probs(p_sw), atol=1e-6)
    # and the raw single-order head is NOT symmetric, so the averaging is what does it
    raw = average_probs(logits(enc, both_orders=False)[0], None)
    raw_sw = average_probs(logits(enc_sw, both_orders=False)[0], None)
    assert np.abs(raw - swap_probs(raw_sw)).max() > 1e-4


def test_head_input_is_a_b_difference_product_and_style(tiny):
    encoder, tok = tiny
    model = PrefModel(encoder, arch="siamese", dropout=0.0).eval()
    h = encoder.config.hidden_size
    assert model.head_in == 4 * h + 3 * N_FEATURES
    seen = {}
    def grab(module, args, out):
        seen["x"] = args[0]  # returns None: a forward hook that returns a value replaces the output
    model.head[1].register_forward_hook(grab)
    recs = _records(3)
    enc = encode_pairs(recs, tok, arch="siamese", max_len=48, prompt_budget=8)
    from src.pref.inputs.collate import collate
    batch = collate(enc, [0, 1, 2], both_orders=False)
    with torch.no_grad():
        model(batch["input_ids"], batch["attention_mask"], batch["style"], both_orders=False)
        pooled = model.encode(batch["input_ids"], batch["attention_mask"])
    a, b = pooled[:3], pooled[3:]
    fa = (batch["style"][:, 0] - model.style_mean) / model.style_std
    fb = (batch["style"][:, 1] - model.style_mean) / model.style_std
    expected = torch.cat([a, b, a - b, a * b, fa, fb, fa - fb], dim=-1)
    torch.testing.assert_close(seen["x"], expected)


def test_mean_pooling_ignores_padding(tiny):
    encoder, tok = tiny
    model = PrefModel(encoder).eval()
    ids = torch.tensor([[101, 2000, 2001, 102]])
    padded = torch.tensor([[101, 2000, 2001, 102, 0, 0, 0]])
    with torch.no_grad():
        v1 = model.encode(ids, torch.ones_like(ids))
        v2 = model.encode(padded, (padded != 0).long())
    torch.testing.assert_close(v1, v2, atol=1e-5, rtol=1e-5)


def test_style_features_swap_with_sides():
    r = _records(1)[0]
    np.testing.assert_array_equal(pair_features(swap(r)), pair_features(r)[::-1])


turn = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x24F), max_size=300)


@settings(max_examples=40, deadline=None)
@given(prompt=st.lists(turn, min_size=1, max_size=5), resp=st.lists(turn, min_size=0, max_size=5),
       max_len=st.integers(16, 96), keep=st.sampled_from(["last", "first"]))
def test_rendered_sides_respect_the_budget(tiny, prompt, resp, max_len, keep):
    _, tok = tiny
    rec = PairRecord("x", prompt, resp, resp[::-1])
    for arch in ("siamese", "cross"):
        out = encode_sequences([rec], tok, Budget(max_len, 8, keep), arch, swapped_too=True)
        for seqs in out.values():
            assert len(seqs[0]) <= max_len
            assert seqs[0][0] == tok.cls_token_id and seqs[0][-1] == tok.sep_token_id


def test_keep_last_keeps_the_final_turn_and_drops_early_history(tiny):
    _, tok = tiny
    prompt = [f"question number {w}" for w in ("alpha", "beta", "gamma", "delta")]
    resp = [("answer " + w + " ") * 10 for w in ("alpha", "beta", "gamma", "delta")]
    rec = PairRecord("x", prompt, resp, resp)
    last = tok.decode(encode_sequences([rec], tok, Budget(48, 8, "last"))["a"][0])
    first = tok.decode(encode_sequences([rec], tok, Budget(48, 8, "first"))["a"][0])
    assert "delta" in last and "alpha" not in last
    assert "alpha" in first and "delta" not in first


@pytest.mark.parametrize("arch,head", [("siamese", "mlp"), ("cross", "mlp"), ("siamese", "linear"), ("cross", "linear")])
def test_a_head_started_at_the_prior_predicts_the_prior_for_any_input_and_still_learns(tiny, arch, head):
    """head_init prior: step 0 is the (A/B-shared) class prior on every row, whatever the
    backbone's scale; the output layer gets a gradient at once, so training moves it."""
    encoder, tok = tiny
    torch.manual_seed(0)
    model = PrefModel(encoder, arch=arch, dropout=0.0, head=head)
    model.start_at_prior([0.5, 0.3, 0.2])
    recs = _records(12)
    enc = encode_pairs(recs, tok, arch=arch, max_len=64, prompt_budget=16)
    out = predict_logits(model.eval(), enc, device="cpu")
    np.testing.assert_allclose(average_probs(out.ab, out.ba), np.tile([0.4, 0.4, 0.2], (12, 1)), atol=1e-6)
    raw = torch.softmax(torch.as_tensor(out.ab), -1).numpy()
    np.testing.assert_allclose(raw, np.tile([0.4, 0.4, 0.2], (12, 1)), atol=1e-6)  # each order alone, too
    model.train()
    from src.pref.config import PrefConfig
    from src.pref.task import PrefTask
    task = PrefTask(PrefConfig(model="x", arch=arch), enc, enc, tok, "cpu")
    loss, _ = task.loss(model, task.collate(list(range(4))))
    loss.backward()
    assert model.head[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["siamese", "cross"])
def test_the_linear_head_is_one_layer_over_the_mlp_heads_input_and_stays_swap_symmetric(tiny, arch):
    """--head linear reads exactly what the MLP reads (pooled state + style) through a single
    Linear to three logits; the swap average is still exact."""
    encoder, tok = tiny
    torch.manual_seed(0)
    lin = PrefModel(encoder, arch=arch, dropout=0.0, head="linear").eval()
    mlp = PrefModel(encoder, arch=arch, dropout=0.0, head="mlp")
    layers = [m for m in lin.head if isinstance(m, torch.nn.Linear)]
    assert len(layers) == 1 and (layers[0].in_features, layers[0].out_features) == (mlp.head_in, 3)
    assert sum(p.numel() for p in lin.head.parameters()) == mlp.head_in * 3 + 3
    recs = _records(16, seed=3)
    kw = dict(arch=arch, max_len=64, prompt_budget=16)
    enc, enc_sw = encode_pairs(recs, tok, **kw), encode_pairs([swap(r) for r in recs], tok, **kw)
    p = average_probs(*(lambda o: (o.ab, o.ba))(predict_logits(lin, enc, device="cpu")))
    p_sw = average_probs(*(lambda o: (o.ab, o.ba))(predict_logits(lin, enc_sw, device="cpu")))
    np.testing.assert_allclose(p, swap_probs(p_sw), atol=1e-6)
    with pytest.raises(ValueError, match="mlp, linear or lm"):
        PrefModel(encoder, arch=arch, head="deep")
