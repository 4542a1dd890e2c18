"""Best-of-n with the judge (src/gen/best_of_n.py, python -m src.generate --judge):

- the scores are the round-robin win shares and the best reply is their argmax;
- the CLI prints/writes all K replies with their scores, the best flagged (slow: a real
  tiny classifier run scores the tiny model's samples);
- bad input (--num-samples 0, a judge that is a generative run, no judge run) is one line
  and writes nothing.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from src.gen import best_of_n as B
from src.generate import main



def fake_predict(records, **_):
    """A judge that prefers the longer reply: P(A) = sigmoid(len(A) - len(B)) * 0.9, tie 0.1."""
    from src.pref.inference.predict import RunPrediction
    d = np.array([len(r.response_a[0]) - len(r.response_b[0]) for r in records], dtype=float)
    p_a = 0.9 / (1 + np.exp(-d / 3))
    return RunPrediction(np.stack([p_a, 0.9 - p_a, np.full_like(p_a, 0.1)], 1))


def test_scores_are_round_robin_win_shares_and_best_is_their_argmax(monkeypatch):
    import src.pref.inference.predict as P
    monkeypatch.setattr(P, "predict_records", lambda judge, records, **kw: fake_predict(records))
    replies = ["ok", "a longer reply here", "mid reply", "the longest reply of them all, by far"]
    scores = B.judge_scores(object(), ["hi"], replies)
    # by hand: score_i = mean_j [P(i beats j) + P(tie) / 2]
    want = []
    for i, a in enumerate(replies):
        s = [fake_predict([B.PairRecord(id="x", prompt=["hi"], response_a=[a], response_b=[b])]).probs[0]
             for j, b in enumerate(replies) if j != i]
        want.append(np.mean([p[0] + p[2] / 2 for p in s]))
    np.testing.assert_allclose(scores, want, rtol=1e-9)
    assert B.pick_best(scores).best == int(np.argmax(want)) == 3
    ref = B.judge_scores(object(), ["hi"], replies[:1], reference="a reference reply")
    assert ref.shape == (1,) and ref[0] < 0.5  # "ok" is shorter than the reference: it loses to it


def _gen_run_dir(tmp_path: Path) -> Path:
    from src.gen import checkpoint as K
    from src.gen.model import ensure_pad_token, load_base
    from src.models.tiny import build_tiny_tokenizer
    tok = build_tiny_tokenizer()
    model = load_base("tiny", tok)
    ensure_pad_token(model, tok)
    K.save_checkpoint(model, tok, K.best_dir(tmp_path / "gen"), {"base_model": "tiny", "finetune": "full"})
    return tmp_path / "gen"


@pytest.mark.parametrize("argv,needle", [
    (["--num-samples", "0"], "--num-samples must be at least 1, got 0"),
    (["--num-samples", "1", "--judge", "JUDGE"], "--num-samples 2 or more"),
    (["--num-samples", "3", "--judge", "GEN"], "a generative run (train_gen), not a preference classifier"),
    (["--num-samples", "3", "--judge", "NONE"], "no such run dir"),
])
def test_bad_best_of_n_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, needle):
    gen = _gen_run_dir(tmp_path)
    capsys.readouterr()  # (saving the fixture's model prints a progress bar)
    subs = {"GEN": str(gen), "NONE": str(tmp_path / "missing"), "JUDGE": str(gen)}
    out = tmp_path / "samples.jsonl"
    argv = [subs.get(a, a) for a in argv] + ["--run", "tiny", "--prompt", "hi", "--samples-out", str(out)]
    if "--judge" not in argv:
        argv = [a for a in argv if a not in ("--samples-out", str(out))]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1, err
    assert not captured.out and not out.exists()


@pytest.mark.slow
def test_best_of_n_cli_writes_all_k_with_scores_and_prints_the_argmax(tmp_path, capsys, tiny_run):
    from src.pref.inference.ensemble import load_run
    from src.pref.inference.predict import predict_records
    out = tmp_path / "all.jsonl"
    argv = ["--run", "tiny", "--prompt", "Tell me about the old map.", "--num-samples", "4", "--judge",
            str(tiny_run), "--max-new-tokens", "12", "--device", "cpu", "--samples-out", str(out)]
    assert main(argv + ["--json"]) == 0
    rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [r["sample"] for r in rows] == [0, 1, 2, 3]
    assert rows == [json.loads(ln) for ln in out.read_text().splitlines()]  # all K written too
    scores = [r["judge_score"] for r in rows]
    assert [r["best"] for r in rows] == [k == int(np.argmax(scores)) for k in range(4)]
    # independently: every ordered pair through the judge's one inference path, no mirror shortcut
    judge = load_run(tiny_run, device="cpu")
    texts = [r["reply"] for r in rows]
    recs = [B.PairRecord(id=f"{i}-{j}", prompt=[rows[0]["prompt"]], response_a=[texts[i]], response_b=[texts[j]])
            for i in range(4) for j in range(4) if i != j]
    p = predict_records(judge, recs, device="cpu", tta=True).probs
    share = iter(p[:, 0] + p[:, 2] / 2)
    want = np.zeros(4)
    for i in range(4):
        for j in range(4):
            if i != j:
                want[i] += next(share) / 3
    np.testing.assert_allclose(scores, want, atol=1e-5)
    assert main(argv) == 0  # without --json: the best reply alone
    assert capsys.readouterr().out.strip() == texts[int(np.argmax(scores))].strip()


def _random_matrix(rng: np.random.Generator, k: int) -> np.ndarray:
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    return B.matrix_from_pairs(k, pairs, rng.uniform(0, 1, len(pairs)))


def test_win_matrix_is_antisymmetric_and_its_round_robin_is_judge_scores(monkeypatch):
    import src.pref.inference.predict as P
    monkeypatch.setattr(P, "predict_records", lambda judge, records, **kw: fake_predict(records))
    replies = ["ok", "a longer reply here", "mid reply"]
    w = B.win_matrix(object(), ["hi"], replies)
    off = ~np.eye(3, dtype=bool)
    np.testing.assert_allclose(w[off] + w.T[off], 1.0)
    assert np.isnan(np.diag(w)).all()
    np.testing.assert_allclose(B.round_robin(w), B.judge_scores(object(), ["hi"], replies))


def test_chosen_vs_random_by_hand_and_invariants():
    # K = 3, one prompt. The chooser likes reply 2 best (round robin 0.8, 0.3, ...).
    chooser = B.matrix_from_pairs(3, [(0, 1), (0, 2), (1, 2)], [0.6, 0.2, 0.4])
    scorer = B.matrix_from_pairs(3, [(0, 1), (0, 2), (1, 2)], [0.5, 0.7, 0.9])
    assert int(np.argmax(B.round_robin(chooser))) == 2
    r = B.chosen_vs_random([chooser], [scorer])
    # the scorer's W[2, 0] = 0.3, W[2, 1] = 0.1: the chosen reply loses to both by the other judge
    assert r["chosen_score"] == pytest.approx(0.2) and r["chosen_wins"] == 0.0 and r["prompts"] == 1
    rng = np.random.default_rng(0)
    mats = [_random_matrix(rng, 4) for _ in range(50)]
    own = B.chosen_vs_random(mats, mats)
    # judged by its own chooser the pick is the maximum round-robin score: never below a random pick's 0.5
    assert own["chosen_score"] >= 0.5 and own["chosen_score_se"] > 0
    indep = B.chosen_vs_random(mats, [_random_matrix(rng, 4) for _ in range(50)])
    # an unrelated judge sees a pick no better than chance (within 3 standard errors)
    assert abs(indep["chosen_score"] - 0.5) < 3 * indep["chosen_score_se"]
    with pytest.raises(ValueError):
        B.chosen_vs_random([], [])
