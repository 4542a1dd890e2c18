"""Training throughput of the classifier vs. a plain HF Trainer notebook, side by side.

    python scripts/bench_train_pref.py [--data CSV] [--pairs 192] [--max-len 256] [--steps 12]

One run, same machine, same encoder (the embedded MiniLM), same pairs:
  * matmul: this machine's bf16 and fp32 GEMM rate (the ceiling);
  * ours: src.pref (siamese, length-grouped dynamic padding, length chunks,
    bf16 autocast where the CPU has it), measured through the real engine;
  * baseline: transformers.Trainer + AutoModelForSequenceClassification on
    prompt+A+B text padded to max_length, fp32 (the usual notebook).
Prints useful (non-pad) tokens/s, pairs/s, model FLOP/s and ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def matmul_gflops(dtype: torch.dtype, n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def flops_per_token(model_cfg, seq_len: float) -> float:
    """Training FLOPs per token: 6 x non-embedding params + attention (PaLM appendix B)."""
    h, layers, inter = model_cfg.hidden_size, model_cfg.num_hidden_layers, model_cfg.intermediate_size
    params = layers * (4 * h * h + 2 * h * inter)
    return 6 * params + 12 * layers * h * seq_len


def bench_ours(records, args, tmp: Path) -> dict:
    from src.engine.loop import make_accelerator, train
    from src.pref.config import PrefConfig
    from src.pref.encode import encode_pairs
    from src.pref.task import PrefTask
    from src.pref.train import build
    cfg = PrefConfig(model="minilm", max_len=args.max_len, length_chunks=getattr(args, "chunks", 4), batch_size=args.batch_size, epochs=1, progress=False,
                     stop_after_steps=args.steps, calibrate=False, out=str(tmp / "ours"), precision=args.precision)
    acc, choice = make_accelerator(cfg)
    model, tok = build(cfg)
    enc = encode_pairs(records, tok, arch="siamese", max_len=cfg.max_len, prompt_budget=cfg.prompt_budget)
    model.set_style_stats(torch.from_numpy(enc.style))
    task = PrefTask(cfg, enc, enc, tok, acc.device.type)
    # one warm-up step so both sides are timed without first-call overheads
    train(PrefConfig(**{**cfg.__dict__, "stop_after_steps": 1, "out": str(tmp / "warm")}), task, build(cfg)[0],
          tmp / "warm", acc)
    prog = train(cfg, task, model, tmp / "ours", acc)
    seq = prog.real_tokens / max(prog.examples * 2, 1)
    return {"name": f"ours (siamese, {choice.precision})", "pairs_s": prog.examples / prog.train_seconds,
            "useful_tok_s": prog.real_tokens / prog.train_seconds,
            "pad_fraction": 1 - prog.real_tokens / prog.padded_tokens, "seq_len": seq,
            "model_cfg": model.encoder.config}


def bench_trainer(records, args, tmp: Path) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    from src.pref.registry import resolve_model
    path = resolve_model("minilm")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
    texts = [" ".join(r.prompt) + " [SEP] " + " ".join(r.response_a) + " [SEP] " + " ".join(r.response_b)
             for r in records]
    enc = tok(texts, truncation=True, max_length=args.max_len, padding="max_length")
    labels = [r.label for r in records]

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return {"input_ids": torch.tensor(enc["input_ids"][i]), "attention_mask": torch.tensor(enc["attention_mask"][i]),
                    "labels": torch.tensor(labels[i])}
    targs = TrainingArguments(output_dir=str(tmp / "hf"), per_device_train_batch_size=args.batch_size,
                              max_steps=args.steps + 1, learning_rate=5e-5, report_to=[], save_strategy="no",
                              logging_strategy="no", use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
                              dataloader_num_workers=0)
    times = []

    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            times.append(time.perf_counter())

        def on_train_end(self, *a, **k):
            times.append(time.perf_counter())
    Trainer(model=model, args=targs, train_dataset=DS(), callbacks=[Clock()]).train()
    seconds = times[-1] - times[1]  # skip the first (warm-up) step
    pairs = args.steps * args.batch_size
    real = float(np.mean([sum(m) for m in enc["attention_mask"]]))
    return {"name": "HF Trainer (cross, pad to max_len, fp32)", "pairs_s": pairs / seconds,
            "useful_tok_s": pairs * real / seconds, "pad_fraction": 1 - real / args.max_len,
            "seq_len": float(args.max_len), "model_cfg": model.config}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="", help="arena CSV (default: ../shared/data/real_pairs_dev.csv if present, else synthetic)")
    ap.add_argument("--pairs", type=int, default=192)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from src.data.arena import read_pairs
    from src.data.synthetic import demo_csv
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_pairs_dev.csv"
    data = args.data or (str(shared) if shared.exists() else str(demo_csv(2000)))
    rng = np.random.default_rng(0)
    recs = read_pairs(data).records
    records = [recs[i] for i in rng.choice(len(recs), size=min(args.pairs, len(recs)), replace=False)]

    mm = {"bf16": matmul_gflops(torch.bfloat16), "fp32": matmul_gflops(torch.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        ours = bench_ours(records, args, Path(tmp))
        base = bench_trainer(records, args, Path(tmp))
    print(f"data: {data} ({len(records)} pairs), max_len {args.max_len}, batch {args.batch_size}, "
          f"{args.steps} timed steps, torch threads {torch.get_num_threads()}")
    print(f"matmul ceiling: bf16 {mm['bf16']:.0f} GFLOP/s, fp32 {mm['fp32']:.0f} GFLOP/s "
          f"(bf16/fp32 {mm['bf16'] / mm['fp32']:.2f}x)")
    print(f"{'run':44s} {'pairs/s':>8s} {'useful tok/s':>13s} {'pad':>6s} {'model GFLOP/s':>14s} {'of ceiling':>10s}")
    rows = {}
    for r, ceiling in ((ours, mm["bf16"] if "bf16" in ours["name"] else mm["fp32"]), (base, mm["fp32"])):
        gflops = r["useful_tok_s"] * flops_per_token(r["model_cfg"], r["seq_len"]) / 1e9
        rows[r["name"]] = {"pairs_s": r["pairs_s"], "useful_tok_s": r["useful_tok_s"], "gflops": gflops}
        print(f"{r['name']:44s} {r['pairs_s']:8.2f} {r['useful_tok_s']:13.0f} {r['pad_fraction']:6.1%} "
              f"{gflops:14.1f} {gflops / ceiling:10.1%}")
    ratio = ours["useful_tok_s"] / base["useful_tok_s"]
    print(f"ours / baseline: {ratio:.2f}x useful tokens/s, {ours['pairs_s'] / base['pairs_s']:.2f}x pairs/s "
          f"(goal: >= 2x useful tokens/s)")
    print(json.dumps({"matmul_gflops": mm, "runs": rows, "useful_tok_ratio": ratio}))


if __name__ == "__main__":
    main()
