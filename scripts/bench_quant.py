"""4-bit and 8-bit QLoRA against fp32 LoRA, side by side in one invocation: validation log loss
(calibrated and not), paired difference on the same rows, peak RSS, pairs/s, wall time.

    python scripts/bench_quant.py --model tiny-llama --max-rows 400 --out runs/bench_quant
    python scripts/bench_quant.py --model smollm2-135m-instruct --data ../shared/data/real_pairs_dev.csv \\
        --max-rows 200 --max-len 256 --arch cross --out runs/bench_quant_smollm2
    python scripts/bench_quant.py ... --variants lora,4bit,8bit,adamw8bit   # add the 8-bit optimizer

Each variant is one `python -m src.train_pref` process (so peak RSS is that run's own, imports
included) with the same arguments, seed, rows, split and validation rows; only the variant's
flag differs: `lora` (fp32 base), `4bit` (--load-in-4bit, nf4 + double quantisation),
`8bit` (--load-in-8bit, LLM.int8), `adamw8bit` (fp32 base, --optim adamw8bit). Precision is
fp32 unless `--precision` is passed through (quantised bases compute in the run's precision).
Extra arguments after `--` go to every run unchanged. The runs are sequential, so on a shared
machine the pairs/s of each depends on the load while it ran: repeat or read ratios with care.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.pref.inference.compare import paired  # noqa: E402

VARIANTS = {"lora": [], "4bit": ["--load-in-4bit"], "8bit": ["--load-in-8bit"], "adamw8bit": ["--optim", "adamw8bit"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-llama")
    ap.add_argument("--data", default=None, help="training CSV (default: the synthetic demo data)")
    ap.add_argument("--max-rows", type=int, default=400)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--arch", default="cross", choices=["cross", "siamese"])
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--variants", default="lora,4bit,8bit")
    ap.add_argument("--out", default="runs/bench_quant")
    args, extra = ap.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    common = ["--model", args.model, "--lora", "--arch", args.arch, "--max-rows", str(args.max_rows),
              "--max-len", str(args.max_len), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
              "--precision", args.precision, "--device", "cpu", "--progress", "false"]
    if args.data:
        common += ["--data", args.data]
    out = Path(args.out)
    results = {}
    for v in variants:
        run_dir = out / v
        cmd = [sys.executable, "-m", "src.train_pref", *common, *VARIANTS[v], *extra, "--out", str(run_dir)]
        print("[bench]", " ".join(cmd), flush=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n")
            return proc.returncode
        done = [line for line in proc.stdout.splitlines() if line.startswith("[done]")]
        print(done[-1] if done else "[bench] (no [done] line)", flush=True)
        results[v] = {**json.loads((run_dir / "metrics.json").read_text()), "wall_s": wall}
    base = variants[0]
    print(f"\n{args.model}, {args.arch}, {args.max_rows} rows, max_len {args.max_len}, {args.epochs:g} epoch(s), "
          f"batch {args.batch_size}, {args.precision}; paired difference vs {base} on the same validation rows")
    print(f"{'variant':10s} {'val cal':>8s} {'uncal':>8s} {'prior':>7s} {'n_val':>5s} {'peak RSS MiB':>12s} "
          f"{'pairs/s':>8s} {'x ' + base:>9s} {'wall s':>7s}  paired cal diff (s.e.)")
    for v, m in results.items():
        p = paired([out / base], [out / v]) if v != base else None
        ratio = m["train_pairs_per_s"] / results[base]["train_pairs_per_s"]
        print(f"{v:10s} {m['val_log_loss']:8.4f} {m['val_log_loss_uncalibrated']:8.4f} "
              f"{m['val_log_loss_class_prior']:7.4f} {m['n_val']:5d} {m['peak_rss_mb']:12.0f} "
              f"{m['train_pairs_per_s']:8.2f} {ratio:9.2f} {m['wall_s']:7.0f}  "
              + (f"{p.diff:+.4f} ({p.se:.4f})" if p else "-"))
    (out / "bench_quant.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
