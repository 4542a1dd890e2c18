"""Causal LMs for fine-tuning: load, add a pad token, LoRA via peft, save, load back, merge.

- `load_base`: 'tiny' (the in-process GPT-2 of src.gen.tiny) or any HF causal LM
  (`from_pretrained`, safetensors, no remote code unless asked).
- `prepare_for_training`: a pad token distinct from EOS (src.gen.tokenize.ensure_pad_token,
  mean-initialised rows), gradient checkpointing, then LoRA or full fine-tuning.
  Under LoRA the embedding and LM-head rows of added tokens are trained and saved
  (peft `trainable_token_indices`, or whole modules with `modules_to_save`).
- A checkpoint folder (`save_checkpoint`) holds `gen_checkpoint.json` (what it is and how
  to rebuild it), `tokenizer/`, and either the full model (`save_pretrained`) or
  `adapter/` (+ `base/` when the base cannot be downloaded: the tiny model).
  `load_checkpoint` resizes the base's embeddings *before* attaching the adapter.
- `merge_checkpoint`: base + adapter -> one plain model folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..device import torch_dtype

CHECKPOINT_META = "gen_checkpoint.json"

# LoRA targets per architecture: attention and MLP projections (what the logbooks adapted).
LORA_TARGETS: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gptj": ["q_proj", "k_proj", "v_proj", "out_proj", "fc_in", "fc_out"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "gpt_neo": ["q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "bloom": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "falcon": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}
_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
for _arch in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "olmo2", "stablelm"):
    LORA_TARGETS[_arch] = _LLAMA_LIKE
# GPT-2 keeps its projections in Conv1D (weights stored transposed).
FAN_IN_FAN_OUT = {"gpt2"}


def lora_targets(model: Any, configured: list[str]) -> list[str] | str:
    if configured:
        return list(configured)
    return LORA_TARGETS.get(getattr(model.config, "model_type", ""), "all-linear")


def resolve_load_dtype(load_dtype: str, finetune: str, precision: str, device: str) -> torch.dtype:
    if load_dtype != "auto":
        return torch_dtype(load_dtype)
    if finetune == "lora" and device != "cpu" and precision in ("bf16", "fp16"):
        return torch_dtype(precision)  # a frozen base needs no fp32 master weights
    return torch.float32


def load_tokenizer(name: str, trust_remote_code: bool = False) -> Any:
    from .tiny import build_tiny_tokenizer
    if name == "tiny":
        return build_tiny_tokenizer()
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)


def load_base(name: str, tokenizer: Any, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
              seed: int = 0) -> Any:
    """The pretrained causal LM `name` ('tiny': a fresh 2-layer GPT-2 for `tokenizer`'s
    base vocabulary, deterministic from `seed`)."""
    if name == "tiny":
        from .tiny import build_tiny_model
        return build_tiny_model(tokenizer.vocab_size, tokenizer.eos_token_id, seed=seed).to(dtype)
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(name, dtype=dtype, trust_remote_code=trust_remote_code)


def _module_name(model: Any, module: Any) -> str | None:
    return next((n for n, m in model.named_modules() if m is module), None)


def tied_embeddings(model: Any) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def apply_lora(model: Any, cfg: Any, new_token_ids: list[int]) -> Any:
    """Wrap `model` in a peft LoRA model; rows of `new_token_ids` train too (per cfg.new_token_rows)."""
    from peft import LoraConfig, get_peft_model
    arch = getattr(model.config, "model_type", "")
    kw: dict[str, Any] = {}
    emb_name = _module_name(model, model.get_input_embeddings()).split(".")[-1]
    out_mod = model.get_output_embeddings()
    head_name = _module_name(model, out_mod).split(".")[-1] if out_mod is not None else None
    tied = tied_embeddings(model)
    if new_token_ids and cfg.new_token_rows == "rows":
        rows = {emb_name: list(new_token_ids)}
        if head_name and not tied:
            rows[head_name] = list(new_token_ids)
        kw["trainable_token_indices"] = rows
    elif new_token_ids and cfg.new_token_rows == "modules":
        kw["modules_to_save"] = [emb_name] + ([head_name] if head_name else [])
        # tied embeddings (GPT-2): both ends share one trained copy and stay tied after merging
        kw["ensure_weight_tying"] = tied
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=lora_targets(model, cfg.lora_target_modules),
                      fan_in_fan_out=arch in FAN_IN_FAN_OUT, task_type="CAUSAL_LM", **kw)
    return get_peft_model(model, lora)


def set_dropout(model: Any, p: float) -> None:
    """Every dropout of the model to `p`: nn.Dropout modules, float attention-dropout
    attributes, and the config (so a reload agrees)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
        for attr in ("attention_dropout", "dropout"):
            if isinstance(getattr(m, attr, None), float):
                setattr(m, attr, p)
    for k, v in list(vars(model.config).items()):
        if isinstance(v, float) and ("dropout" in k or "pdrop" in k):
            setattr(model.config, k, p)


