"""Training end to end on a tiny encoder: learning, resume, DDP agreement, outputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from src.pref.config import PrefConfig
from src.pref.train import run
from tests.pref_helpers import make_tiny_encoder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(make_tiny_encoder(tmp_path_factory.mktemp("tiny_enc"), hidden=32))


def _cfg(tiny_model, data, out, **kw) -> PrefConfig:
    base = dict(model=tiny_model, data=str(data), out=str(out), max_len=64, prompt_budget=16, batch_size=16,
                epochs=2, lr=3e-4, head_lr_mult=10, head_dropout=0.0, precision="fp32", progress=False,
                eval_every=5, seed=3)
    base.update(kw)
    return PrefConfig(**base)


@pytest.mark.slow  # real training runs (DDP via torchrun, the CLI in a child process)
def test_training_learns_the_synthetic_signal_and_writes_the_run_dir(tiny_model, synthetic_csv, tmp_path):
    m = run(_cfg(tiny_model, synthetic_csv, tmp_path / "run", epochs=3))
    # the generator's signal is learnable: well below the class prior (and never below Bayes)
    assert m["val_log_loss"] < m["val_log_loss_class_prior"] - 0.05
    assert m["val_log_loss"] > m["val_bayes_log_loss"] - 0.05
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lines = [r for r in records if r["kind"] == "eval"]
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    for name in ("config.yaml", "metrics.json", "data_report.json", "val_predictions.csv",
                 "checkpoint/best/model.safetensors", "checkpoint/best/tokenizer/tokenizer.json",
                 "checkpoint/last/training_state.pt", "plots/loss_curves.png", "plots/reliability.png",
                 "plots/confusion_matrix.png"):
        assert (tmp_path / "run" / name).exists(), name
    pred = pd.read_csv(tmp_path / "run" / "val_predictions.csv")
    np.testing.assert_allclose(pred[["winner_model_a", "winner_model_b", "winner_tie"]].sum(1), 1.0, atol=1e-5)
    assert len(pred) == m["n_val"]
    assert 0 <= m["pad_fraction"] < 1 and m["train_pairs_per_s"] > 0


@pytest.mark.slow  # real training runs (DDP via torchrun, the CLI in a child process)
def test_interrupted_then_resumed_run_ends_like_an_uninterrupted_one(tiny_model, synthetic_csv, tmp_path):
    full = run(_cfg(tiny_model, synthetic_csv, tmp_path / "full"))
    part = _cfg(tiny_model, synthetic_csv, tmp_path / "parts", stop_after_steps=7)  # mid-epoch, off the eval grid
    assert "stopped_at_step" in run(part)
    assert not (tmp_path / "parts" / "metrics.json").exists()
    resumed = run(replace(part, stop_after_steps=0), resume=True)
    for key in ("val_log_loss", "val_log_loss_uncalibrated", "val_accuracy", "best_step", "steps"):
        assert resumed[key] == pytest.approx(full[key], abs=1e-6), key
    a = load_file(tmp_path / "full" / "checkpoint" / "last" / "model.safetensors")
    b = load_file(tmp_path / "parts" / "checkpoint" / "last" / "model.safetensors")
    assert all(np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6) for k in a)


@pytest.mark.slow  # real training runs (DDP via torchrun, the CLI in a child process)
def test_kfold_writes_out_of_fold_predictions_for_every_row(tiny_model, synthetic_csv, tmp_path):
    m = run(_cfg(tiny_model, synthetic_csv, tmp_path / "cv", folds=3, epochs=1, eval_every=0))
    oof = pd.read_csv(tmp_path / "cv" / "oof_predictions.csv")
    assert len(oof) == 400 and oof[["winner_model_a", "winner_model_b", "winner_tie"]].notna().all().all()
    assert len(m["fold_val_log_loss"]) == 3 and np.isfinite(m["cv_log_loss"])


@pytest.mark.slow  # real training runs (DDP via torchrun, the CLI in a child process)
def test_two_cpu_processes_agree_with_single_process_accumulation(tiny_model, synthetic_csv, tmp_path):
    """DDP over gloo: 2 processes x 1 micro-batch == 1 process x 2 accumulated micro-batches."""
    common = ["--model", tiny_model, "--data", str(synthetic_csv), "--max-len", "48", "--batch-size", "8",
              "--precision", "fp32", "--head-dropout", "0", "--progress", "false", "--stop-after-steps", "3",
              "--seed", "1", "--lr", "1e-3", "--schedule", "constant", "--warmup-ratio", "0"]  # same LR path: the two runs count epoch steps differently
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # torchrun, not `accelerate launch --cpu`: accelerate's multi-CPU launcher needs mpirun and
    # otherwise quietly starts ONE process. Accelerator() picks up torchrun's env (gloo, MULTI_CPU).
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(_free_port()), "-m", "src.train_pref", *common, "--out", str(tmp_path / "ddp")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "2 process(es)" in ddp.stdout, ddp.stdout[-2000:]
    single = subprocess.run([sys.executable, "-m", "src.train_pref", *common, "--grad-accum", "2",
                             "--out", str(tmp_path / "single")], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    a = load_file(tmp_path / "ddp" / "checkpoint" / "last" / "model.safetensors")
    b = load_file(tmp_path / "single" / "checkpoint" / "last" / "model.safetensors")
    init = load_file(Path(tiny_model) / "model.safetensors")
    assert not np.allclose(a["encoder.embeddings.word_embeddings.weight"].numpy(),
                           init["embeddings.word_embeddings.weight"].numpy())  # it did train
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=2e-5, err_msg=k)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # real training runs (DDP via torchrun, the CLI in a child process)
def test_bad_data_fails_with_one_line_naming_the_file(tiny_model, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,prompt,response_a\n1,[],[]\n")
    proc = subprocess.run([sys.executable, "-m", "src.train_pref", "--model", tiny_model, "--data", str(bad),
                           "--out", str(tmp_path / "r")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "bad.csv" in proc.stderr and "response_b" in proc.stderr
    assert "Traceback" not in proc.stderr
