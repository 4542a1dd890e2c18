"""Parse time and peak memory of src.data.arena.read_pairs vs. a naive pandas baseline.

    python scripts/bench_parse.py                    # 57,000 synthetic rows (generated once, then reused)
    python scripts/bench_parse.py --path train.csv   # any arena CSV
    python scripts/bench_parse.py --path /tmp/big.csv --grow ../shared/data/real_pool_unlabeled.csv --times 18

Each timed run is a fresh subprocess, so resource.getrusage's maxrss (a process
high-water mark) belongs to that reader alone, and the readers take turns run by
run (read_pairs, careful, naive, read_pairs, ...), so a load that moves on a shared
machine hits them alike; each keeps its best time. Then one run per reader under
tracemalloc for the Python-heap peak.

read_pairs takes pandas' fast path on a clean file (src/data/fast_csv.py; the first
line says which path it took); `careful` is the csv-module reader it falls back
to (src.data.arena.iter_arena_csv), which every damaged file gets. The baseline
is what a notebook would do: pandas.read_csv, then json.loads on every
prompt/response cell and argmax of the winner columns. It has no quarantine: one
bad row would stop it (or silently become NaN).
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


def parse_arena(path: str) -> tuple[int, str]:
    from src.data.arena import read_pairs
    result = read_pairs(path)
    return len(result.records) + len(result.quarantine), result.reader


def parse_careful(path: str) -> tuple[int, str]:
    from src.data.arena import iter_arena_csv
    from src.data.rows import DEFAULT_MAX_CELL_CHARS
    items = list(iter_arena_csv(Path(path), DEFAULT_MAX_CELL_CHARS))  # kept, as read_pairs keeps them
    return len(items), "careful"


def parse_naive(path: str) -> tuple[int, str]:
    import pandas as pd
    df = pd.read_csv(path)
    turns = {c: [json.loads(cell) for cell in df[c]] for c in ("prompt", "response_a", "response_b")}
    labels = df[["winner_model_a", "winner_model_b", "winner_tie"]].to_numpy().argmax(axis=1)
    assert len(labels) == len(turns["prompt"])
    return len(df), "pandas"


READERS = {"read_pairs": parse_arena, "careful": parse_careful, "naive_pandas": parse_naive}


def maxrss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS. Not src.engine.memory.peak_rss_mb: that module
    # imports torch, whose ~0.3 GiB would land in every reader's peak and blur the comparison
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def worker(name: str, path: str, trace: bool) -> dict:
    """One timed run of one reader (no tracing), or with `trace` one run under tracemalloc."""
    fn = READERS[name]
    # import what the reader needs before measuring, so the timed run is not an import
    import pandas  # noqa: F401
    import src.data.arena  # noqa: F401
    rss_before = maxrss_mib()
    gc.collect()
    if trace:
        tracemalloc.start()
        rows, path_taken = fn(path)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {"reader": name, "rows": rows, "tracemalloc_peak_mib": peak / 2**20}
    t0 = time.perf_counter()
    rows, path_taken = fn(path)
    seconds = time.perf_counter() - t0
    return {"reader": name, "rows": rows, "path": path_taken, "s": seconds,
            "maxrss_mib": maxrss_mib(), "maxrss_before_mib": rss_before}


def grow(pool: Path, out: Path, times: int, seed: int) -> None:
    """`pool` (id, prompt, response_a, response_b) repeated `times` with new ids and random
    one-hot winner columns: a big labelled file from the real unlabelled pool."""
    import csv
    import random
    rng = random.Random(seed)
    with open(pool, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header, rows = next(reader), list(reader)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header + ["winner_model_a", "winner_model_b", "winner_tie"])
        for n in range(times * len(rows)):
            hot = ["0", "0", "0"]
            hot[rng.randrange(3)] = "1"
            w.writerow([str(10_000_001 + n)] + rows[n % len(rows)][1:] + hot)


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
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per reader, taking turns; the best counts")
    ap.add_argument("--readers", default=",".join(READERS), help="comma-separated subset of: " + ", ".join(READERS))
    ap.add_argument("--grow", metavar="POOL", help="first write --path from this CSV, repeated --times (if absent)")
    ap.add_argument("--times", type=int, default=18, help="copies of --grow's pool")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--worker", choices=sorted(READERS), help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--grow-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:  # inside the subprocess: measure one reader, print one JSON line
        print(json.dumps(worker(args.worker, args.path, args.trace)))
        return 0
    if args.grow_only:  # inside the subprocess: this process must stay small (see ensure_data)
        grow(Path(args.grow), Path(args.path), args.times, args.seed)
        return 0

    if args.grow and args.path and not Path(args.path).exists():
        subprocess.run([sys.executable, __file__, "--grow-only", "--grow", args.grow, "--path", args.path,
                        "--times", str(args.times), "--seed", str(args.seed)], check=True)
    path = Path(args.path) if args.path else ensure_data(args.rows, args.seed, Path(args.folder))
    size_mib = path.stat().st_size / 2**20
    names = [n for n in args.readers.split(",") if n]
    if "read_pairs" not in names or "naive_pandas" not in names:
        ap.error("--readers must include read_pairs and naive_pandas (the ratio is theirs)")

    def run(name: str, trace: bool = False) -> dict:
        cmd = [sys.executable, __file__, "--worker", name, "--path", str(path)] + (["--trace"] if trace else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"error: {name} failed:\n{proc.stderr}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    runs: dict[str, list[dict]] = {n: [] for n in names}
    for _ in range(args.repeats):
        for name in names:
            runs[name].append(run(name))
    results = {}
    for name in names:
        best = min(runs[name], key=lambda r: r["s"])
        results[name] = {**best, "best_s": best["s"], "times_s": [r["s"] for r in runs[name]],
                         "rows_per_s": best["rows"] / best["s"], "maxrss_mib": max(r["maxrss_mib"] for r in runs[name]),
                         "tracemalloc_peak_mib": run(name, trace=True)["tracemalloc_peak_mib"]}

    ours, base = results["read_pairs"], results["naive_pandas"]
    print(f"file: {path} ({ours['rows']:,} rows, {size_mib:.1f} MiB); best of {args.repeats}, readers taking "
          f"turns; python {sys.version.split()[0]}; read_pairs took the {ours['path']} path")
    head = f"{'':28}" + "".join(f"{n:>14}" for n in names) + f"{'ratio':>9}"
    print(head)
    print("-" * len(head))
    lines = [("rows/s", "rows_per_s", "{:,.0f}"), ("best time (s)", "best_s", "{:.2f}"),
             ("tracemalloc peak (MiB)", "tracemalloc_peak_mib", "{:.0f}"),
             ("maxrss (MiB)", "maxrss_mib", "{:.0f}"), ("maxrss before parse (MiB)", "maxrss_before_mib", "{:.0f}")]
    for label, key, fmt in lines:
        ratio = ours[key] / base[key] if base[key] else float("nan")
        print(f"{label:28}" + "".join(f"{fmt.format(results[n][key]):>14}" for n in names) + f"{ratio:>8.2f}x")
    print("all times (s): " + "; ".join(f"{n} " + ", ".join(f"{t:.2f}" for t in results[n]["times_s"]) for n in names))
    print("ratio = read_pairs / naive pandas (rows/s: >1 is faster; time and memory: <1 is smaller)")
    if args.json:
        Path(args.json).write_text(json.dumps({"file": str(path), "size_mib": size_mib, **results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
