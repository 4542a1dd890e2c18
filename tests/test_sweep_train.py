"""Sweeps with real train_pref trials (embedded MiniLM, tiny synthetic data):
a hopeless real trial is pruned mid-run, and a whole sweep writes a best
config that reproduces the best trial's validation log loss."""
from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from src.config import resolve
from src.pref.config import PrefConfig
from src.pref.train import run as train_run
from src.sweep import main as sweep_main
from src.tune import study as st
from src.tune.space import load_sweep

REPO = Path(__file__).resolve().parents[1]
BASE = str(REPO / "configs" / "pref" / "minilm.yaml")

pytestmark = pytest.mark.slow

# Same seed, data, config and thread count on CPU: measured identical to the last bit
# (fp32 and bf16 autocast alike); the tolerance only allows for a different BLAS path.
REPRO_TOL = 1e-6


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory) -> Path:
    from src.data.synthetic import make_rows, write_csv
    path = tmp_path_factory.mktemp("sweepdata") / "pairs.csv"
    write_csv(make_rows(60, seed=7), path)
    return path


def real_sweep(tmp_path: Path, data: Path, *, study: dict, space: dict | None = None, eval_every: int = 1) -> Path:
    spec = {
        "base": BASE,
        # 48 train / 12 val pairs, 32 tokens per side: a few seconds of compute per trial
        "fixed": {"data": str(data), "max_len": 32, "prompt_budget": 8, "epochs": 1, "eval_every": eval_every,
                  "progress": False},
        "space": space or {"lr": {"type": "logfloat", "low": 1e-5, "high": 3e-4},
                           "head_dropout": {"type": "float", "low": 0.0, "high": 0.3}},
        "study": {"name": "real", "out": str(tmp_path / "real"), **study},
    }
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_hopeless_real_trial_is_pruned_mid_run(tmp_path, tiny_csv):
    path = real_sweep(tmp_path, tiny_csv, study={
        "n_trials": 2, "objective": "src.tune.toy:run", "pruner": "median",
        "pruner_args": {"n_startup_trials": 2, "n_warmup_steps": 0}})
    # Two toy trials set the bar (val loss ~0.8 after a quarter epoch); then one real
    # train_pref trial with a tiny lr, which cannot get near that after a third of its only epoch.
    assert sweep_main(["--config", str(path), "--no-report"]) == 0
    spec = load_sweep(path)
    spec.study.objective, spec.study.n_trials = "src.pref.train:run", 3
    storage = st.make_storage(st.storage_url(spec))
    st.open_study(spec, storage).enqueue_trial({"lr": 1e-5, "head_dropout": 0.1})
    st.work(spec, storage=storage)
    trial = optuna.load_study(study_name="real", storage=storage).trials[2]
    assert trial.state == TrialState.PRUNED, trial.user_attrs
    run_dir = Path(trial.user_attrs["run_dir"])
    evals = [ln for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if '"kind": "eval"' in ln]
    steps = math.ceil(48 / 16)  # 48 training pairs, batch 16: 3 optimizer steps in the epoch
    assert len(evals) < steps  # training stopped at the pruning point
    assert trial.user_attrs["pruned_at"]["optimizer_step"] < steps
    assert (run_dir / "config.yaml").exists() and not (run_dir / "metrics.json").exists()
    assert not (run_dir / "checkpoint").exists()  # pruned trials leave no weights behind


def test_sweep_end_to_end_best_config_reproduces_the_best_trial(tmp_path, tiny_csv):
    path = real_sweep(tmp_path, tiny_csv, study={"n_trials": 2, "n_startup_trials": 2, "pruner": "none"},
                      eval_every=0)  # one eval at the end: the shortest real trial
    assert sweep_main(["--config", str(path)]) == 0
    out = tmp_path / "real"
    study = optuna.load_study(study_name="real", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert study.trials[0].user_attrs.get("baseline")
    best = study.best_trial
    for name in ["optimization_history", "parallel_coordinate", "slice", "param_importances"]:
        assert (out / "plots" / f"{name}.png").exists()
    assert (out / "trials.csv").exists()

    # The written config is a plain train_pref config: load it as the CLI would and train.
    cfg = resolve(PrefConfig, str(out / "best_config.yaml"))
    cfg.out = str(tmp_path / "repro")
    metrics = train_run(cfg)
    assert abs(metrics["val_log_loss"] - best.value) <= REPRO_TOL, (metrics["val_log_loss"], best.value)
    assert metrics["best_step"] == best.user_attrs["metrics"]["best_step"]
