"""A sweep optimises its base config's task metric when the YAML names none (issue 22
follow-up): binary -> val_binary_log_loss (src/data/tasks.py SWEEP_METRICS says why not the
error rate), arena3 -> val_log_loss as before; an explicit `study: {metric: ...}` wins.
Trials run the seconds-fast toy objective in this process."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from src.tune import study as st
from src.tune.space import load_sweep
from tests.test_sweep import load, toy_sweep

SETTLED = {"n_trials": 2, "pruner": "none", "enqueue_base": False}


@pytest.mark.parametrize("task, study, expected", [
    ("binary", {}, "val_binary_log_loss"),
    ("arena3", {}, "val_log_loss"),
    ("binary", {"metric": "val_binary_error"}, "val_binary_error"),  # the YAML's choice is kept
    ("arena3", {"metric": "val_accuracy"}, "val_accuracy"),
])
def test_the_study_metric_defaults_to_the_base_tasks_metric(tmp_path, task, study, expected):
    spec = load_sweep(toy_sweep(tmp_path, fixed={"task": task}, study=study))
    assert spec.study.metric == expected


@pytest.mark.parametrize("task, metric", [("binary", "val_binary_log_loss"), ("arena3", "val_log_loss")])
def test_a_sweep_without_a_metric_minimises_the_tasks_metric(tmp_path, task, metric):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = toy_sweep(tmp_path, fixed={"task": task}, study=SETTLED)
    spec = load_sweep(path)
    st.work(spec, storage=st.make_storage(st.storage_url(spec)))
    study = load(path)
    assert study.user_attrs["metric"] == metric
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2
    for t in done:
        reported = t.user_attrs["metrics"]
        assert t.value == pytest.approx(reported[metric])
        if task == "binary":  # the toy's binary log loss differs from its 3-class one: not minimised by accident
            assert reported["val_log_loss"] != pytest.approx(reported[metric])
        else:
            assert "val_binary_log_loss" not in reported
    assert study.best_value == min(t.user_attrs["metrics"][metric] for t in done)
