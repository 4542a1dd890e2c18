"""Causal LMs for fine-tuning: load, add a pad token and embedding rows, LoRA via peft.

- `load_base`: 'tiny' (the in-process GPT-2 of src.models.tiny) or any name `src.models.resolve`
  knows (embedded smollm2-135m-instruct / gemma3-270m, an HF causal LM id or folder;
  `from_pretrained`, safetensors, no remote code unless asked).
- `ensure_pad_token`: a pad token distinct from EOS. With pad == eos, masking padding
  by id also masks the real EOS, and the model never learns to stop. New embedding rows
  are mean-initialised (`resize_embeddings`).
- `prepare_for_training`: pad token, gradient checkpointing, then LoRA or full
  fine-tuning. Under LoRA the embedding and LM-head rows of added tokens are trained
  and saved (peft `trainable_token_indices`, or whole modules with `modules_to_save`).
- Saving, loading back and merging checkpoints: `src.gen.checkpoint`.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..device import torch_dtype
from ..engine.recompute import enable_activation_recompute
from ..models.lora import lora_config

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
    from ..models.tiny import build_tiny_tokenizer
    if name == "tiny":
        return build_tiny_tokenizer()
    from transformers import AutoTokenizer
    from ..models import resolve
    return AutoTokenizer.from_pretrained(resolve(name), trust_remote_code=trust_remote_code)


def load_base(name: str, tokenizer: Any, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
              seed: int = 0) -> Any:
    """The pretrained causal LM `name` ('tiny': a fresh 2-layer GPT-2 for `tokenizer`'s
    base vocabulary, deterministic from `seed`)."""
    if name == "tiny":
        from ..models.tiny import build_tiny_model
        return build_tiny_model(tokenizer.vocab_size, tokenizer.eos_token_id, seed=seed).to(dtype)
    from transformers import AutoModelForCausalLM
    from ..models import resolve
    return AutoModelForCausalLM.from_pretrained(resolve(name), dtype=dtype, trust_remote_code=trust_remote_code)


def _module_name(model: Any, module: Any) -> str | None:
    return next((n for n, m in model.named_modules() if m is module), None)


def tied_embeddings(model: Any) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def apply_lora(model: Any, cfg: Any, new_token_ids: list[int]) -> Any:
    """Wrap `model` in a peft LoRA model; rows of `new_token_ids` train too (per cfg.new_token_rows)."""
    from peft import get_peft_model
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
    lora = lora_config(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                       target_modules=lora_targets(model, cfg.lora_target_modules), task_type="CAUSAL_LM", **kw)
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
    base_rows = model.get_input_embeddings().weight.shape[0]
    info = ensure_pad_token(model, tokenizer, distinct=getattr(cfg, "distinct_pad", True))
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
        enable_activation_recompute(model)
    if cfg.finetune == "lora":
        model = apply_lora(model, cfg, new_ids)  # (GenTask.resume_trainable_only: resume saves what trains)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    info.update(trainable_params=trainable, total_params=total, finetune=cfg.finetune)
    return model, info


# --- pad token and embeddings ------------------------------------------------------------------

def ensure_pad_token(model: Any, tokenizer: Any, pad_token: str = "<|pad|>", multiple_of: int = 64,
                     distinct: bool = True) -> dict:
    """Give the tokenizer a pad token distinct from EOS (adding `pad_token` when it has
    none, or when pad == eos) and, when a model is given, size its embeddings to cover
    the tokenizer, rounded up to a multiple of 64 (tensor-core friendly). New rows get
    the mean embedding: random rows would put arbitrary mass on never-seen tokens.
    Safe to call again (on the training side after loading a prepared tokenizer).
    `distinct=False` keeps pad == eos (a tokenizer without a pad token gets eos as pad):
    only to measure that pitfall (GenConfig.distinct_pad); padding is masked by position,
    so training still sees every real EOS label."""
    added = False
    if not distinct:
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
    elif tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": pad_token})
        added = True
    info = {"pad_token": tokenizer.pad_token, "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id, "added": added, "tokenizer_len": len(tokenizer)}
    if model is not None:
        info["embedding_rows"] = resize_embeddings(model, len(tokenizer), multiple_of)
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return info


def resize_embeddings(model: Any, n_tokens: int, multiple_of: int = 64) -> int:
    """Grow (never shrink) the input/output embeddings to a multiple of `multiple_of`
    rows covering `n_tokens`; new rows are the mean of the old ones. Returns the rows."""
    import torch
    emb = model.get_input_embeddings()
    old = emb.weight.shape[0]
    new = math.ceil(max(n_tokens, old) / multiple_of) * multiple_of
    if new == old:
        return old
    model.resize_token_embeddings(new, mean_resizing=False)
    with torch.no_grad():
        w = model.get_input_embeddings().weight
        w[old:] = w[:old].mean(0, keepdim=True)
        out = model.get_output_embeddings()
        if out is not None and out.weight is not w:
            out.weight[old:] = out.weight[:old].mean(0, keepdim=True)
            if getattr(out, "bias", None) is not None:
                out.bias[old:] = out.bias[:old].mean()
    return new
