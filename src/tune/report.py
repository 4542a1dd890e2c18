"""What a sweep leaves behind, in <out>/:

    best_config.yaml     the best trial's resolved PrefConfig, ready for `python -m src.train_pref --config`
    trials.csv           one row per trial: number, state, value, params, duration, reason
    summary.json         counts, best and baseline values, trials/hour
    plots/*.png          optimisation history, parameter importances, parallel coordinates,
                         slice, intermediate values (optuna.visualization.matplotlib)

Everything is read from the storage (each trial stores its resolved config),
so `python -m src.sweep --report` works on any machine that reaches it.
"""
from __future__ import annotations

import json
import warnings
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from ..config import from_dict, save_yaml  # noqa: E402
from ..engine.rundir import RunDir  # noqa: E402
from ..files import atomic_write_text  # noqa: E402
from ..pref.config import PrefConfig  # noqa: E402
from . import study as st  # noqa: E402


def trial_note(t: optuna.trial.FrozenTrial, requeued: dict[int, int] | None = None) -> str:
    a = t.user_attrs
    if t.state == TrialState.FAIL:
        again = f"; re-queued as trial {requeued[t.number]}" if requeued and t.number in requeued else ""
        if again and not a.get("fail_reason"):  # interrupted before it could record why
            return "interrupted" + again
        return a.get("fail_reason", "no reason recorded: the worker was killed or its heartbeats stopped") + again
    if t.state == TrialState.PRUNED and "pruned_at" in a:
        p = a["pruned_at"]
        return f"pruned at epoch {p['epoch']:.2f} (optimizer step {p['optimizer_step']})"
    if "requeued_from" in a:
        return f"re-run of interrupted trial {a['requeued_from']}"
    return "baseline (base config)" if a.get("baseline") else ""


def trials_table(study: optuna.Study) -> pd.DataFrame:
    rows, requeued = [], st.requeued_as(study)
    for t in study.get_trials(deepcopy=False):
        end = t.datetime_complete
        rows.append({
            "number": t.number, "state": t.state.name, "value": t.value,
            **{f"param_{k}": v for k, v in t.params.items()},
            "lr_effective": t.user_attrs.get("lr_effective"),
            "seconds": t.user_attrs.get("seconds",
                                        (end - t.datetime_start).total_seconds() if end and t.datetime_start else None),
            "last_pruning_step": max(t.intermediate_values) if t.intermediate_values else None,
            "worker": t.user_attrs.get("worker"), "host": t.user_attrs.get("host"),
            "run_dir": t.user_attrs.get("run_dir"), "note": trial_note(t, requeued),
        })
    return pd.DataFrame(rows)


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return min(done, key=lambda t: (t.value, t.number)) if done else None


def write_best_config(study: optuna.Study, path: Path) -> PrefConfig | None:
    best = best_trial(study)
    if best is None or "config" not in best.user_attrs:
        return None
    data = dict(best.user_attrs["config"])
    data["out"] = str(Path("runs") / f"{study.study_name}-best")
    cfg = from_dict(PrefConfig, data, source=f"trial {best.number}")  # still a valid config?
    source = study.user_attrs.get("sweep", {}).get("source", "?")
    metric = study.user_attrs.get("metric", "val_log_loss")
    baseline = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                     if t.user_attrs.get("baseline")), None)
    vs = f"; baseline trial {baseline.number}: {baseline.value:.5f}" if baseline else ""
    threads = best.user_attrs.get("torch_threads")
    header = (f"# Best trial of sweep '{study.study_name}' ({source}): trial {best.number}, "
              f"{metric} {best.value:.6f}{vs}.\n"
              f"# The resolved config (base + fixed + searched values; lr as trained). Written "
              f"{datetime.now():%Y-%m-%d %H:%M}"
              + (f"; the trial ran with {threads} torch thread(s) on {best.user_attrs.get('host', '?')}" if threads
                 else "") + ".\n"
              f"# python -m src.train_pref --config {path}")
    save_yaml(cfg, path, header=header)
    return cfg


