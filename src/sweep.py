"""Optuna hyperparameter sweep over train_pref runs.

    python -m src.sweep --config configs/sweep/demo.yaml                  # SQLite under sweeps/demo/
    python -m src.sweep --config configs/sweep/demo.yaml --workers 2      # 2 processes, one study
    python -m src.sweep --config configs/sweep/real_dev.yaml --n-trials 30 --timeout 3600
    python -m src.sweep --config configs/sweep/demo.yaml --storage postgresql://user@dbhost/optuna
        (the same command on several machines shares one study)
    python -m src.sweep --config configs/sweep/demo.yaml --storage journal:sweeps/demo/journal.log
    python -m src.sweep --config configs/sweep/demo.yaml --report         # best config, table, plots only
    optuna-dashboard sqlite:///sweeps/demo/study.db                       # watch it live (pip install optuna-dashboard)

--n-trials is the number of finished trials the study should hold: re-running
the same command resumes an interrupted sweep; a larger N adds trials.
At the end: <out>/best_config.yaml (run it with python -m src.train_pref
--config), trials.csv, summary.json, plots/*.png.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m src.sweep", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--config", required=True, help="sweep YAML (configs/sweep/*.yaml)")
    ap.add_argument("--n-trials", type=int, help="finished trials the study should hold")
    ap.add_argument("--timeout", type=float, help="seconds after which no new trial starts (per worker)")
    ap.add_argument("--storage", help="SQLAlchemy URL or journal:<path> [default: sqlite:///<out>/study.db]")
    ap.add_argument("--study-name", help="study name in the storage [default: from the YAML / file name]")
    ap.add_argument("--workers", type=int, help="worker processes on this machine")
    ap.add_argument("--out", help="study folder (trial run dirs, report) [default: sweeps/<study name>]")
    ap.add_argument("--pruner", choices=["median", "hyperband", "none"], help="override the YAML's pruner")
    ap.add_argument("--report", action="store_true", help="only write the report (best config, table, plots)")
    ap.add_argument("--best-config", help="where to write the best config [default: <out>/best_config.yaml]")
    ap.add_argument("--no-report", action="store_true", help="skip the report at the end")
    ap.add_argument("--no-plots", action="store_true", help="report without plots")
    ap.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    return ap


def resolve_spec(args: argparse.Namespace):
    from .tune.space import load_sweep
    from .tune.study import STORAGE_ENV
    spec = load_sweep(args.config)
    st = spec.study
    if args.study_name:
        st.name = args.study_name
    if args.storage is None and os.environ.get(STORAGE_ENV):  # a worker spawned by --workers
        args.storage = os.environ[STORAGE_ENV]
    for name in ("n_trials", "timeout", "storage", "workers", "out", "pruner"):
        value = getattr(args, name)
        if value is not None:
            setattr(st, name, value)
    st.__post_init__()  # re-check the overridden values (ranges and choices declared at the fields)
    return spec


def worker_args(args: argparse.Namespace) -> list[str]:
    """The options a spawned worker needs to act on the same study (the storage URL,
    which may hold a password, travels in the environment: see launch_workers)."""
    out = []
    for name in ("n_trials", "timeout", "study_name", "out", "pruner"):
        value = getattr(args, name)
        if value is not None:
            out += ["--" + name.replace("_", "-"), str(value)]
    return out


def _sigterm_as_interrupt(signum, frame):  # a killed worker records its trial as interrupted
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        spec = resolve_spec(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .tune import report, study as st

    url = st.storage_url(spec)
    storage = st.make_storage(url)
    out = st.study_dir(spec)
    study = st.open_study(spec, storage)
    if args.report:
        report.write_report(study, out, best_config=Path(args.best_config) if args.best_config else None,
                            plots=not args.no_plots)
        return 0
    st.reap_dead_local_trials(study, storage)
    t = st.tally(study)
    todo = max(0, spec.study.n_trials - t["finished"] - t["running"])
    if args.worker_index == 0 or spec.study.workers > 1:
        print(f"[sweep] study '{spec.study.name}' in {st.display_url(url)}: {t['finished']} finished "
              f"({t['complete']} complete, {t['pruned']} pruned, {t['fail']} failed), {t['running']} running; "
              f"target {spec.study.n_trials}: {todo} to go with {spec.study.workers} worker(s) here; "
              f"trial run dirs in {out / 'trials'}", flush=True)
    rc = 0
    try:
        if spec.study.workers > 1:
            rc = st.launch_workers(spec, spec.study.workers, worker_args(args), storage=args.storage)
        else:
            try:
                old = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
            except ValueError:  # not the main thread (embedded use): leave signals alone
                old = None
            try:
                st.work(spec, worker=args.worker_index, storage=storage)
            finally:
                if old is not None:
                    signal.signal(signal.SIGTERM, old)
    except KeyboardInterrupt:
        print(f"\n[sweep] interrupted: the running trial is recorded as interrupted (not counted); "
              f"run the same command again to resume", file=sys.stderr)
        rc = 130
    if not args.no_report:
        report.write_report(study, out, best_config=Path(args.best_config) if args.best_config else None,
                            plots=not args.no_plots)
    return rc


if __name__ == "__main__":
    sys.exit(main())
