"""Parse throughput and peak memory of src.data.arena.read_pairs vs. a naive pandas baseline.

    python scripts/bench_parse.py                    # 57,000 synthetic rows (generated once, then reused)
    python scripts/bench_parse.py --path train.csv   # any arena CSV

Each reader runs in its own fresh subprocess, so resource.getrusage's maxrss (a
process high-water mark) belongs to that reader alone. In it: best of --repeats
timed runs (no tracing), then one run under tracemalloc for the Python-heap peak.

The baseline is what a notebook would do: pandas.read_csv, then json.loads on
every prompt/response cell and argmax of the winner columns. It has no
quarantine: one bad row would stop it (or silently become NaN).
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_ROWS = 57_000


def parse_arena(path: str) -> int:
    from src.data.arena import read_pairs
    result = read_pairs(path)
    return len(result.records) + len(result.quarantine)


def parse_naive(path: str) -> int:
    import pandas as pd
    df = pd.read_csv(path)
    turns = {c: [json.loads(cell) for cell in df[c]] for c in ("prompt", "response_a", "response_b")}
    labels = df[["winner_model_a", "winner_model_b", "winner_tie"]].to_numpy().argmax(axis=1)
    assert len(labels) == len(turns["prompt"])
    return len(df)


READERS = {"read_pairs": parse_arena, "naive_pandas": parse_naive}


def maxrss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def worker(name: str, path: str, repeats: int) -> dict:
    fn = READERS[name]
    # import what the reader needs before measuring, so the first timed run is not an import
    import pandas  # noqa: F401
    import src.data.arena  # noqa: F401
    rss_before = maxrss_mib()
    times, rows = [], 0
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        rows = fn(path)
        times.append(time.perf_counter() - t0)
    rss_after = maxrss_mib()
    gc.collect()
    tracemalloc.start()
    fn(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    best = min(times)
    return {"reader": name, "rows": rows, "best_s": best, "times_s": times, "rows_per_s": rows / best,
            "tracemalloc_peak_mib": peak / 2**20, "maxrss_mib": rss_after, "maxrss_before_mib": rss_before}


def ensure_data(rows: int, seed: int, folder: Path) -> Path:
    path = folder / f"bench_{rows}_seed{seed}.csv"
    if not path.exists():
        # In a subprocess: this process must stay small, because a child's maxrss starts from
        # the parent's high-water mark (Linux keeps it across fork/exec).
        t0 = time.perf_counter()
        print(f"generating {rows:,} synthetic rows -> {path} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "src.data.synthetic", "--rows", str(rows), "--seed", str(seed),
                        "--out", str(path)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        print(f"  done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", help="an arena CSV to parse (default: a generated synthetic file)")
    ap.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows of the generated file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folder", default=str(ROOT / "data" / "synthetic"), help="where the generated file lives")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per reader; the best counts")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--worker", choices=sorted(READERS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:  # inside the subprocess: measure one reader, print one JSON line
        print(json.dumps(worker(args.worker, args.path, args.repeats)))
        return 0

    path = Path(args.path) if args.path else ensure_data(args.rows, args.seed, Path(args.folder))
    size_mib = path.stat().st_size / 2**20
    results = {}
    for name in READERS:
        proc = subprocess.run([sys.executable, __file__, "--worker", name, "--path", str(path),
                               "--repeats", str(args.repeats)], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            print(f"error: {name} failed:\n{proc.stderr}", file=sys.stderr)
            return 1
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])

    ours, base = results["read_pairs"], results["naive_pandas"]
    print(f"file: {path} ({ours['rows']:,} rows, {size_mib:.1f} MiB); best of {args.repeats}; python {sys.version.split()[0]}")
    head = f"{'':28}{'read_pairs':>14}{'naive pandas':>14}{'ratio':>9}"
    print(head)
    print("-" * len(head))
    lines = [("rows/s", "rows_per_s", "{:,.0f}"), ("best time (s)", "best_s", "{:.2f}"),
             ("tracemalloc peak (MiB)", "tracemalloc_peak_mib", "{:.0f}"),
             ("maxrss (MiB)", "maxrss_mib", "{:.0f}"), ("maxrss before parse (MiB)", "maxrss_before_mib", "{:.0f}")]
    for label, key, fmt in lines:
        ratio = ours[key] / base[key] if base[key] else float("nan")
        print(f"{label:28}{fmt.format(ours[key]):>14}{fmt.format(base[key]):>14}{ratio:>8.2f}x")
    print("ratio = read_pairs / naive pandas (rows/s: >1 is faster; time and memory: <1 is smaller)")
    if args.json:
        Path(args.json).write_text(json.dumps({"file": str(path), "size_mib": size_mib, **results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
