"""Sweeps (src/sweep.py, src/tune/): the search-space file, pruning, failures,
resume, several workers on one SQLite / journal study, the report.

Trials here use the toy objective (src/tune/toy.py: the same config, hook and
files as train_pref, in milliseconds); tests/test_sweep_train.py runs real
train_pref trials and tests/test_sweep_postgres.py a real PostgreSQL server.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from src.config import load_yaml, resolve
from src.pref.config import PrefConfig
from src.sweep import main as sweep_main
from src.tune import study as st
from src.tune.space import load_sweep, parse_sweep
from src.tune.toy import run as toy_run

REPO = Path(__file__).resolve().parents[1]
BASE = str(REPO / "configs" / "pref" / "minilm.yaml")

optuna.logging.set_verbosity(optuna.logging.WARNING)


def toy_sweep(tmp_path: Path, name: str = "toy", study: dict | None = None, space: dict | None = None,
              fixed: dict | None = None) -> Path:
    """A sweep YAML on the toy objective; returns its path."""
    data = {
        "base": BASE,
        "fixed": {"demo_rows": 100, "epochs": 1, "eval_every": 1, "progress": False, **(fixed or {})},
        "space": space or {
            "lr": {"type": "logfloat", "low": 1e-5, "high": 1e-3},
            "batch_size": {"type": "categorical", "choices": [8, 16], "scale_lr": "sqrt"},
            "head_dropout": {"type": "float", "low": 0.0, "high": 0.3},
        },
        "study": {"name": name, "out": str(tmp_path / name), "objective": "src.tune.toy:run", "n_trials": 4,
                  "n_startup_trials": 2, "pruner_args": {"n_startup_trials": 2}, **(study or {})},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def load(path: Path, **study_overrides) -> optuna.Study:
    spec = load_sweep(path)
    for k, v in study_overrides.items():
        setattr(spec.study, k, v)
    return optuna.load_study(study_name=spec.study.name, storage=st.make_storage(st.storage_url(spec)))


# ----------------------------------------------------------------------------- the sweep file


@pytest.mark.parametrize("name", ["demo", "real_dev"])
def test_shipped_sweeps_parse_and_their_baseline_is_inside_the_space(name, monkeypatch):
    monkeypatch.chdir(REPO)  # their paths are relative to the repo root, like every config's
    spec = load_sweep(REPO / "configs" / "sweep" / f"{name}.yaml")
    assert spec.study.objective == "src.pref.train:run"
    base = spec.baseline_params()
    assert all(p.contains(base[p.name]) for p in spec.space), base
    assert spec.trial_config(base, "x").lr == pytest.approx(spec.base_config().lr)  # base batch: lr unscaled
    header = (REPO / "configs" / "sweep" / f"{name}.yaml").read_text().splitlines()[:4]
    assert any("python -m src.sweep --config configs/sweep/" in ln for ln in header)


@pytest.mark.parametrize("space, match", [
    ({"lrr": {"type": "float", "low": 0.1, "high": 1}}, "not a PrefConfig field"),
    ({"out": ["a", "b"]}, "sets this itself"),
    ({"batch_size": {"type": "float", "low": 8, "high": 32}}, "int field"),
    ({"pooling": {"type": "categorical", "choices": ["mean", "max"]}}, "not one of"),
    ({"lr": {"type": "float", "low": 1e-3, "high": 1e-4}}, "must be below"),
    ({"lr": {"type": "logfloat", "low": 0.0, "high": 1e-4}}, "lr must be > 0"),  # the field's own range
    ({"weight_decay": {"type": "logfloat", "low": 0.0, "high": 1e-2}}, "low > 0"),  # 0 is valid, not on a log scale
    ({"lr": {"type": "float", "low": 1e-5, "high": 1e-4, "scale_lr": "sqrt"}}, "belongs on batch_size"),
    ({"lr": {"type": "float", "low": 1e-5, "high": 1e-4, "lo": 3}}, "unknown key"),
    ({"lr": {"type": "gaussian", "low": 1e-5, "high": 1e-4}}, "unknown type"),
    ({"style_features": {"type": "int", "low": 0, "high": 1}}, "bool field"),
    ({"epochs": {"type": "categorical", "choices": [1, "two"]}}, "expects float"),
    ({}, "'space' must map"),
])
def test_bad_search_spaces_fail_at_load_time(space, match):
    with pytest.raises(ValueError, match=match):
        parse_sweep({"base": BASE, "space": space}, source="t.yaml")


@pytest.mark.parametrize("data, match", [
    ({"base": BASE, "space": {"lr": [1e-4]}, "study": {"n_trial": 3}}, "unknown config field"),
    ({"base": BASE, "space": {"lr": [1e-4]}, "study": {"pruner": "asha"}}, "pruner"),
    ({"base": BASE, "space": {"lr": [1e-4]}, "study": {"n_trials": 0}}, "at least 1"),
    ({"base": BASE, "space": {"lr": [1e-4]}, "fixed": {"stop_after_steps": 3}}, "sets this itself"),
    ({"base": BASE, "space": {"lr": [1e-4]}, "fixed": {"lr": 1e-3}}, "both fixed and searched"),
    ({"base": "nope.yaml", "space": {"lr": [1e-4]}}, "not found"),
    ({"base": BASE, "space": {"lr": [1e-4]}, "seach": {}}, "unknown top-level"),
])
def test_bad_sweep_files_fail_at_load_time(data, match):
    with pytest.raises(ValueError, match=match):
        parse_sweep(data, source="t.yaml")


@pytest.mark.parametrize("rule, bs, expected", [("sqrt", 64, 2.0), ("sqrt", 4, 0.5), ("linear", 32, 2.0),
                                                ("none", 64, 1.0)])
def test_lr_is_rescaled_when_the_batch_grows(rule, bs, expected):
    spec = parse_sweep({"base": BASE, "space": {
        "lr": {"type": "logfloat", "low": 1e-6, "high": 1e-2},
        "batch_size": {"type": "categorical", "choices": [4, 16, 32, 64], "scale_lr": rule}}}, source="t.yaml")
    cfg = spec.trial_config({"lr": 1e-4, "batch_size": bs}, "x")  # base batch_size is 16
    assert cfg.lr == pytest.approx(1e-4 * expected)


# ----------------------------------------------------------------------------- sampler, pruning


def _params(tmp_path, name):
    path = toy_sweep(tmp_path, name, study={"n_trials": 4, "enqueue_base": False, "pruner": "none"})
    spec = load_sweep(path)
    st.work(spec, storage=st.make_storage(st.storage_url(spec)))
    return [t.params for t in load(path).trials]


@pytest.mark.slow  # a sweep of several trials (worker processes for some)
def test_sweeps_are_reproducible_and_trials_draw_different_points(tmp_path):
    first, second = _params(tmp_path, "a"), _params(tmp_path, "b")
    assert first == second  # same seed, same sequence
    assert len({json.dumps(p, sort_keys=True) for p in first}) == len(first)


@pytest.mark.filterwarnings("ignore:Fixed parameter lr with value 10.0 is out of range")
@pytest.mark.slow  # a sweep of several trials (worker processes for some)
def test_pruning_stops_a_hopeless_trial_early(tmp_path):
    path = toy_sweep(tmp_path, study={"n_trials": 3, "pruner": "median",
                                      "pruner_args": {"n_startup_trials": 2, "n_warmup_steps": 0}})
    spec = load_sweep(path)
    assert sweep_main(["--config", str(path), "--pruner", "none", "--no-report"]) == 0  # 3 full trials
    study = load(path)
    study.enqueue_trial({"lr": 10.0, "batch_size": 16, "head_dropout": 0.1})  # diverges: loss rises
    assert sweep_main(["--config", str(path), "--n-trials", "4", "--no-plots"]) == 0
    trials = load(path).trials
    assert [t.state for t in trials[:3]] == [TrialState.COMPLETE] * 3
    hopeless = trials[3]
    assert hopeless.state == TrialState.PRUNED, hopeless
    assert hopeless.user_attrs["pruned_at"]["pruning_step"] == 1  # at the first look
    evals = (Path(hopeless.user_attrs["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    full = (Path(trials[1].user_attrs["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    assert len(evals) < len(full)  # it stopped training, not just got a bad mark
    assert not (Path(hopeless.user_attrs["run_dir"]) / "metrics.json").exists()
    table = pd.read_csv(Path(spec.study.out) / "trials.csv")
    assert table.loc[3, "note"].startswith("pruned at epoch")


def test_pruning_hook_reports_on_an_epoch_grid_whatever_the_batch_size():
    class FakeTrial:
        def __init__(self):
            self.reported, self.asked = {}, []

        def report(self, value, step):
            self.reported[step] = value

        def should_prune(self):
            self.asked.append(max(self.reported))
            return False

    t = FakeTrial()
    hook = st.PruningHook(t, "val_log_loss", per_epoch=4, epochs=1.0)
    for step, epoch, v in [(1, 0.125, 1.0), (3, 0.375, 0.9), (8, 1.0, 0.8)]:
        hook(step, {"epoch": epoch, "val_log_loss": v})
    # step k holds the first eval at or after k/4 epochs
    assert t.reported == {1: 0.9, 2: 0.8, 3: 0.8, 4: 0.8}
    assert t.asked == [1]  # not before the first grid point, not at the end (the run is over anyway)
    with pytest.raises(st.TrialFailed, match="non-finite"):
        hook(9, {"epoch": 1.1, "val_log_loss": float("nan")})


@pytest.mark.slow  # a sweep of several trials (worker processes for some)
def test_hyperband_pruner_runs_a_sweep(tmp_path):
    path = toy_sweep(tmp_path, study={"n_trials": 6, "pruner": "hyperband", "pruner_args": {}})
    assert sweep_main(["--config", str(path), "--no-plots"]) == 0
    study = load(path)
    assert isinstance(st.make_pruner(load_sweep(path)), optuna.pruners.HyperbandPruner)
    assert len(study.trials) == 6 and all(t.state.is_finished() for t in study.trials)


# ----------------------------------------------------------------------------- failures


@pytest.mark.slow  # a sweep of several trials (worker processes for some)
def test_failed_trials_are_recorded_with_their_reason_and_the_study_goes_on(tmp_path):
    space = {"lr": {"type": "logfloat", "low": 1e-5, "high": 1e-3},
             "model": {"type": "categorical", "choices": ["minilm", "toy-nan", "toy-oom", "toy-error", "toy-usage"]}}
    path = toy_sweep(tmp_path, space=space, study={"n_trials": 1, "pruner": "none"})
    assert sweep_main(["--config", str(path), "--no-report"]) == 0  # trial 0: the baseline
    study = load(path)
    for model in ["toy-nan", "toy-oom", "toy-error", "toy-usage"]:
        study.enqueue_trial({"lr": 1e-4, "model": model})
    study.enqueue_trial({"lr": 1e-4, "model": "minilm"})
    assert sweep_main(["--config", str(path), "--n-trials", "6", "--no-plots"]) == 0
    trials = load(path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] + [TrialState.FAIL] * 4 + [TrialState.COMPLETE]
    reasons = [t.user_attrs["fail_reason"] for t in trials[1:5]]
    assert reasons[0].startswith("non-finite loss: NonFiniteLossError")
    assert reasons[1].startswith("out of memory: RuntimeError: CUDA out of memory")
    assert reasons[2] == "exception: ValueError: toy: injected failure"
    assert reasons[3] == "bad input: toy: injected bad input"  # a UsageError from the run: the study goes on
    out = Path(load_sweep(path).study.out)
    table = pd.read_csv(out / "trials.csv")
    assert table["note"].tolist()[1:5] == reasons
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fail"] == 4 and summary["complete"] == 2


@pytest.mark.slow  # a sweep of several trials (worker processes for some)
def test_a_system_exit_from_library_code_stops_the_worker_but_records_the_trial(tmp_path):
    path = toy_sweep(tmp_path, study={"n_trials": 3, "enqueue_base": False, "pruner": "none"},
                     fixed={"model": "toy-exit"})
    spec = load_sweep(path)
    with pytest.raises(SystemExit):
        st.work(spec, storage=st.make_storage(st.storage_url(spec)), run_fn=toy_run)
    (trial,) = load(path).trials  # the worker stopped after the first trial
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["fail_reason"].startswith("exit: SystemExit: toy: injected SystemExit")


@pytest.mark.slow  # a sweep of several trials (worker processes for some)
def test_a_non_finite_final_value_fails_the_trial(tmp_path):
    path = toy_sweep(tmp_path, study={"n_trials": 1, "enqueue_base": False, "pruner": "none"})
    spec = load_sweep(path)
    storage = st.make_storage(st.storage_url(spec))
    st.work(spec, storage=storage, run_fn=lambda cfg, trial_hook=None: {"val_log_loss": float("nan")})
    (t,) = load(path).trials
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"].startswith("non-finite loss")


# ----------------------------------------------------------------------------- resume


@pytest.mark.slow  # a sweep of several trials (worker processes for some)
def test_rerunning_resumes_and_a_larger_n_adds_trials(tmp_path):
    path = toy_sweep(tmp_path, study={"n_trials": 2})
    assert sweep_main(["--config", str(path), "--no-plots"]) == 0
    before = [(t.number, t.params, t.value, t.datetime_start) for t in load(path).trials]
    assert len(before) == 2
    assert sweep_main(["--config", str(path), "--no-plots"]) == 0  # same command, study complete: no-op
    assert len(load(path).trials) == 2
    assert sweep_main(["--config", str(path), "--n-trials", "5", "--no-plots"]) == 0
    after = load(path).trials
    assert [(t.number, t.params, t.value, t.datetime_start) for t in after[:2]] == before
    assert [t.number for t in after] == [0, 1, 2, 3, 4]
    assert all(t.state.is_finished() for t in after)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
@pytest.mark.slow  # a sweep of several trials (worker processes for some)
def test_a_trial_whose_worker_died_is_redone_not_counted(tmp_path):
    path = toy_sweep(tmp_path, study={"n_trials": 3, "pruner": "none"})
    spec = load_sweep(path)
    study = st.open_study(spec)
    assert sweep_main(["--config", str(path), "--n-trials", "1", "--no-report"]) == 0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = study.ask()  # what a killed worker leaves behind: RUNNING forever
    orphan.set_user_attr("host", __import__("socket").gethostname())
    orphan.set_user_attr("pid", dead.pid)
    assert sweep_main(["--config", str(path), "--no-plots"]) == 0
    trials = load(path).trials
    assert trials[1].state == TrialState.FAIL and trials[1].user_attrs["interrupted"]
    assert "worker pid" in trials[1].user_attrs["fail_reason"]
    assert st.tally(load(path))["counted"] == 3
    assert [t.state for t in trials if t.number != 1] == [TrialState.COMPLETE] * 3


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
@pytest.mark.slow  # a sweep of several trials (worker processes for some)
def test_a_killed_trials_checkpoints_are_trimmed_like_finished_ones(tmp_path):
    path = toy_sweep(tmp_path, study={"n_trials": 2, "pruner": "none"})
    spec = load_sweep(path)
    study = st.open_study(spec)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = study.ask()  # a worker killed with -9 mid-trial: RUNNING, its run dir full of checkpoints
    run_dir = Path(spec.study.out) / "trials" / f"{orphan.number:04d}"
    (run_dir / "checkpoint" / "last").mkdir(parents=True)
    (run_dir / "checkpoint" / "last" / "model.safetensors").write_bytes(b"x" * 1000)
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    for k, v in {"host": __import__("socket").gethostname(), "pid": dead.pid, "run_dir": str(run_dir)}.items():
        orphan.set_user_attr(k, v)
    assert sweep_main(["--config", str(path), "--no-plots"]) == 0
    assert load(path).trials[orphan.number].user_attrs["interrupted"]
    assert not (run_dir / "checkpoint").exists()  # trimmed, as a finished trial's
    assert (run_dir / "metrics.jsonl").exists()   # the log of what it did stays
    assert not any((Path(spec.study.out) / "trials").glob("*/checkpoint"))


def test_workers_get_the_storage_url_in_the_environment_not_on_argv(tmp_path, monkeypatch):
    path = toy_sweep(tmp_path)
    secret = "postgresql://sweeper:s3cret-pw@db.example:5432/optuna"
    seen = []

    class FakeProc:
        def __init__(self, cmd, env):
            seen.append((cmd, env))

        def wait(self):
            return 0

    monkeypatch.setattr(st.subprocess, "Popen", FakeProc)
    from src.sweep import build_parser, worker_args
    args = build_parser().parse_args(["--config", str(path), "--storage", secret, "--workers", "2"])
    assert st.launch_workers(load_sweep(path), 2, worker_args(args), storage=args.storage) == 0
    assert len(seen) == 2
    for cmd, env in seen:
        assert not any("s3cret-pw" in a or "--storage" == a for a in cmd), cmd
        assert env[st.STORAGE_ENV] == secret
    # ...and a worker started that way acts on that storage
    monkeypatch.setenv(st.STORAGE_ENV, secret)
    from src.sweep import resolve_spec
    child = build_parser().parse_args(seen[0][0][3:])
    assert resolve_spec(child).study.storage == secret


# ----------------------------------------------------------------------------- several workers


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
@pytest.mark.slow  # a sweep of several trials (worker processes for some)
def test_two_worker_processes_share_one_study(tmp_path, storage):
    n = 6
    path = toy_sweep(tmp_path, study={"n_trials": n, "pruner": "none"})
    args = ["--config", str(path), "--workers", "2", "--no-plots"]
    if storage == "journal":
        args += ["--storage", f"journal:{tmp_path / 'journal.log'}"]
    env = {**os.environ, "TOY_SECONDS_PER_EVAL": "0.5"}  # trials long enough to overlap
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "src.sweep", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    spec = load_sweep(path)
    if storage == "journal":
        spec.study.storage = f"journal:{tmp_path / 'journal.log'}"
    study = optuna.load_study(study_name=spec.study.name, storage=st.make_storage(st.storage_url(spec)))
    trials = study.trials
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(n)), numbers  # none lost, none duplicated, none extra
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    assert len({t.user_attrs["pid"] for t in trials}) == 2
    assert len({t.user_attrs["run_dir"] for t in trials}) == n
    spans = sorted((t.datetime_start, t.datetime_complete, t.user_attrs["worker"]) for t in trials)
    assert any(a[1] > b[0] and a[2] != b[2] for a, b in zip(spans, spans[1:])), "workers never overlapped"
    assert time.time() - t0 < 300
    assert (Path(spec.study.out) / "best_config.yaml").exists()


# ----------------------------------------------------------------------------- report


@pytest.mark.slow  # a sweep of several trials (worker processes for some)
def test_report_writes_a_runnable_best_config_table_and_plots(tmp_path):
    path = toy_sweep(tmp_path, study={"n_trials": 5, "pruner": "none"})
    assert sweep_main(["--config", str(path), "--no-report"]) == 0
    out = Path(load_sweep(path).study.out)
    assert not (out / "best_config.yaml").exists()
    best_path = tmp_path / "configs" / "tuned.yaml"
    assert sweep_main(["--config", str(path), "--report", "--best-config", str(best_path)]) == 0
    study = load(path)
    best = min((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    text = best_path.read_text()
    assert text.startswith("# Best trial of sweep 'toy'")
    assert f"# python -m src.train_pref --config {best_path}" in text
    cfg = resolve(PrefConfig, str(best_path))
    expected = dict(best.user_attrs["config"], out=cfg.out)
    assert load_yaml(best_path) == expected
    assert cfg.lr == pytest.approx(best.user_attrs["lr_effective"])
    table = pd.read_csv(out / "trials.csv")
    assert table["number"].tolist() == [0, 1, 2, 3, 4]
    assert table.loc[0, "note"] == "baseline (base config)"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["number"] == best.number and summary["trials_per_hour"] > 0
    for name in ["optimization_history", "param_importances", "parallel_coordinate", "slice",
                 "intermediate_values"]:
        assert summary["plots"][name] == "ok"
        assert (out / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_config_errors_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": BASE, "space": {"lrr": [1]}}))
    assert sweep_main(["--config", str(bad)]) == 2
    assert "not a PrefConfig field" in capsys.readouterr().err


@pytest.mark.slow  # a sweep of several trials (worker processes for some)
def test_a_late_claim_on_a_full_study_is_recorded_as_surplus_and_not_run(tmp_path):
    """Two machines (no shared lock file) can both see one free slot and both ask for a
    trial; the one whose trial number ranks past n_trials must step back."""
    path = toy_sweep(tmp_path, study={"n_trials": 1, "pruner": "none"})
    spec = load_sweep(path)
    storage = st.make_storage(st.storage_url(spec))
    st.work(spec, storage=storage)
    calls = []
    late = st.TrialObjective(spec, lambda cfg, trial_hook=None: calls.append(cfg) or {"val_log_loss": 0.1},
                             n_trials=1)
    study = st.open_study(spec, storage)
    study.optimize(late, n_trials=1, catch=(Exception,))  # skips the count check, as a racing machine would
    trials = load(path).trials
    assert late.stop and not calls
    assert trials[1].state == TrialState.FAIL and trials[1].user_attrs["surplus"]
    assert st.tally(load(path))["counted"] == 1


def _interrupting_run(calls: list, where: str = "trial"):
    """A run_fn whose first call is interrupted (Ctrl-C) and whose later calls are the toy's."""
    def run(cfg, trial_hook=None, **kw):
        calls.append(cfg.lr)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return toy_run(cfg, trial_hook=trial_hook, **kw)
    return run


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
@pytest.mark.slow  # a sweep of several trials (worker processes for some)
def test_an_interrupted_trial_is_recorded_interrupted_and_its_parameters_rerun(tmp_path):
    path = toy_sweep(tmp_path, study={"n_trials": 2, "pruner": "none", "enqueue_base": False})
    spec = load_sweep(path)
    storage = st.make_storage(st.storage_url(spec))
    calls: list = []
    with pytest.raises(KeyboardInterrupt):
        st.work(spec, storage=storage, run_fn=_interrupting_run(calls))
    study = load(path)
    first, waiting = study.trials
    assert first.state == TrialState.FAIL and first.user_attrs["interrupted"]
    assert waiting.state == TrialState.WAITING and waiting.user_attrs["requeued_from"] == first.number
    assert waiting.system_attrs["fixed_params"] == first.params  # the same point, not a fresh draw
    st.work(spec, storage=storage, run_fn=_interrupting_run(calls))
    study = load(path)
    assert calls[1] == calls[0]  # the re-run trial trained the interrupted trial's lr
    assert st.tally(study)["complete"] == 2 and st.tally(study)["counted"] == 2
    from src.tune.report import trials_table
    notes = trials_table(study).set_index("number")["note"]
    assert notes[first.number].startswith("interrupted") and f"re-queued as trial {waiting.number}" in notes[first.number]
    assert notes[waiting.number] == f"re-run of interrupted trial {first.number}"
    assert "heartbeat" not in " ".join(notes)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
