"""Training throughput of the classifier vs. a plain HF Trainer notebook, side by side.

    python scripts/bench_train_pref.py [--data CSV] [--pairs 192] [--max-len 256] [--steps 12]
    python scripts/bench_train_pref.py --model tiny-llama [--no-lora]     # a decoder: padded vs padding-free
    python scripts/bench_train_pref.py --model google/gemma-2-2b-it       # any decoder id on a GPU

Encoders (default --model minilm): one run, same machine, same encoder, same pairs:
  * matmul: this machine's GEMM rate (the ceiling): fp32 always, bf16 only where the
    device has it natively (an emulated bf16 rate is no ceiling);
  * ours: src.pref (siamese, length-grouped dynamic padding, length chunks,
    bf16 autocast where the CPU has it), measured through the real engine;
  * baseline: transformers.Trainer + AutoModelForSequenceClassification on
    prompt+A+B text padded to max_length, fp32 (the usual notebook).
Prints useful (non-pad) tokens/s, pairs/s, model FLOP/s and ratios.

Decoders (tiny-* or any causal LM): the real engine on judge sequences (--arch cross,
LoRA unless --no-lora, gradient checkpointing as the config defaults), same pairs and
steps, three ways: padded as the classifier trains (length-grouped batches, rows cut
into length chunks of their own width), padded in one call (plain dynamic padding), and
--padding-free (packed rows). The first timed step includes first-call overheads. Prints useful tokens/s, padding fraction, peak memory (CUDA: max allocated; CPU:
peak RSS growth over the process before the run, MALLOC_MMAP_THRESHOLD_=65536 makes RSS
follow live memory), and model FLOP/s over useful tokens as a share of the measured
matmul rate of the precision it trained in.
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


def matmul_gflops(dtype: torch.dtype, n: int = 1024, reps: int = 20, device: str = "cpu") -> float:
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def native_bf16(device: str) -> bool:
    from src.device import _cuda_native_bf16, cpu_has_bf16
    return _cuda_native_bf16() if device.startswith("cuda") else device == "xpu" or (device == "cpu" and cpu_has_bf16())


def matmul_ceiling(device: str) -> dict[str, float]:
    """GFLOP/s of an n=1024 GEMM per dtype: fp32, and bf16 only where it is native."""
    mm = {"fp32": matmul_gflops(torch.float32, device=device)}
    if native_bf16(device):
        mm["bf16"] = matmul_gflops(torch.bfloat16, device=device, n=4096 if device != "cpu" else 1024)
    if device.startswith("cuda"):
        mm["fp32"] = matmul_gflops(torch.float32, device=device, n=4096)
    return mm


def _rss(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))
    except (OSError, StopIteration):
        return 0


def decoder_flops_per_token(cfg, seq_len: float, *, lora: bool, checkpointing: bool) -> float:
    """Training FLOPs per useful token of a decoder: 2N per pass over the linear weights
    (+ attention 4*L*heads*head_dim*seq), passes: forward + input-gradient backward, + the
    weight-gradient pass without LoRA (adapter gradients are negligible), + the recompute
    with gradient checkpointing."""
    c = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    h, layers, inter, heads = c.hidden_size, c.num_hidden_layers, c.intermediate_size, c.num_attention_heads
    hd = getattr(c, "head_dim", None) or h // heads
    kv = (getattr(c, "num_key_value_heads", None) or heads) * hd
    n = layers * (2 * h * heads * hd + 2 * h * kv + 3 * h * inter)  # q,o + k,v + gate,up,down
    passes = 2 + (0 if lora else 1) + (1 if checkpointing else 0)
    return passes * (2 * n + 4 * layers * heads * hd * seq_len)


def bench_decoder(records, args, tmp: Path, *, padding_free: bool, chunks: int | None = None) -> dict:
    """The classifier's own training (engine + PrefTask) on a decoder, padded or packed."""
    from src.engine.recompute import recompute_is_on
    from src.engine.loop import make_accelerator, train
    from src.pref.config import PrefConfig
    from src.pref.inputs.encode import encode_pairs
    from src.pref.task import PrefTask
    from src.pref.train import build, check_before_work
    tag = "packed" if padding_free else "padded" + (f", {chunks} length chunk" if chunks else "")
    cfg = PrefConfig(model=args.model, arch="cross", lora=args.lora, lora_r=args.lora_r, max_len=args.max_len,
                     batch_size=args.batch_size, epochs=1, progress=False, stop_after_steps=args.steps + 1,
                     calibrate=False, out=str(tmp / tag), precision=args.precision, padding_free=padding_free,
                     select_frac=0.0, attn=args.attn, **({"length_chunks": chunks} if chunks else {}))
    check_before_work(cfg)
    acc, choice = make_accelerator(cfg.train)
    dev = acc.device.type
    if dev == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    base = _rss("VmRSS")
    model, tok = build(cfg, acc.device.type)
    enc = encode_pairs(records, tok, arch="cross", max_len=cfg.max_len, prompt_budget=cfg.prompt_budget)
    model.set_style_stats(torch.from_numpy(enc.style))
    task = PrefTask(cfg, enc, enc, tok, dev)
    prog = train(cfg.train, task, model, tmp / tag, acc)
    peak = torch.cuda.max_memory_allocated() if dev == "cuda" else _rss("VmHWM") - base
    seq = prog.real_tokens / max(prog.examples * 2, 1)  # both orders of each pair
    tok_s = prog.real_tokens / prog.train_seconds
    flops = decoder_flops_per_token(model.encoder.config, seq, lora=cfg.lora,
                                    checkpointing=recompute_is_on(model.encoder))
    del model, task
    return {"name": f"{args.model} cross {'LoRA' if cfg.lora else 'full'} {tag} ({choice.precision})",
            "precision": choice.precision, "pairs_s": prog.examples / prog.train_seconds, "useful_tok_s": tok_s,
            "pad_fraction": 1 - prog.real_tokens / max(prog.padded_tokens, 1), "seq_len": seq,
            "peak_mib": peak / 2**20, "peak_kind": "GPU max allocated" if dev == "cuda" else "RSS growth",
            "gflops": tok_s * flops / 1e9, "steps": prog.steps if hasattr(prog, "steps") else args.steps,
            "device": dev}