def prepare_for_training(model: Any, tokenizer: Any, cfg: Any) -> tuple[Any, dict]:
    """Pad token + embedding rows, gradient checkpointing, LoRA or full. Returns (model, info)."""
    from .tokenize import ensure_pad_token
    base_rows = model.get_input_embeddings().weight.shape[0]
    info = ensure_pad_token(model, tokenizer)
    # Tokens whose rows the base never trained: added to the tokenizer beyond its base
    # vocabulary (a prepared tokenizer arrives with its pad token already added), or
    # beyond the base's rows. Trained special tokens counted here just train a bit more.
    first_new = min(getattr(tokenizer, "vocab_size", len(tokenizer)), base_rows)
    info["new_token_ids"] = sorted(set(range(first_new, len(tokenizer)))
                                   | ({tokenizer.pad_token_id} if info["added"] else set()))
    new_ids = info["new_token_ids"]
    if cfg.dropout >= 0:
        set_dropout(model, cfg.dropout)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if cfg.finetune == "lora":
        model = apply_lora(model, cfg, new_ids)
        # Resume checkpoints need only what trains (adapters, new rows); the frozen base
        # comes from the base model again (src/engine/checkpoint.py).
        model.resume_trainable_only = True
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    info.update(trainable_params=trainable, total_params=total, finetune=cfg.finetune)
    return model, info


# --- checkpoints --------------------------------------------------------------------------

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
    for cand in (p, p / "checkpoint" / "best"):
        if is_checkpoint(cand):
            return cand
    return None


def load_checkpoint(folder: str | os.PathLike, *, dtype: torch.dtype = torch.float32, merge: bool = False,
                    trust_remote_code: bool | None = None) -> tuple[Any, Any, dict]:
    """(model, tokenizer, meta) from a checkpoint written by `save_checkpoint`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .tokenize import resize_embeddings
    folder = Path(folder)
    meta = json.loads((folder / CHECKPOINT_META).read_text(encoding="utf-8"))
    remote = meta.get("trust_remote_code", False) if trust_remote_code is None else trust_remote_code
    tok = AutoTokenizer.from_pretrained(folder / "tokenizer", trust_remote_code=False)
    if meta["finetune"] != "lora":
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=remote)
        return model, tok, meta
    from peft import PeftModel
    base_src = folder / "base" if (folder / "base").exists() else meta["base_model"]
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
    from ..engine.checkpoint import atomic_dir
    ckpt = find_checkpoint(src)
    if ckpt is None:
        raise FileNotFoundError(f"{src}: no {CHECKPOINT_META} here or in checkpoint/best")
    model, tok, meta = load_checkpoint(ckpt, merge=True)
    if meta["finetune"] != "lora":
        raise ValueError(f"{ckpt} is a full fine-tune: nothing to merge")
    with atomic_dir(out) as tmp:
        save_checkpoint(model, tok, tmp, {**meta, "finetune": "full", "merged_from": str(ckpt)})
    return Path(out)


def load_for_generation(path: str, *, dtype: torch.dtype = torch.float32,
                        trust_remote_code: bool = False) -> tuple[Any, Any, dict]:
    """A run dir, a checkpoint, a merged folder, any HF causal LM folder/id, or 'tiny'."""
    ckpt = find_checkpoint(path) if path != "tiny" else None
    if ckpt is not None:
        return load_checkpoint(ckpt, dtype=dtype)
    tok = load_tokenizer(path, trust_remote_code)
    if path == "tiny":
        from .tokenize import ensure_pad_token
        model = load_base("tiny", tok)
        ensure_pad_token(model, tok)
        return model, tok, {"base_model": "tiny", "finetune": "none"}
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token  # generation only: padding is never trained on here
    return model, tok, {"base_model": path, "finetune": "none"}
