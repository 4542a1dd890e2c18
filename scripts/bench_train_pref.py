"""Training throughput of the classifier vs. a plain HF Trainer notebook, side by side.

    python scripts/bench_train_pref.py [--data CSV] [--pairs 192] [--max-len 256] [--steps 12]
    python scripts/bench_train_pref.py --model tiny-llama [--no-lora]     # a decoder: padded vs padding-free
    python scripts/bench_train_pref.py --model google/gemma-2-2b-it       # any decoder id on a GPU
    python scripts/bench_train_pref.py --model smollm2-135m-instruct --pairs 48 --steps 4 --batch-size 4

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
--padding-free (packed rows) (the last two with --padding-variants: default on for tiny-*,
off for real models), then the baseline a notebook would be (bench_decoder_trainer:
HF Trainer + AutoModelForSequenceClassification + peft LoRA SEQ_CLS on the same judge
sequences, padded to max_length) and the ratio ours/baseline. The first timed step
includes first-call overheads, on both sides. Prints useful tokens/s, padding fraction, peak memory (CUDA: max allocated; CPU:
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


def bench_decoder(records, args, tmp: Path, *, padding_free: bool, chunks: int | None = None,
                  checkpointing: bool | None = None) -> dict:
    """The classifier's own training (engine + PrefTask) on a decoder, padded or packed.
    `checkpointing` None: the config's auto choice, which depends on the memory free at the
    time; later runs pin the first run's choice so that the rows differ only in padding."""
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
                     select_frac=0.0, attn=args.attn, gradient_checkpointing=checkpointing,
                     **({"length_chunks": chunks} if chunks else {}))
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
    checkpointing = recompute_is_on(model.encoder)
    flops = decoder_flops_per_token(model.encoder.config, seq, lora=cfg.lora, checkpointing=checkpointing)
    # what the HF Trainer baseline must copy to train the same adapters the same way
    peft_cfg = next(iter(model.encoder.peft_config.values())) if cfg.lora else None
    same = {"lora_r": peft_cfg.r, "lora_alpha": peft_cfg.lora_alpha, "lora_dropout": peft_cfg.lora_dropout,
            "lora_targets": sorted(peft_cfg.target_modules)} if peft_cfg else {}
    del model, task
    return {"name": f"{args.model} cross {'LoRA' if cfg.lora else 'full'} {tag} ({choice.precision}"
                    + (", grad ckpt)" if checkpointing else ")"),
            "precision": choice.precision, "pairs_s": prog.examples / prog.train_seconds, "useful_tok_s": tok_s,
            "pad_fraction": 1 - prog.real_tokens / max(prog.padded_tokens, 1), "seq_len": seq,
            "peak_mib": peak / 2**20, "peak_kind": "GPU max allocated" if dev == "cuda" else "RSS growth",
            "gflops": tok_s * flops / 1e9, "steps": prog.steps if hasattr(prog, "steps") else args.steps,
            "device": dev, "checkpointing": checkpointing, **same}


