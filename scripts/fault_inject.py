"""Kill a training process at many points, resume it, and check it ends exactly as an
uninterrupted run: the on-demand, larger version of tests/test_fault_injection.py.

    OMP_NUM_THREADS=1 python scripts/fault_inject.py --points 40            # 40 kill points
    OMP_NUM_THREADS=1 python scripts/fault_inject.py --points 40 --seed 7 --twice 5

Each trial SIGKILLs a real training process (the engine loop on a tiny model, see
src/engine/crashtest.py) at a named point (PREFPIPE_FAULT, exact: mid checkpoint write,
between a swap's renames, mid metrics line, after a step) or at a random time, resumes it
and compares the eval log, final and best weights, best predictions and the checkpoint
folder with the uninterrupted run's. `--twice N` adds N trials killed again during their
resume. Prints a table per point kind and exits 1 when any trial did not survive.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.engine.crashtest import Harness, harness_seed, kill_points  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=40, help="kill points to try (named + random-time)")
    ap.add_argument("--random-share", type=float, default=0.2, help="share of them at random times")
    ap.add_argument("--twice", type=int, default=0, help="extra trials also killed during their resume")
    ap.add_argument("--seed", type=int, default=None, help="kill-point seed (default: $FAULT_SEED, else 0)")
    ap.add_argument("--keep", help="keep the run folders here (default: a temp folder, removed)")
    args = ap.parse_args(argv)
    if args.seed is None:
        args.seed = harness_seed()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        h = Harness(work)
        h.run_reference()
        print(f"reference run: {h.reference_seconds:.2f} s; fault points passed: "
              + ", ".join(f"{k} x{v}" for k, v in sorted(h.passes.items())), flush=True)
        plan = kill_points(h.passes, args.points, seed=args.seed, random_share=args.random_share)
        rng = random.Random(args.seed)
        for i in range(args.twice):
            plan.append((f"twice {i + 1}", f"step:{rng.randint(1, h.passes['step'] - 1)}", None))
        rows = defaultdict(lambda: [0, 0, 0])  # kind -> tried, killed, survived
        failures = []
        for name, fault, at in plan:
            twice = name.startswith("twice")
            trial = h.trial(name, fault, at, resume_fault=f"ckpt-swap:{rng.randint(1, 3)}" if twice else "")
            kind = "twice (step, then ckpt-swap)" if twice else name.split(":")[0].rsplit(" ", 1)[0]
            row = rows[kind]
            row[0] += 1
            row[1] += trial.killed
            row[2] += trial.survived
            if not trial.survived:
                failures.append(trial)
            print(f"  {name:<28} {'killed' if trial.killed else 'ended first'}  "
                  f"{'survived' if trial.survived else 'FAILED ' + trial.detail}", flush=True)
        print(f"\n{'point':<30} {'tried':>6} {'killed':>7} {'survived':>9}")
        for kind, (tried, killed, survived) in sorted(rows.items()):
            print(f"{kind:<30} {tried:>6} {killed:>7} {survived:>9}")
        total = [sum(r[i] for r in rows.values()) for i in range(3)]
        print(f"{'total':<30} {total[0]:>6} {total[1]:>7} {total[2]:>9}")
        print(f"({time.perf_counter() - t0:.0f} s; a random-time kill that lands after the run ended counts as "
              f"'ended first' and still has to resume to the same result)")
        for f in failures:
            print(f"FAILED {f.name}: {f.detail}", file=sys.stderr)
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
