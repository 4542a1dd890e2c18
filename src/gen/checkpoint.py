"""The generative stage's checkpoint folders, and where it finds them in a run dir (whose
file names are src/engine/rundir.py's).

A run dir (`python -m src.train_gen --out RUN`) holds `checkpoint/best/` (the model
kept for generation: `python -m src.generate --run RUN`) and `checkpoint/last/` (the
engine's resumable state: `training_state.pt`, `model.safetensors`); both folders are
written by the engine (src/engine/loop.py, src/engine/checkpoint.py), and train,
generate and merge find them only through the functions here.

A checkpoint folder (`save_checkpoint`) holds `gen_checkpoint.json` (what it is and how
to rebuild it), `tokenizer/`, and either the full model (`save_pretrained`) or
`adapter/` (+ `base/` when the base cannot be downloaded: the tiny model).
`load_checkpoint` resizes the base's embeddings *before* attaching the adapter, and
runs a checkpoint's remote code only when the caller asks (`trust_remote_code=True`),
whatever the checkpoint says.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..engine.rundir import GEN_CHECKPOINT_META, RESUME_STATE, VAL_LOSSES, RunDir
from ..errors import UsageError
from ..models import check_name, resolve
from .model import ensure_pad_token, load_base, load_tokenizer, resize_embeddings

CHECKPOINT_META = GEN_CHECKPOINT_META


# --- the run dir ------------------------------------------------------------------------------
# The folders themselves are the engine's (src/engine/checkpoint.py: crash-safe saves); this
# module is where the generative stage asks for them.

def best_dir(run_dir: str | os.PathLike) -> Path:
    """The checkpoint kept for generation (the engine's best eval)."""
    return RunDir(run_dir).best


def last_dir(run_dir: str | os.PathLike) -> Path:
    """The engine's resumable state of the run."""
    return RunDir(run_dir).last


def resume_folder(run_dir: str | os.PathLike) -> Path | None:
    """The complete resumable checkpoint, also when a crash cut a save between its two
    renames (read-only: the engine puts it back in place when training starts)."""
    from ..files import complete_dir
    folder = complete_dir(last_dir(run_dir))
    return folder if folder is not None and (folder / RESUME_STATE).exists() else None


def has_resume_state(run_dir: str | os.PathLike) -> bool:
    return resume_folder(run_dir) is not None


def steps_done(run_dir: str | os.PathLike) -> int:
    """Optimizer steps in the run's resumable state (0 when there is none)."""
    folder = resume_folder(run_dir)
    if folder is None:
        return 0
    from ..engine.checkpoint import load_resume_state
    return int(load_resume_state(folder)["progress"]["step"])


def best_val_losses(run_dir: str | os.PathLike) -> Path:
    """Per-sequence validation losses of the kept model (written by the task's save_best)."""
    return best_dir(run_dir) / VAL_LOSSES


# --- checkpoint folders -----------------------------------------------------------------------

def save_checkpoint(model: Any, tokenizer: Any, folder: str | os.PathLike, meta: dict, base: Any = None) -> None:
    """Write what generation needs into `folder` (the caller makes it atomic).
    `meta`: {"base_model", "finetune", "tokenize", ...}; `base`: the frozen base to
    store alongside an adapter when it cannot be downloaded (tiny)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder / "tokenizer")
    if meta["finetune"] == "lora":
        model.save_pretrained(folder / "adapter")
        if base is not None:
            base.save_pretrained(folder / "base")
    else:
        model.save_pretrained(folder)
    meta = {**meta, "vocab_rows": int(model.get_input_embeddings().weight.shape[0]),
            "tokenizer_len": len(tokenizer)}
    (folder / CHECKPOINT_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def is_checkpoint(path: str | os.PathLike) -> bool:
    return (Path(path) / CHECKPOINT_META).exists()


def find_checkpoint(path: str | os.PathLike) -> Path | None:
    """A run dir's best checkpoint, or `path` itself when it is a checkpoint."""
    p = Path(path)
    for cand in (p, best_dir(p)):
        if is_checkpoint(cand):
            return cand
    return None


def load_checkpoint(folder: str | os.PathLike, *, dtype: torch.dtype = torch.float32, merge: bool = False,
                    trust_remote_code: bool | None = None) -> tuple[Any, Any, dict]:
    """(model, tokenizer, meta) from a checkpoint written by `save_checkpoint`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    meta = json.loads((folder / CHECKPOINT_META).read_text(encoding="utf-8"))
    # Never from the checkpoint's own meta: a downloaded folder must not switch on code execution.
    remote = bool(trust_remote_code)
    tok = AutoTokenizer.from_pretrained(folder / "tokenizer", trust_remote_code=False)
    if meta["finetune"] != "lora":
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=remote)
        return model, tok, meta
    from peft import PeftModel
    # an alias (smollm2-135m-instruct) is the embedded model's cached folder, not a hub id
    base_src = folder / "base" if (folder / "base").exists() else resolve(meta["base_model"])
    base = AutoModelForCausalLM.from_pretrained(base_src, dtype=dtype, trust_remote_code=remote)
    # The adapter was trained on the resized base: same rows, same (mean) initialisation.
    resize_embeddings(base, meta["tokenizer_len"], meta.get("embedding_multiple_of", 64))
    base.config.pad_token_id = tok.pad_token_id
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.pad_token_id = tok.pad_token_id
    model = PeftModel.from_pretrained(base, folder / "adapter")
    if merge:
        model = model.merge_and_unload()
    return model, tok, meta


def merge_checkpoint(src: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Fold a LoRA checkpoint into its base and save one plain model folder (safetensors),
    loadable with AutoModelForCausalLM and by `load_checkpoint`."""
    from ..files import atomic_dir
    ckpt = find_checkpoint(src)
    if ckpt is None:
        raise FileNotFoundError(f"{src}: no {CHECKPOINT_META} here or in {best_dir(src).relative_to(src)}")
    model, tok, meta = load_checkpoint(ckpt, merge=True)
    if meta["finetune"] != "lora":
        raise UsageError(f"{ckpt} is a full fine-tune: nothing to merge")
    with atomic_dir(out) as tmp:
        save_checkpoint(model, tok, tmp, {**meta, "finetune": "full", "merged_from": str(ckpt)})
    return Path(out)


def load_for_generation(path: str, *, dtype: torch.dtype = torch.float32,
                        trust_remote_code: bool = False) -> tuple[Any, Any, dict]:
    """A run dir, a checkpoint, a merged folder, any HF causal LM folder/id, or 'tiny'."""
    ckpt = find_checkpoint(path) if path != "tiny" else None
    if ckpt is None:
        check_name(path)  # 'smolm2-135m-instruct': did you mean, not a hub lookup
    if ckpt is None and path != "tiny" and not Path(path).exists() and (os.sep in path or path.startswith(".")):
        raise UsageError(f"{path}: no such run dir, checkpoint or model folder")  # not a hub id either
    if ckpt is None and path != "tiny":
        from ..run_kind import wrong_kind
        kind_error = wrong_kind(path, "a generative run, checkpoint or causal LM folder")
        if kind_error:  # a classifier run has a tokenizer but no causal LM: say that, not a tokenizer error
            raise UsageError(kind_error)
    if ckpt is not None:
        return load_checkpoint(ckpt, dtype=dtype, trust_remote_code=trust_remote_code)
    tok = load_tokenizer(path, trust_remote_code)
    if path == "tiny":
        model = load_base("tiny", tok)
        ensure_pad_token(model, tok)
        return model, tok, {"base_model": "tiny", "finetune": "none"}
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(resolve(path), dtype=dtype, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # generation only: padding is never trained on here
    # a bare model is prompted the way it was trained: through its chat template when it has one
    # (smollm2-135m-instruct: ChatML, stops at <|im_end|>), else plain text (gemma3-270m, a base model)
    return model, tok, {"base_model": path, "finetune": "none", "tokenize": {"template": "auto"}}
