"""Training throughput of our generative stage vs TRL's SFTTrainer, side by side.

Same tiny GPT-2 (same initial weights), same tokenised chat data (response-only
labels, conditional EOS, distinct pad token), same batch size, LR, schedule, epochs,
precision and CPU threads. The two trainers run in turns, `--repeats` times, and the
median is reported, so a busy machine slows both alike.

    python scripts/bench_train_gen.py                       # tiny model, CPU, ~1-2 min
    python scripts/bench_train_gen.py --episodes 600 --max-len 256 --repeats 3 --json out.json

Two rates per trainer:
- step tokens/s: real (non-pad) input tokens over the time spent in optimizer steps.
  Ours: the engine's own clock (collate + forward + backward + optimizer step). TRL:
  on_step_begin -> on_step_end of a callback (forward + backward + optimizer step; its
  data loading falls outside, which favours TRL).
- end-to-end tokens/s: the same tokens over the wall time of the whole training call
  (ours includes one evaluation pass and the checkpoint writes at the end; TRL saves nothing).
Both trained models are then scored on the same validation rows (loss per label token),
to show the two trainers did the same work.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def make_data(episodes: int, max_len: int, seed: int, folder: Path):
    from src.gen.prepare_chat import PrepareChatConfig, prepare
    from src.gen.dataset import load_tokenized
    prepare(PrepareChatConfig(synthetic_episodes=episodes, tokenizer="tiny", val_frac=0.05, seed=seed,
                              tokenize={"max_len": max_len}), str(folder / "data"))
    return load_tokenized(folder / "data")


def fresh_model(tok, seed: int):
    from src.models.tiny import build_tiny_model
    from src.gen.model import ensure_pad_token
    model = build_tiny_model(tok.vocab_size, tok.eos_token_id, seed=seed)
    ensure_pad_token(model, copy.deepcopy(tok))
    return model


@torch.inference_mode()
def val_loss(model, data, tok) -> float:
    """Validation loss per label token, the same function for both trainers' models."""
    from src.gen.task import token_losses
    from src.gen.collate import collate
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(data.val), 16):
        batch = collate(data.val[i:i + 16], tok.pad_token_id, 1)
        loss, mask = token_losses(model, batch)
        total, n = total + float(loss.sum()), n + int(mask.sum())
    return total / n


def run_ours(data, tok, args, folder: Path) -> dict:
    from src.engine.loop import make_accelerator, train
    from src.gen.config import GenConfig
    from src.gen.task import GenTask
    cfg = GenConfig(model="tiny", finetune="full", device="cpu", precision="fp32", num_threads=args.threads,
                    batch_size=args.batch_size, grad_accum=1, lr=args.lr, schedule="constant", warmup_ratio=0.05,
                    epochs=args.epochs, weight_decay=0.0, max_grad_norm=1.0, sample_count=0, progress=False,
                    seed=args.seed, out=str(folder))
    model = fresh_model(tok, args.seed)
    accelerator, _ = make_accelerator(cfg.train)
    torch.manual_seed(args.seed)  # dropout masks: as train_gen's run() does (TRL seeds itself)
    task = GenTask(cfg, data.train, data.val, tok, folder, "cpu")
    t0 = time.perf_counter()
    p = train(cfg.train, task, model, folder, accelerator)
    wall = time.perf_counter() - t0
    return {"steps": p.step, "tokens": p.real_tokens, "padded_tokens": p.padded_tokens,
            "step_tokens_per_s": p.real_tokens / p.train_seconds, "e2e_tokens_per_s": p.real_tokens / wall,
            "val_loss": val_loss(model, data, tok), "wall_s": wall}


def run_trl(data, tok, args, folder: Path) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class StepClock(TrainerCallback):
        def __init__(self):
            self.seconds, self.t = 0.0, None

        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.seconds += time.perf_counter() - self.t

    ds = Dataset.from_list([{"input_ids": [int(i) for i in r["input_ids"]], "labels": [int(i) for i in r["labels"]]}
                            for r in data.train])
    import math
    total = max(1, math.ceil(args.epochs * math.ceil(len(ds) / args.batch_size)))
    conf = SFTConfig(output_dir=str(folder), per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
                     learning_rate=args.lr, lr_scheduler_type="constant_with_warmup",
                     warmup_steps=int(0.05 * total),  # the engine's warmup, in whole steps
                     num_train_epochs=args.epochs, weight_decay=0.0, max_grad_norm=1.0, seed=args.seed,
                     save_strategy="no", eval_strategy="no", report_to=[], use_cpu=True, bf16=False, fp16=False,
                     logging_steps=10**6, disable_tqdm=True, dataloader_num_workers=0, max_length=None,
                     packing=False, dataset_kwargs={"skip_prepare_dataset": True}, remove_unused_columns=False)
    torch.set_num_threads(args.threads)
    clock = StepClock()
    trainer = SFTTrainer(model=fresh_model(tok, args.seed), args=conf, train_dataset=ds,
                         processing_class=copy.deepcopy(tok), callbacks=[clock])
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    n = len(ds)
    # every example is seen once per epoch: its real tokens are the data's (TRL drops no rows here)
    tokens = int(round(sum(len(r["input_ids"]) for r in data.train) * args.epochs))
    return {"steps": out.global_step, "tokens": tokens, "step_tokens_per_s": tokens / clock.seconds,
            "e2e_tokens_per_s": tokens / wall, "val_loss": val_loss(trainer.model, data, tok), "wall_s": wall,
            "rows": n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=400)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for both trainers")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)

    import transformers
    import trl
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_data(args.episodes, args.max_len, args.seed, tmp)
        tok = data.tokenizer()
        results: dict[str, list[dict]] = {"ours": [], "trl": []}
        for k in range(args.repeats):
            for name, fn in (("ours", run_ours), ("trl", run_trl)):
                r = fn(data, tok, args, tmp / f"{name}{k}")
                results[name].append(r)
                print(f"[{name} {k + 1}/{args.repeats}] {r['steps']} steps, {r['step_tokens_per_s']:,.0f} step tok/s, "
                      f"{r['e2e_tokens_per_s']:,.0f} end-to-end tok/s, val loss {r['val_loss']:.3f}",
                      flush=True)
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("step_tokens_per_s", "e2e_tokens_per_s",
                                                                    "val_loss", "steps")}
           for name, rs in results.items()}
    summary = {
        "setup": {**vars(args), "train_rows": len(data.train), "torch": torch.__version__,
                  "transformers": transformers.__version__, "trl": trl.__version__, "device": "cpu fp32"},
        "median": med,
        "ratio_step": med["ours"]["step_tokens_per_s"] / med["trl"]["step_tokens_per_s"],
        "ratio_e2e": med["ours"]["e2e_tokens_per_s"] / med["trl"]["e2e_tokens_per_s"],
        "runs": results,
    }
    print(f"\n{'':<8}{'step tok/s':>14}{'end-to-end tok/s':>20}{'val loss':>12}{'steps':>8}")
    for name in ("ours", "trl"):
        m = med[name]
        print(f"{name:<8}{m['step_tokens_per_s']:>14,.0f}{m['e2e_tokens_per_s']:>20,.0f}"
              f"{m['val_loss']:>12.3f}{m['steps']:>8.0f}")
    print(f"ours / trl: {summary['ratio_step']:.2f}x (steps), {summary['ratio_e2e']:.2f}x (end to end)")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
