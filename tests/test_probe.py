"""The frozen-state probe (src/pref/probe.py): it pools what the classifier's head would
read, scores every row out of fold, is exactly swap-symmetric, and finds a planted signal."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from src.data.records import PairRecord
from src.pref.inputs.encode import encode_pairs
from src.pref.modeling.backbone import load_backbone
from src.pref.modeling.model import PrefModel
from src.pref.probe import SWAP, Pooled, non_tie_accuracy, pooled_states, probe_out_of_fold


def _records(n: int) -> list[PairRecord]:
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta list code sorry item one two".split()
    say = lambda k: " ".join(rng.choice(words, size=k))  # noqa: E731
    return [PairRecord(str(i), [say(int(rng.integers(2, 8)))], [say(int(rng.integers(1, 30)))],
                       [say(int(rng.integers(1, 30)))], label=int(rng.integers(3))) for i in range(n)]


@pytest.mark.parametrize("arch", ["cross", "siamese"])
def test_pooled_states_are_what_the_head_reads(arch):
    torch.manual_seed(0)
    b = load_backbone("tiny-llama", log=None)
    model = PrefModel(b.model, arch=arch, style=False, chunks=1).eval()
    recs = _records(7)
    enc = encode_pairs(recs, b.tokenizer, arch=arch, max_len=256, prompt_budget=16)
    got = pooled_states(model, enc, max_tokens=600)  # several batches, sorted by length
    for i in (0, 3, 6):
        seqs = [enc.ids[k][i] for k in (("ab", "ba") if arch == "cross" else ("a", "b"))]
        with torch.no_grad():
            h = [model.encode(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0].numpy() for s in seqs]
        want = h if arch == "cross" else [np.concatenate([h[0], h[1], h[0] - h[1], h[0] * h[1]]),
                                          np.concatenate([h[1], h[0], h[1] - h[0], h[0] * h[1]])]
        np.testing.assert_allclose(got.ab[i], want[0], atol=1e-4)
        np.testing.assert_allclose(got.ba[i], want[1], atol=1e-4)
    assert got.style.shape == (7, 2, enc.style.shape[-1]) and (got.labels == [r.label for r in recs]).all()


def _planted(n: int, signal: float, seed: int = 0) -> tuple[Pooled, list[np.ndarray]]:
    """Label A when the first dimension of the A-first view beats the B-first one, ties
    rare; `signal` scales how much of the state that dimension is."""
    rng = np.random.default_rng(seed)
    ab, ba = rng.normal(size=(n, 12)), rng.normal(size=(n, 12))
    diff = signal * (ab[:, 0] - ba[:, 0]) + rng.normal(size=n)
    labels = np.where(rng.random(n) < 0.1, 2, np.where(diff > 0, 0, 1))
    folds = list(np.array_split(rng.permutation(n), 4))
    return Pooled(ab, ba, rng.normal(size=(n, 2, 3)), labels), folds


def test_a_planted_signal_beats_the_prior_out_of_fold_and_noise_does_not():
    signal, folds = _planted(400, 3.0)
    noise, _ = _planted(400, 0.0)
    r, r0 = probe_out_of_fold(signal, folds, c=1.0), probe_out_of_fold(noise, folds, c=0.001)
    assert r.log_loss() < r.prior_log_loss() - 0.2 and non_tie_accuracy(r.oof, signal.labels) > 0.8
    assert r0.log_loss() > r0.prior_log_loss() - 0.02 and abs(non_tie_accuracy(r0.oof, noise.labels) - 0.5) < 0.1
    np.testing.assert_allclose(r.oof.sum(1), 1.0, atol=1e-9)
    diff, se = r.paired_vs_prior()
    assert diff == pytest.approx(r.log_loss() - r.prior_log_loss()) and 0 < se < abs(diff) / 3


def test_the_probe_is_exactly_swap_symmetric_and_scores_each_row_once():
    p, folds = _planted(200, 1.0, seed=3)
    mirrored = Pooled(p.ba, p.ab, p.style[:, ::-1], SWAP[p.labels])
    a = probe_out_of_fold(p, folds, c=0.1, style=True)
    b = probe_out_of_fold(mirrored, folds, c=0.1, style=True)
    np.testing.assert_allclose(a.oof, b.oof[:, SWAP], atol=1e-6)
    with pytest.raises(ValueError, match="partition"):
        probe_out_of_fold(p, folds[:-1], c=0.1)
    with pytest.raises(ValueError, match="partition"):
        probe_out_of_fold(p, folds + [folds[0]], c=0.1)