def flops_per_token(model_cfg, seq_len: float) -> float:
    """Training FLOPs per token: 6 x non-embedding params + attention (PaLM appendix B)."""
    h, layers, inter = model_cfg.hidden_size, model_cfg.num_hidden_layers, model_cfg.intermediate_size
    params = layers * (4 * h * h + 2 * h * inter)
    return 6 * params + 12 * layers * h * seq_len


def bench_ours(records, args, tmp: Path) -> dict:
    from src.engine.loop import make_accelerator, train
    from src.pref.config import PrefConfig
    from src.pref.inputs.encode import encode_pairs
    from src.pref.task import PrefTask
    from src.pref.train import build
    cfg = PrefConfig(model="minilm", max_len=args.max_len, length_chunks=getattr(args, "chunks", 4), batch_size=args.batch_size, epochs=1, progress=False,
                     stop_after_steps=args.steps, calibrate=False, out=str(tmp / "ours"), precision=args.precision)
    acc, choice = make_accelerator(cfg.train)
    model, tok = build(cfg)
    enc = encode_pairs(records, tok, arch="siamese", max_len=cfg.max_len, prompt_budget=cfg.prompt_budget)
    model.set_style_stats(torch.from_numpy(enc.style))
    task = PrefTask(cfg, enc, enc, tok, acc.device.type)
    # one warm-up step so both sides are timed without first-call overheads
    train(PrefConfig(**{**cfg.__dict__, "stop_after_steps": 1, "out": str(tmp / "warm")}), task, build(cfg)[0],
          tmp / "warm", acc)
    prog = train(cfg.train, task, model, tmp / "ours", acc)
    seq = prog.real_tokens / max(prog.examples * 2, 1)
    return {"name": f"ours (siamese, {choice.precision})", "pairs_s": prog.examples / prog.train_seconds,
            "useful_tok_s": prog.real_tokens / prog.train_seconds,
            "pad_fraction": 1 - prog.real_tokens / prog.padded_tokens, "seq_len": seq,
            "model_cfg": model.encoder.config}


