"""Training throughput of a decoder backbone with LoRA under the classifier's input path.

    python scripts/bench_llm_backbone.py --model tiny-llama [--lora-r 16] [--max-len 512] [--steps 8]

Real pairs (../shared/data/real_pairs_dev.csv when present) rendered as judge sequences
(src.pref.inputs.judge, both orders in each step), length-grouped batches (engine.batching),
`last` pooling, a linear head, AdamW on the adapters + head: the same pieces the
classifier trains with. Prints useful (non-pad) tokens/s, padding fraction, peak RSS
growth (with MALLOC_MMAP_THRESHOLD_=65536 on CPU so RSS follows live memory), model FLOP/s (LoRA training: forward 2N + input-gradient 2N per token, +2N
recompute with checkpointing, + attention) as a share of this machine's measured matmul
rate (fp32, and bf16 only where the device has it natively: an emulated rate is no ceiling), and the --plan estimate of the widest timed step beside the measured memory. Any model on a GPU; tiny
decoders on a CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _rss(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))
    except OSError:
        return 0


def flops_per_token(cfg, seq_len: float, ckpt: bool) -> float:
    c = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    h, layers, inter = c.hidden_size, c.num_hidden_layers, c.intermediate_size
    heads = c.num_attention_heads
    hd = getattr(c, "head_dim", None) or h // heads
    kv = (getattr(c, "num_key_value_heads", None) or heads) * hd
    n = layers * (2 * h * heads * hd + 2 * h * kv + 3 * h * inter)  # non-embedding linear weights
    passes = 3 if ckpt else 2  # forward, input-gradient backward (+ recompute); LoRA weight grads are small
    return passes * (2 * n + 4 * layers * heads * hd * seq_len)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny-llama")
    ap.add_argument("--data", default="")
    ap.add_argument("--pairs", type=int, default=96)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4, help="pairs per step (2x sequences: both orders)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from src.data.arena import read_pairs
    from src.data.synthetic import demo_csv
    from src.engine.batching import pad_sequences, plan_batches
    from src.pref.modeling.backbone import LoraSpec, hidden_states, load_backbone, pool
    from src.pref.inputs.judge import JudgeBudget, JudgeEncoder
    from src.pref.modeling.memplan import PlanInput, plan

    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_pairs_dev.csv"
    data = args.data or (str(shared) if shared.exists() else str(demo_csv(2000)))
    recs = [r for r in read_pairs(data).records if r.label is not None]
    rng = np.random.default_rng(0)
    records = [recs[i] for i in rng.choice(len(recs), size=min(args.pairs, len(recs)), replace=False)]

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    bb = load_backbone(args.model, device=args.device, dtype=dtype, lora=LoraSpec(r=args.lora_r),
                       gradient_checkpointing=args.gradient_checkpointing, log=print)
    model = bb.model.to(args.device).train()
    head = torch.nn.Linear(bb.hidden_size, 3).to(args.device)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    enc = JudgeEncoder(bb.tokenizer).encode_records(records, JudgeBudget(args.max_len))
    lengths = [max(len(a), len(b)) for a, b in zip(enc["ab"], enc["ba"])]
    batches = plan_batches(lengths, args.batch_size, seed=0, epoch=0)
    labels = torch.tensor([r.label for r in records])
    from bench_train_pref import matmul_ceiling  # fp32, and bf16 only where native (one owner)
    mm = matmul_ceiling(args.device)

    def step(idx):
        seqs = [enc["ab"][i] for i in idx] + [enc["ba"][i] for i in idx]
        ids, mask = pad_sequences(seqs, bb.tokenizer.pad_token_id)
        ids, mask = ids.to(args.device), mask.to(args.device)
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.device == "cuda"):
            logits = head(pool(hidden_states(model, ids, mask, bb.decoder), mask, "last")).float()
        y = labels[idx].to(args.device)
        swap = torch.tensor([1, 0, 2], device=args.device)[y]
        loss = torch.nn.functional.cross_entropy(logits, torch.cat([y, swap]))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return int(mask.sum()), int(mask.numel()), ids.shape[1]

    step(batches[0])  # warm-up
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = _rss("VmRSS")
    real = padded = 0
    widths = []
    _sync(args.device)
    t = time.perf_counter()
    for idx in batches[1:1 + args.steps]:
        r, p, w = step(idx)
        real, padded = real + r, padded + p
        widths.append(w)
    _sync(args.device)
    secs = time.perf_counter() - t
    peak = (torch.cuda.max_memory_allocated() if args.device == "cuda" else _rss("VmHWM") - base)
    seq = real / max(len(widths) * 2 * args.batch_size, 1)
    tok_s = real / secs
    gflops = tok_s * flops_per_token(model.config, seq, args.gradient_checkpointing) / 1e9
    est = plan(PlanInput(bb.path, lora=True, lora_r=args.lora_r, precision="bf16" if args.device == "cuda" else "fp32",
                         max_len=int(max(widths)), batch_size=args.batch_size,
                         gradient_checkpointing=args.gradient_checkpointing, attn=bb.info.get("attn")),
               runtime_gib=0)
    est_bytes = (est.activations_gib + (est.weights_gib + est.trainable_state_gib if args.device == "cuda" else 0)) * 2**30
    out = {"model": args.model, "device": args.device, "steps": len(widths), "seconds": secs,
           "useful_tok_s": tok_s, "pairs_s": len(widths) * args.batch_size / secs,
           "pad_fraction": 1 - real / max(padded, 1), "mean_width": float(np.mean(widths)),
           "peak_bytes": peak, "plan_bytes": est_bytes, "model_gflops": gflops, "matmul_gflops": mm,
           "share_of_bf16": gflops / mm["bf16"] if "bf16" in mm else None, "share_of_fp32": gflops / mm["fp32"]}
    print(f"{args.model} on {args.device}: {tok_s:,.0f} useful tok/s, {out['pairs_s']:.2f} pairs/s, "
          f"padding {out['pad_fraction']:.1%}, peak {'GPU memory' if args.device == 'cuda' else 'RSS growth'} "
          f"{peak / 2**20:,.0f} MiB (plan {est_bytes / 2**20:,.0f} MiB), model {gflops:.1f} GFLOP/s = "
          (f"{out['share_of_bf16']:.1%} of bf16 matmul ({mm['bf16']:.0f} GFLOP/s), " if "bf16" in mm else
             "no native bf16 here, ")
          + f"{out['share_of_fp32']:.1%} of fp32 matmul ({mm['fp32']:.0f} GFLOP/s)")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
