"""One generative fine-tuning run: data -> model (+ pad token, LoRA) -> engine -> run dir.

`run(cfg, resume=...)` is what `python -m src.train_gen` calls. The run dir holds:
config.yaml, data/ (when prepared on the fly; reused on --resume), initial_eval.json,
metrics.jsonl (one line per eval), metrics.json (final: eval_loss, eval_perplexity,
train_tokens_per_s, ...), val_losses.csv (per validation sequence, worst first),
samples.jsonl (generations from fixed prompts at each eval), checkpoint/best (for
generation: `python -m src.generate --run RUN`), checkpoint/last (for --resume),
plots/ (loss and perplexity curves; reply length and stopping of the samples, src/gen/reply_stats.py).
File names are src/engine/rundir.py's. `--objective dpo` reads pairwise files instead
(src/gen/dpo_data.py, src/gen/dpo.py) and writes data_report.json in the run dir.

Long runs in parts: `--parts N --part K` trains the K-th of N consecutive slices of the
run's optimizer steps (so of its shuffled data), checkpoints, and stops; part K+1
continues from that checkpoint. A crash inside a part resumes inside it (same command
plus --resume); `--skip-batches M` steps over a batch that crashes the run.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ..config import load_yaml, save_yaml
from ..engine import plots
from ..engine.interrupt import TrainingInterrupted
from ..engine.rundir import METRICS_LOG, SAMPLES, RunDir
from ..files import atomic_write_text, truncate_jsonl, write_json
from ..engine.loop import make_accelerator, run_steps, run_summary, train
from ..errors import UsageError
from .checkpoint import best_val_losses, has_resume_state, save_checkpoint, steps_done
from .config import GenConfig
from .dataset import load_tokenized
from ..models import check_name
from .model import load_base, prepare_for_training, resolve_load_dtype
from .render import tokenize_config
from .reply_stats import reply_stats_plot
from .task import GenTask, clm_labels, response_start

RAW_SUFFIXES = (".jsonl", ".json", ".csv")


class RunError(UsageError):
    """A problem with what the run was asked to do (bad --data, parts out of order)."""


def default_run_dir(cfg: GenConfig) -> Path:
    return Path("runs") / f"gen-{Path(cfg.model).name}-{cfg.objective}-{time.strftime('%Y%m%d-%H%M%S')}"


# --- data ----------------------------------------------------------------------------------

def is_prepared(path: str | Path) -> bool:
    return (Path(path) / "meta.json").exists()


def prepare_config(cfg: GenConfig) -> Any:
    """A PrepareChatConfig for --data (a prepare YAML or a raw file) or, with no data, the
    synthetic chats. Labels are always response-only: the CLM objective labels every
    token at load time, and the prompt/response boundary still picks the sample prompts."""
    from .prepare_chat import PrepareChatConfig
    tok = {"template": cfg.template, "labels": "response_only", "max_len": cfg.max_len, "packing": cfg.packing,
           "distinct_pad": cfg.distinct_pad}
    base: dict[str, Any] = {"seed": cfg.seed, "val_frac": cfg.val_frac, "tokenizer": cfg.model}
    if not cfg.data:
        if cfg.model != "tiny":
            raise RunError("--data is required for a real model (synthetic chats are for --model tiny)")
        return PrepareChatConfig(**base, synthetic_episodes=cfg.synthetic_episodes, tokenize=tok)
    path = Path(cfg.data)
    if path.suffix in (".yaml", ".yml"):
        d = load_yaml(path)
        if d.get("tokenizer", cfg.model) != cfg.model:
            print(f"[data] {path}: tokenizer {d['tokenizer']!r} replaced by the model's ({cfg.model!r})")
        t = dict(d.get("tokenize") or {})
        if t.get("labels", "response_only") != "response_only" and cfg.objective == "sft":
            raise RunError(f"{path}: tokenize.labels is {t['labels']!r}; --objective sft needs response_only "
                             "(or train with --objective clm)")
        t["labels"] = "response_only"
        t["distinct_pad"] = cfg.distinct_pad  # one owner: --distinct-pad, so data and model agree
        return PrepareChatConfig(**{**d, "tokenizer": cfg.model, "tokenize": t})
    if path.suffix.lower() in RAW_SUFFIXES and path.is_file():
        spec = {"path": str(path), "max_rows": cfg.max_rows, "max_rows_pick": cfg.max_rows_pick, "seed": cfg.seed}
        return PrepareChatConfig(**base, inputs=[spec], tokenize=tok)
    raise RunError(f"--data {path}: not a prepared dataset (no meta.json), a prepare YAML or a chat file "
                     f"({', '.join(RAW_SUFFIXES)})")


def load_data(cfg: GenConfig, run_dir: Path, accelerator: Any, resume: bool) -> Any:
    """The tokenised dataset: --data as prepared, or prepared once into RUN/data."""
    if cfg.data and is_prepared(cfg.data):
        data = load_tokenized(cfg.data)
    else:
        target = RunDir(run_dir).data
        with accelerator.main_process_first():  # one process prepares, the others then read
            if accelerator.is_main_process and not (resume and is_prepared(target)):
                from .prepare_chat import prepare, summary
                s = summary(prepare(prepare_config(cfg), str(target), overwrite=True))
                accelerator.print(f"[data] prepared {target}: {s['kept']} episodes kept of {s['read']['episodes']}, "
                                  f"{s['train_rows']} train / {s['val_rows']} val rows")
        data = load_tokenized(target)
    made_with = data.meta.get("tokenizer")
    if made_with and made_with != cfg.model:
        if "tiny" in (made_with, cfg.model):  # certainly different vocabularies
            raise RunError(f"{data.folder}: tokenised with {made_with!r}, but the model is {cfg.model!r}")
        accelerator.print(f"[data] note: tokenised with {made_with!r}, training {cfg.model!r} (same tokenizer?)")
    if not cfg.distinct_pad and data.meta.get("pad_token_id") != data.meta.get("eos_token_id"):
        raise RunError(f"{data.folder}: prepared with a pad token distinct from EOS; --distinct-pad false needs "
                       "data prepared with tokenize.distinct_pad false (or a raw file / prepare YAML as --data)")
    if not data.train or not data.val:
        raise RunError(f"{data.folder}: {len(data.train)} train / {len(data.val)} val rows; need both "
                         "(more data or a larger --val-frac)")
    return data


def sample_prompt_ids(cfg: GenConfig, data: Any, tokenizer: Any) -> list[list[int]]:
    """Fixed prompts for the logged samples: --sample-prompts as user messages, else the
    context of the first validation rows up to their final response."""
    if cfg.sample_prompts:
        from ..data.chat import USER, ChatEpisode, Turn
        from .encode import encode_prompt
        tok_cfg = tokenize_config(data.meta.get("tokenize"))
        eps = [ChatEpisode(id=f"sample{k}", turns=[Turn(USER, p)]) for k, p in enumerate(cfg.sample_prompts)]
        return [encode_prompt(ep, tokenizer, tok_cfg) for ep in eps]
    out = []
    for r in data.val:
        if r.get("position_ids") is not None:
            continue
        k = response_start(r["labels"])
        if k > 0:
            out.append([int(t) for t in r["input_ids"][:k]])
        if len(out) >= cfg.sample_count:
            break
    return out


# --- parts -----------------------------------------------------------------------------------

def planned_steps(cfg: GenConfig, lengths: list[int], rank: int, world: int) -> int:
    """Optimizer steps of the whole run, as the engine counts them."""
    return run_steps(cfg, lengths, rank, world)[2]


def part_plan(cfg: GenConfig, run_dir: Path, total: int) -> tuple[int, int, int]:
    """(start step, end step, steps already done) of part cfg.part."""
    start = round((cfg.part - 1) * total / cfg.parts)
    end = round(cfg.part * total / cfg.parts)
    done = steps_done(run_dir)
    if done < start:
        raise RunError(f"part {cfg.part}/{cfg.parts} starts at step {start}, but {run_dir} has {done} steps done: "
                         f"finish part {cfg.part - 1} first")
    return start, end, done


# --- the run ---------------------------------------------------------------------------------

def _write_initial_eval(task: GenTask, model: Any, accelerator: Any, path: Path) -> dict:
    model.eval()
    with torch.inference_mode(), accelerator.autocast():
        m = task.evaluate(model, accelerator)
    model.train()
    m = {"step": 0, **m}
    if accelerator.is_main_process:
        atomic_write_text(path, json.dumps(m, indent=2) + "\n")
    accelerator.print("[eval] before training: " + ", ".join(f"{k}={v:.4g}" for k, v in m.items() if k != "step"))
    return m


def perplexity_plot(history: list[dict], initial: dict | None, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = ([(0, initial["eval_perplexity"])] if initial else []) + [(h["step"], h["eval_perplexity"]) for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    if pts:
        ax.plot(*zip(*pts), marker="o", label="eval_perplexity")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation perplexity")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run(cfg: GenConfig, *, resume: bool = False, overwrite: bool = False) -> dict:
    """One run into cfg.out. A folder that holds a run is refused unless `overwrite` or `resume`
    (or a later --part); a start that fails (bad data, a model that does not load) leaves no
    folder behind; Ctrl-C / SIGTERM saves checkpoint/last and says how to resume."""
    check_name(cfg.model)  # a typo ('tiy') is "did you mean", before any data question
    rd = RunDir(cfg.out or default_run_dir(cfg))
    cfg.out = str(rd.root)
    dpo = None
    if cfg.objective == "dpo":  # read before the run dir is touched: bad pairs leave nothing behind
        from .dpo_data import load_dpo_data
        dpo = load_dpo_data(cfg)
    continuing = bool(cfg.parts) and cfg.part > 1  # a later part continues the run without --resume
    try:
        with rd.start(resume=resume, overwrite=overwrite, continuing=continuing) as started:
            return _run(cfg, rd, resume, started, dpo)
    except TrainingInterrupted as e:
        raise TrainingInterrupted(f"{e}; continue with: python -m src.train_gen --config {rd.config} --resume",
                                  e.step) from None


def _run(cfg: GenConfig, rd: RunDir, resume: bool, started, dpo) -> dict:
    run_dir = rd.root
    run_dir.mkdir(parents=True, exist_ok=True)
    accelerator, choice = make_accelerator(cfg.train, run_dir)
    if accelerator.is_main_process:
        save_yaml(cfg, rd.config, header=f"# python -m src.train_gen --config {rd.config}")
    torch.manual_seed(cfg.seed)

    if dpo is not None:
        from .dpo_data import prompt_of
        data, tokenizer, train_rows, val_rows = dpo, dpo.tokenizer, dpo.train, dpo.val
        prompts = [prompt_of(r) for r in val_rows[:cfg.sample_count]]
        if accelerator.is_main_process:
            write_json(rd.data_report, dpo.report)
    else:
        data = load_data(cfg, run_dir, accelerator, resume)
        tokenizer = data.tokenizer()
        train_rows, val_rows = data.train, data.val
        prompts = sample_prompt_ids(cfg, data, tokenizer)
    if cfg.objective == "clm":
        for r in train_rows + val_rows:
            r["labels"] = clm_labels(r)

    dtype = resolve_load_dtype(cfg.load_dtype, cfg.finetune, choice.precision, choice.device)
    base = load_base(cfg.model, tokenizer, dtype=dtype, trust_remote_code=cfg.trust_remote_code, seed=cfg.seed)
    base_dir = None
    if cfg.model == "tiny" and cfg.finetune == "lora":  # a base no hub has: keep it next to the adapters
        base_dir = rd.base
        if accelerator.is_main_process and not (base_dir / "config.json").exists():
            base.save_pretrained(base_dir)
    model, info = prepare_for_training(base, tokenizer, cfg)

    ckpt_meta = {"base_model": cfg.model, "finetune": cfg.finetune, "objective": cfg.objective,
                 "tokenize": data.meta.get("tokenize", {}), "trust_remote_code": cfg.trust_remote_code,
                 "embedding_multiple_of": data.meta.get("embedding_multiple_of", 64)}

    def save_best(m: Any, folder: Path) -> None:
        save_checkpoint(m, tokenizer, folder, ckpt_meta)
        if base_dir is not None:
            shutil.copytree(base_dir, folder / "base")

    if dpo is not None:  # reference: LoRA's base with adapters disabled, or a frozen copy (full)
        from .dpo import DPOTask, frozen_copy
        task = DPOTask(cfg, train_rows, val_rows, tokenizer, run_dir, accelerator.device.type, save_best, prompts,
                       ref_model=frozen_copy(model) if cfg.finetune == "full" else None)
    else:
        task = GenTask(cfg, train_rows, val_rows, tokenizer, run_dir, accelerator.device.type, save_best, prompts)
    rank, world = accelerator.process_index, accelerator.num_processes
    total = planned_steps(cfg, task.lengths(), rank, world)
    step_cfg = cfg.train
    if cfg.parts:
        start, end, done = part_plan(cfg, run_dir, total)
        if done >= end:
            accelerator.print(f"[parts] part {cfg.part}/{cfg.parts} (steps {start}-{end}) is already done")
            return {"part": cfg.part, "step": done}
        resume = resume or done > 0
        step_cfg = dataclasses.replace(cfg.train, stop_after_steps=0 if cfg.part == cfg.parts else end - done)
        accelerator.print(f"[parts] part {cfg.part}/{cfg.parts}: steps {max(start, done)}-{end} of {total}")
    accelerator.print(f"[run] {run_dir}: {len(train_rows)} train / {len(val_rows)} val rows, {choice.device} "
                      f"{choice.precision}, {cfg.model} {cfg.finetune} {cfg.objective}, {total} steps, "
                      f"{info['trainable_params']:,} of {info['total_params']:,} parameters train")

    initial_path = rd.initial_eval
    started.begun()  # from here on a failure keeps the folder: it holds what --resume needs
    resuming = resume and has_resume_state(run_dir)
    if resuming:
        if accelerator.is_main_process:
            note = truncate_jsonl(rd.samples, steps_done(run_dir))  # logged again after it
            if note:
                accelerator.print(f"[resume] {note}")
    else:
        for stale in (SAMPLES, METRICS_LOG):
            if accelerator.is_main_process and (run_dir / stale).exists():
                (run_dir / stale).unlink()
        model.to(accelerator.device)
        _write_initial_eval(task, model, accelerator, initial_path)

    progress = train(step_cfg, task, model, run_dir, accelerator, resume=resume, hparams=cfg)
    if not progress.done:  # stopped on purpose (a part, or --stop-after-steps): continue later
        return {"stopped_at_step": progress.step, "part": cfg.part}

    best = [h for h in progress.history if h["step"] == progress.best_step][-1]
    initial = json.loads(initial_path.read_text()) if initial_path.exists() else None
    metrics = {
        **{k: v for k, v in best.items() if k.startswith(("eval_", "sample_"))},
        "initial_eval_loss": initial["eval_loss"] if initial else None,
        "initial_eval_perplexity": initial.get("eval_perplexity") if initial else None,
        **{f"initial_{k}": v for k, v in (initial or {}).items()  # DPO's held-out pair metrics, sample statistics
           if k.startswith(("eval_", "sample_")) and k not in ("eval_loss", "eval_perplexity")},
        **run_summary(progress, cfg.train, task.lengths()),
        "n_train": len(train_rows), "n_val": len(val_rows),
        "trainable_params": info["trainable_params"], "total_params": info["total_params"],
        "model": cfg.model, "finetune": cfg.finetune, "objective": cfg.objective,
        "device": choice.device, "precision": choice.precision, "processes": world,
    }
    if accelerator.is_main_process:
        write_json(rd.metrics, metrics)
        plots.loss_curves(rd.metrics_log, rd.plot("loss_curves.png"), keys=("train_loss", "eval_loss"))
        if dpo is None:
            perplexity_plot(progress.history, initial, rd.plot("perplexity.png"))
        reply_stats_plot(progress.history, initial, rd.plot("reply_stats.png"))
        best_csv = best_val_losses(run_dir)
        if best_csv.exists():  # the per-sequence losses of the model that is kept
            shutil.copyfile(best_csv, rd.val_losses)
    if dpo is not None:
        accelerator.print(f"[done] DPO eval_loss {metrics['eval_loss']:.4f}, held-out preference accuracy "
                          f"{metrics['eval_pref_accuracy']:.3f}, reward margin {metrics['eval_reward_margin']:.4g} -> {run_dir}")
        return metrics
    first = f" (from {metrics['initial_eval_perplexity']:.4g} before training)" if initial else ""
    accelerator.print(f"[done] eval_loss {metrics['eval_loss']:.4f}, perplexity {metrics['eval_perplexity']:.4g}{first}, "
                      f"{metrics['train_tokens_per_s']:.0f} train tokens/s -> {run_dir}")
    return metrics


def merge(run: str, out: str | None = None, overwrite: bool = False) -> Path:
    """`python -m src.train_gen --merge RUN`: LoRA folded into its base, in RUN/merged. An
    existing target is refused before anything loads unless `overwrite` (a merged model
    may be what a user deployed; replacing it must be asked for)."""
    from .checkpoint import merge_checkpoint
    target = Path(out) if out else RunDir(run).merged
    if target.exists() and not overwrite:
        raise RunError(f"{target} already exists (an earlier merge?); add --overwrite to replace it")
    try:
        path = merge_checkpoint(run, target)
    except ValueError as e:  # a full fine-tune: nothing to merge
        raise RunError(str(e)) from None
    print(f"[merge] {run} -> {path}")
    return path