def bench_trainer(records, args, tmp: Path) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    from src.models import resolve
    path = resolve("minilm")
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


def is_decoder_model(name: str) -> bool:
    from src.models.tiny import is_tiny_decoder
    if is_tiny_decoder(name):
        return True
    from src.models import resolve
    from src.pref.modeling.backbone import _load_config, is_decoder_config
    return is_decoder_config(_load_config(name, resolve(name), False))


def main_decoder(args, records, data: str) -> None:
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    mm = matmul_ceiling(dev)
    with tempfile.TemporaryDirectory() as tmp:
        # the default (length chunks: rows of a batch sorted by length, each chunk its own
        # width), one chunk (plain dynamic padding: what padding-free removes), packed rows
        runs = [bench_decoder(records, args, Path(tmp), padding_free=False),
                bench_decoder(records, args, Path(tmp), padding_free=False, chunks=1),
                bench_decoder(records, args, Path(tmp), padding_free=True)]
    print(f"data: {data} ({len(records)} pairs), max_len {args.max_len}, batch {args.batch_size} pairs "
          f"(x2 orders), {args.steps} timed steps, device {dev}, torch threads {torch.get_num_threads()}")
    print("matmul ceiling: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in mm.items())
          + ("" if "bf16" in mm else " (no native bf16 here: fp32 is the ceiling)"))
    print(f"{'run':52s} {'pairs/s':>8s} {'useful tok/s':>13s} {'pad':>6s} {'peak MiB':>9s} "
          f"{'model GFLOP/s':>14s} {'of ceiling':>10s}")
    for r in runs:
        ceiling = mm.get(r["precision"], mm["fp32"])
        r["share_of_ceiling"] = r["gflops"] / ceiling
        print(f"{r['name']:52s} {r['pairs_s']:8.2f} {r['useful_tok_s']:13.0f} {r['pad_fraction']:6.1%} "
              f"{r['peak_mib']:9.0f} {r['gflops']:14.2f} {r['share_of_ceiling']:10.1%}")
    ratio = runs[2]["useful_tok_s"] / runs[0]["useful_tok_s"]
    print(f"padding-free / padded (length chunks): {ratio:.2f}x useful tokens/s; / one chunk: "
          f"{runs[2]['useful_tok_s'] / runs[1]['useful_tok_s']:.2f}x (peak memory: {runs[2]['peak_kind']})")
    print(json.dumps({"matmul_gflops": mm, "runs": runs, "packed_over_padded": ratio}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="minilm", help="minilm (encoder vs HF Trainer) or a decoder: tiny-llama, "
                                                      "tiny-qwen2, tiny-gemma2, any causal LM id/folder")
    ap.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True, help="decoders: LoRA [on]")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--attn", default="", help="decoders: attention kernel [default: the backbone's default]")
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
    if args.model != "minilm" and is_decoder_model(args.model):
        main_decoder(args, [r for r in records if r.label is not None], data)
        return

    mm = matmul_ceiling("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        ours = bench_ours(records, args, Path(tmp))
        base = bench_trainer(records, args, Path(tmp))
    print(f"data: {data} ({len(records)} pairs), max_len {args.max_len}, batch {args.batch_size}, "
          f"{args.steps} timed steps, torch threads {torch.get_num_threads()}")
    print("matmul ceiling: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in mm.items())
          + ("" if "bf16" in mm else " (no native bf16 here: fp32 is the ceiling)"))
    print(f"{'run':44s} {'pairs/s':>8s} {'useful tok/s':>13s} {'pad':>6s} {'model GFLOP/s':>14s} {'of ceiling':>10s}")
    rows = {}
    for r, ceiling in ((ours, mm.get("bf16", mm["fp32"]) if "bf16" in ours["name"] else mm["fp32"]), (base, mm["fp32"])):
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