@pytest.mark.slow  # a sweep of several trials (worker processes for some)
def test_an_interrupt_that_lost_the_trials_own_record_is_still_requeued_and_not_called_stale(tmp_path, monkeypatch):
    """The interrupt can land where the trial cannot write its reason (a storage write, the
    pruning hook): the worker's loop re-queues it anyway, and the table says interrupted."""
    monkeypatch.setattr(st.TrialObjective, "_fail", staticmethod(lambda *a, **k: None))
    path = toy_sweep(tmp_path, study={"n_trials": 1, "pruner": "none", "enqueue_base": False})
    spec = load_sweep(path)
    with pytest.raises(KeyboardInterrupt):
        st.work(spec, storage=st.make_storage(st.storage_url(spec)), run_fn=_interrupting_run([]))
    study = load(path)
    from src.tune.report import trials_table
    note = trials_table(study).set_index("number")["note"][0]
    assert note == "interrupted; re-queued as trial 1"
    assert study.trials[1].system_attrs["fixed_params"] == study.trials[0].params


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
@pytest.mark.slow  # spawns a child process (the dead worker)
def test_a_dead_workers_trial_is_requeued_once(tmp_path):
    path = toy_sweep(tmp_path, study={"n_trials": 1, "pruner": "none", "enqueue_base": False})
    spec = load_sweep(path)
    storage = st.make_storage(st.storage_url(spec))
    study = st.open_study(spec, storage)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = study.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)})
    orphan.set_user_attr("host", __import__("socket").gethostname())
    orphan.set_user_attr("pid", dead.pid)
    assert st.reap_dead_local_trials(study, storage) == [orphan.number]
    st.reap_dead_local_trials(study, storage)  # a second look finds nothing new to queue
    queued = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("requeued_from") == orphan.number]
    assert len(queued) == 1 and queued[0].system_attrs["fixed_params"] == study.trials[orphan.number].params