def _save(ax, path: Path) -> None:
    fig = np.atleast_1d(ax).flat[0].figure  # plot_slice returns one axis per parameter
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_plots(study: optuna.Study, folder: Path) -> dict[str, str]:
    """PNG plots; returns {name: "ok" | why it was skipped}."""
    from optuna.visualization import matplotlib as ovm
    folder.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = {
        "optimization_history": (ovm.plot_optimization_history, 1),
        "intermediate_values": (ovm.plot_intermediate_values, 1),
        "param_importances": (ovm.plot_param_importances, 2),
        "parallel_coordinate": (ovm.plot_parallel_coordinate, 2),
        "slice": (ovm.plot_slice, 1),
    }
    status = {}
    for name, (fn, need) in plots.items():
        if len(complete) < need:
            status[name] = f"skipped: needs {need} complete trial(s), have {len(complete)}"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks these experimental
                _save(fn(study), folder / f"{name}.png")
            status[name] = "ok"
        except Exception as e:  # noqa: BLE001 - a plot must not sink the report
            plt.close("all")
            status[name] = f"skipped: {type(e).__name__}: {e}"
    return status


def summarize(study: optuna.Study) -> dict:
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.is_finished() and t.datetime_start and t.datetime_complete]
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    out: dict = {"study": study.study_name, "trials": len(trials), **counts}
    if finished:
        span = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds()
        out["wall_seconds"] = round(span, 1)
        out["trials_per_hour"] = round(len(finished) / max(span, 1e-9) * 3600, 2)
        for state in (TrialState.COMPLETE, TrialState.PRUNED):
            secs = [(t.datetime_complete - t.datetime_start).total_seconds() for t in finished if t.state == state]
            if secs:
                out[f"mean_seconds_{state.name.lower()}"] = round(float(np.mean(secs)), 1)
    best = best_trial(study)
    if best is not None:
        out["best"] = {"number": best.number, "value": best.value, "params": best.params}
    base = next((t for t in trials if t.user_attrs.get("baseline")), None)
    if base is not None:
        out["baseline"] = {"number": base.number, "state": base.state.name, "value": base.value}
    return out


def write_report(study: optuna.Study, out: Path, *, best_config: Path | None = None, plots: bool = True,
                 quiet: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    table = trials_table(study)
    atomic_write_text(out / "trials.csv", table.to_csv(index=False))
    summary = summarize(study)
    cfg_path = best_config or out / "best_config.yaml"
    if write_best_config(study, cfg_path) is not None:
        summary["best_config"] = str(cfg_path)
    if plots:
        summary["plots"] = write_plots(study, RunDir(out).plots)  # a sweep dir keeps plots/ as a run does
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    if not quiet:
        print(format_table(table))
        print(_summary_line(summary))
    return summary


def format_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no trials)"
    cols = ["number", "state", "value"] + [c for c in table.columns if c.startswith("param_")] + ["seconds", "note"]
    t = table[cols].rename(columns=lambda c: c.removeprefix("param_"))
    t["note"] = t["note"].str.slice(0, 70)
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.float_format", "{:.4g}".format):
        return t.to_string(index=False)


def _summary_line(s: dict) -> str:
    parts = [f"[sweep] {s['study']}: {s.get('complete', 0)} complete, {s.get('pruned', 0)} pruned, "
             f"{s.get('fail', 0)} failed"]
    if "trials_per_hour" in s:
        parts.append(f"{s['trials_per_hour']:.1f} trials/hour")
    if "best" in s:
        parts.append(f"best trial {s['best']['number']}: {s['best']['value']:.5f}")
    if s.get("baseline", {}).get("value") is not None:
        parts.append(f"baseline {s['baseline']['value']:.5f}")
    if "best_config" in s:
        parts.append(f"-> {s['best_config']}")
    return ", ".join(parts)