def bench_decoder_trainer(records, args, tmp: Path, ours: dict) -> dict:
    """The baseline most users would write for a decoder judge: transformers.Trainer +
    AutoModelForSequenceClassification(num_labels=3) + peft LoRA (task_type SEQ_CLS, so the
    fresh score head trains too), pad token = eos. Same pairs as ours, both orders, through
    the same judge prompt and truncation (our encoder's ids, so both read the same tokens),
    padded to max_length as a notebook does (--baseline-padding longest: dynamic padding),
    same LoRA r/alpha/dropout/targets, same precision and gradient checkpointing as ours
    (so the ratio measures the training loop and batching, not a dtype or memory flag).
    Timed like ours: every step's wall time summed, the first step included."""
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainerCallback, TrainingArguments)

    from src.models import resolve
    from src.pref.config import PrefConfig
    from src.pref.inputs.encode import encode_pairs
    path = resolve(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
    model.config.pad_token_id = tok.pad_token_id
    lora = LoraConfig(task_type="SEQ_CLS", r=ours["lora_r"], lora_alpha=ours["lora_alpha"],
                      lora_dropout=ours["lora_dropout"], target_modules=ours["lora_targets"])
    model = get_peft_model(model, lora)
    enc = encode_pairs(records, tok, arch="cross", max_len=args.max_len,
                       prompt_budget=PrefConfig(model=args.model).prompt_budget)
    swap = {0: 1, 1: 0, 2: 2}  # B-first rows: the A/B verdict swaps, a tie stays
    rows = [(ids, int(y)) for ids, y in zip(enc.ids["ab"], enc.labels)]
    rows += [(ids, swap[int(y)]) for ids, y in zip(enc.ids.get("ba", []), enc.labels)]
    padding = args.baseline_padding
    pad = DataCollatorWithPadding(tok, padding="max_length" if padding == "max_length" else "longest",
                                  max_length=args.max_len if padding == "max_length" else None)
    counted = {"real": 0, "padded": 0, "rows": 0}

    def collate(feats):  # count the tokens the Trainer really fed (its sampler shuffles)
        batch = pad(feats)
        counted["real"] += int(batch["attention_mask"].sum())
        counted["padded"] += batch["attention_mask"].numel()
        counted["rows"] += len(feats)
        return batch

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            return {"input_ids": rows[i][0], "labels": rows[i][1]}

    step_s: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_s.append(time.perf_counter() - self.t0)

    bf16 = ours["precision"] == "bf16"
    targs = TrainingArguments(output_dir=str(tmp / "hf-decoder"), per_device_train_batch_size=2 * args.batch_size,
                              max_steps=args.steps + 1, learning_rate=2e-4, report_to=[], save_strategy="no",
                              logging_strategy="no", use_cpu=not torch.cuda.is_available(), disable_tqdm=True,
                              dataloader_num_workers=0, bf16=bf16, activation_checkpointing=ours["checkpointing"],
                              activation_checkpointing_kwargs={"use_reentrant": False}, remove_unused_columns=False)
    Trainer(model=model, args=targs, train_dataset=DS(), data_collator=collate, callbacks=[Clock()]).train()
    seconds = sum(step_s)
    seq = counted["real"] / max(counted["rows"], 1)
    tok_s = counted["real"] / seconds
    flops = decoder_flops_per_token(model.config, seq, lora=True, checkpointing=ours["checkpointing"])
    return {"name": f"HF Trainer+peft SEQ_CLS, pad {padding} ({ours['precision']}"
                    + (", grad ckpt)" if ours["checkpointing"] else ")"), "precision": ours["precision"],
            "pairs_s": counted["rows"] / 2 / seconds, "useful_tok_s": tok_s,
            "pad_fraction": 1 - counted["real"] / max(counted["padded"], 1), "seq_len": seq,
            "peak_mib": float("nan"), "peak_kind": "not measured (the process high-water mark is ours')",
            "gflops": tok_s * flops / 1e9, "steps": len(step_s), "device": ours["device"]}


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
                     stop_after_steps=args.steps, calibrate=False, out=str(tmp / "ours"), precision=args.precision,
                     gradient_checkpointing={"auto": None, "true": True, "false": False}[args.gradient_checkpointing])
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
    from src.models.tiny import is_tiny_decoder
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    mm = matmul_ceiling(dev)
    variants = is_tiny_decoder(args.model) if args.padding_variants is None else args.padding_variants
    with tempfile.TemporaryDirectory() as tmp:
        # the default (length chunks: rows of a batch sorted by length, each chunk its own
        # width); with --padding-variants also one chunk (plain dynamic padding: what
        # padding-free removes) and packed rows; then the HF Trainer baseline
        runs = [bench_decoder(records, args, Path(tmp), padding_free=False)]
        if variants:
            same = runs[0]["checkpointing"]
            runs += [bench_decoder(records, args, Path(tmp), padding_free=False, chunks=1, checkpointing=same),
                     bench_decoder(records, args, Path(tmp), padding_free=True, checkpointing=same)]
        # ours and the baseline alternate --repeats times: on a shared machine the load moves
        # between runs, so one pair's ratio is noise-prone; the median of the pairs is less so
        pairs: list[tuple[dict, dict]] = []
        for k in range(args.repeats if args.baseline and args.lora else 0):
            ours = runs[0] if k == 0 else bench_decoder(records, args, Path(tmp), padding_free=False,
                                                        checkpointing=runs[0]["checkpointing"])
            pairs.append((ours, bench_decoder_trainer(records, args, Path(tmp), runs[0])))
    if len(pairs) > 1:
        for k, (ours, b) in enumerate(pairs):
            ours["name"], b["name"] = f"#{k + 1} {ours['name']}", f"#{k + 1} {b['name']}"
    base = pairs[0][1] if pairs else None
    print(f"data: {data} ({len(records)} pairs), max_len {args.max_len}, batch {args.batch_size} pairs "
          f"(x2 orders), {args.steps} timed steps + 1 (first-call overheads included, both sides), device {dev}, "
          f"torch threads {torch.get_num_threads()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("matmul ceiling: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in mm.items())
          + ("" if "bf16" in mm else " (no native bf16 here: fp32 is the ceiling)"))
    if base is not None:
        print(f"baseline: same judge sequences (both orders) as ours, batch {2 * args.batch_size} rows, LoRA r="
              f"{runs[0]['lora_r']} alpha={runs[0]['lora_alpha']} on {','.join(runs[0]['lora_targets'])}, "
              f"gradient checkpointing {'on' if runs[0]['checkpointing'] else 'off'} (as ours)")
    print(f"{'run':56s} {'pairs/s':>8s} {'useful tok/s':>13s} {'pad':>6s} {'peak MiB':>9s} "
          f"{'model GFLOP/s':>14s} {'of ceiling':>10s}")
    rows = runs[:1] + [b for _, b in pairs[:1]] + runs[1:] + [r for pair in pairs[1:] for r in pair]
    for r in rows:
        ceiling = mm.get(r["precision"], mm["fp32"])
        r["share_of_ceiling"] = r["gflops"] / ceiling
        print(f"{r['name']:56s} {r['pairs_s']:8.2f} {r['useful_tok_s']:13.0f} {r['pad_fraction']:6.1%} "
              f"{r['peak_mib']:9.0f} {r['gflops']:14.2f} {r['share_of_ceiling']:10.1%}")
    summary: dict = {"matmul_gflops": mm, "runs": runs, "pairs": pairs}
    if variants:
        summary["packed_over_padded"] = ratio = runs[2]["useful_tok_s"] / runs[0]["useful_tok_s"]
        print(f"padding-free / padded (length chunks): {ratio:.2f}x useful tokens/s; / one chunk: "
              f"{runs[2]['useful_tok_s'] / runs[1]['useful_tok_s']:.2f}x (peak memory: {runs[2]['peak_kind']})")
    if pairs:
        ratios = [o["useful_tok_s"] / b["useful_tok_s"] for o, b in pairs]
        summary["ours_over_baseline"] = ratio = float(np.median(ratios))
        print(f"ours (length chunks) / HF Trainer baseline: {ratio:.2f}x useful tokens/s"
              + (f" (median of {len(ratios)} alternating pairs: {', '.join(f'{x:.2f}' for x in ratios)})"
                 if len(ratios) > 1 else f", {pairs[0][0]['pairs_s'] / pairs[0][1]['pairs_s']:.2f}x pairs/s"))
    elif args.baseline:
        print("HF Trainer baseline skipped: it is a LoRA baseline and this run is --no-lora")
    print(json.dumps(summary))


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
    ap.add_argument("--gradient-checkpointing", choices=["auto", "true", "false"], default="auto",
                    help="minilm: ours with recomputation as the run's auto choice, forced on, or off [auto]")
    ap.add_argument("--padding-variants", action=argparse.BooleanOptionalAction, default=None,
                    help="decoders: also one length chunk and --padding-free [default: on for tiny-*, off for real "
                         "models, where each run costs minutes on a CPU]")
    ap.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                    help="decoders: the HF Trainer + peft SEQ_CLS baseline on the same pairs [on]")
    ap.add_argument("--repeats", type=int, default=1,
                    help="decoders: run ours and the baseline alternately N times, report the median ratio "
                         "(a shared machine's load moves between runs)")
    ap.add_argument("--baseline-padding", choices=["max_length", "longest"], default="max_length",
                    help="decoder baseline: pad every row to --max-len as a notebook does, or to the batch's longest")
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
