"""Backbones for the preference classifier: encoders and decoder LLMs, LoRA, QLoRA.

`load_backbone(name, ...)` returns a `Backbone` (the bare transformer: AutoModel, no
LM head, + tokenizer + what kind it is). A decoder is any config whose model type
transformers maps to a causal LM and not to a masked LM (Gemma-2/3, Llama, Qwen2/3,
Mistral, Phi-3, GPT-2, ...); BERT-likes appear in both maps and stay encoders.

Decisions, and the library pitfalls they avoid:

* Pad token. A decoder without one (Llama-3) pads with its EOS id; nothing looks at
  the pad id afterwards: masks come from positions (`engine.batching.pad_sequences`)
  and `last` pooling indexes by the mask. transformers' own *ForSequenceClassification
  finds the last token by `input_ids != pad_token_id`, which is wrong when pad == EOS
  and a row really ends in EOS (it then pools the token before). Adding a new pad row
  instead would resize (and, under LoRA, save) the embedding matrix for nothing.
* Positions. A left-padded row gets position ids from its mask (cumsum - 1), so its
  real tokens sit at 0..n-1 exactly as unpadded. transformers' default (arange over the
  padded width) shifts them: harmless in exact arithmetic for RoPE (scores depend on
  offsets only), but it changes every vector of a learned-position model (GPT-2).
* LoRA sits on the bare backbone; the classification head is ours (PrefModel.head),
  trained and saved beside the adapter, so it cannot come back random on reload (the
  peft SEQ_CLS pitfall: a `score` head not in modules_to_save is re-initialised).
  Default targets: every linear layer of the backbone, listed by name in the log line;
  a `--lora-targets` name that matches no module is a one-line UsageError (peft only
  complains when *none* match).
* QLoRA / 8-bit (pref/modeling/quantize.py): BitsAndBytesConfig(nf4, double quantisation,
  compute in the run's precision) wherever bitsandbytes runs (CUDA, x86-64 CPUs; a one-line
  UsageError elsewhere, never a silent fp32 fallback), one quantised copy per DDP rank on
  its own device (device_map {"": "cpu"} or {"": local_rank}), peft's
  prepare_model_for_kbit_training (it upcasts every non-4-bit weight, embeddings
  included, to fp32: memplan counts that), gradient checkpointing with
  use_reentrant=False (with the reentrant variant and a frozen embedding no gradient
  reaches the adapters unless inputs are forced to require grad).
* Attention: `attn` in eager|sdpa|flash_attention_2. A config with attention-logit
  softcapping (Gemma-2: attn_logit_softcapping=50) defaults to eager: transformers'
  sdpa kernel cannot softcap (sdpa_attention_forward raises on `softcap`, Gemma2 sets
  _supports_sdpa = False), flash_attention_2 applies it (flash-attn >= 2.6) and is
  accepted. An explicit `--attn sdpa` there is a one-line error before loading.
  Gemma-3 has no attention softcapping (QK-norm instead): sdpa, like every other decoder.
* Quantised prediction: the same BitsAndBytesConfig as training, its compute dtype the
  prediction precision (fp16 on a T4, fp32 where the family overflows fp16); the
  unquantised weights (embeddings, norms) load in that dtype too; one quantised copy per
  GPU, each loaded onto its own device (`quantized_load_kwargs`), never deep-copied.
* Padding-free training (`check_padding_free`, `hidden_states_packed`): the sequences
  of a batch in one row, position ids restarting at 0 per sequence and no attention
  mask; flash_attention_2 reads the boundaries from the position ids, and so do the
  sdpa/eager masks of transformers versions whose masking_utils has
  find_packed_sequence_indices (it keeps each token inside its own sequence).

Over 400 lines because every rule a decoder backbone obeys at load time (kind, pad,
attention kernel, quantisation, LoRA targets, packing) is checked here, in one place,
before weights load; the config glue at the bottom is the first piece to move out.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ...engine.recompute import enable_activation_recompute
from ...errors import UsageError
from ...models import resolve
from ...models.lora import DEFAULTS as LORA_DEFAULTS, lora_config
# quantisation has its own owner (support probe, recipe, device map); re-exported for older callers
from .quantize import check_quantization, local_rank, quantization_config, quantized_load_kwargs  # noqa: F401

ATTN_CHOICES = ("eager", "sdpa", "flash_attention_2")
POOLINGS = ("mean", "cls", "last")
# Model types whose softcapped attention needs the eager kernel (also read from the
# config: any attn_logit_softcapping that is set).
EAGER_ATTENTION = {"gemma2"}
SOFTCAP_KERNELS = ("eager", "flash_attention_2")  # the kernels of ATTN_CHOICES that softcap


@dataclass
class LoraSpec:  # what a checkpoint records of its adapters (backbone.json); defaults: src/models/lora.py
    r: int = LORA_DEFAULTS.lora_r
    alpha: int = LORA_DEFAULTS.lora_alpha
    dropout: float = LORA_DEFAULTS.lora_dropout
    targets: list[str] = field(default_factory=list)  # empty: every linear layer of the backbone


@dataclass
class Backbone:
    model: Any                # the bare transformer (or its peft wrapper)
    tokenizer: Any
    decoder: bool
    path: str                 # where it was loaded from
    info: dict = field(default_factory=dict)  # pad handling, attention, lora targets, quantisation

    @property
    def hidden_size(self) -> int:
        return hidden_size(self.model.config)


def hidden_size(config: Any) -> int:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(getattr(text, "hidden_size", None) or getattr(text, "n_embd"))


def is_decoder_config(config: Any) -> bool:
    """True for causal LMs (Llama, Gemma, Qwen, Mistral, Phi, GPT-2...), False for encoders."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)
    mt = getattr(config, "model_type", "")
    return mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def check_pooling(pooling: str, decoder: bool) -> None:
    if pooling not in POOLINGS:
        raise UsageError(f"--pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    if decoder and pooling == "cls":
        raise UsageError("--pooling cls on a decoder pools the first token, which attends to nothing "
                         "after it: use --pooling last (the default for decoders) or mean")


def default_pooling(decoder: bool) -> str:
    return "last" if decoder else "mean"


def attention_softcap(config: Any) -> float | None:
    """The config's attention-logit softcap (Gemma-2: 50.0), None when it has none."""
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "attn_logit_softcapping", None)


def default_attention(model_type: str, softcap: float | None = None) -> str:
    return "eager" if (softcap is not None or model_type in EAGER_ATTENTION) else "sdpa"


def check_attention(attn: str | None, model_type: str, device: str, softcap: float | None = None) -> str:
    attn = attn or default_attention(model_type, softcap)
    if attn not in ATTN_CHOICES:
        raise UsageError(f"--attn must be one of {', '.join(ATTN_CHOICES)}, not {attn!r}")
    if (softcap is not None or model_type in EAGER_ATTENTION) and attn not in SOFTCAP_KERNELS:
        raise UsageError(f"--attn {attn}: {model_type} softcaps its attention logits and transformers' {attn} "
                         "kernel cannot: use --attn eager (the default) or flash_attention_2")
    if attn == "flash_attention_2":
        import importlib.util
        if torch.device(device).type != "cuda" or importlib.util.find_spec("flash_attn") is None:
            raise UsageError("--attn flash_attention_2 needs a CUDA device and the flash-attn package "
                             "(pip install flash-attn); use --attn sdpa or eager")
    return attn


def packed_masks_supported() -> bool:
    """True when this transformers builds sdpa/eager masks of packed rows from position ids."""
    try:
        from transformers.masking_utils import find_packed_sequence_indices  # noqa: F401
    except ImportError:
        return False
    return True


def check_padding_free(cfg: Any, config: Any, device: str) -> None:
    """--padding-free: a decoder, --arch cross, a kernel that keeps packed sequences apart."""
    if not getattr(cfg, "padding_free", False):
        return
    if getattr(cfg, "arch", "cross") != "cross":
        raise UsageError("--padding-free packs the judge sequences of --arch cross; siamese pairs pool sides "
                         "apart: add --arch cross or drop --padding-free")
    if config is not None and not is_decoder_config(config):
        raise UsageError(f"--padding-free is for decoder LLMs (causal masks from position ids); "
                         f"{cfg.model!r} is an encoder ({config.model_type})")
    model_type = getattr(config, "model_type", "") if config is not None else ""
    attn = check_attention(getattr(cfg, "attn", None) or None, model_type, device, attention_softcap(config))
    if attn != "flash_attention_2" and not packed_masks_supported():
        import transformers
        raise UsageError(f"--padding-free with --attn {attn} needs transformers whose masks follow position ids "
                         f"(masking_utils.find_packed_sequence_indices; this is {transformers.__version__}): "
                         "upgrade transformers or use --attn flash_attention_2")


def _load_config(name: str, path: str, trust_remote_code: bool):
    from transformers import AutoConfig
    if not os.path.isdir(path) and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise UsageError(f"--model {name!r} ({path}) is not a local folder and HF_HUB_OFFLINE=1: "
                         "give a local folder, a tiny-* model, or cache the model first")
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise UsageError(f"--model {name!r}: cannot load a config from {path} ({str(e).splitlines()[0]})") from None


def ensure_pad(tokenizer: Any, config: Any) -> str:
    """Give a decoder tokenizer without a pad token its EOS as pad; returns the log line."""
    if tokenizer.pad_token_id is not None:
        note = f"pad token {tokenizer.pad_token!r} (id {tokenizer.pad_token_id})"
    elif tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
        note = (f"no pad token: padding with EOS {tokenizer.eos_token!r} (id {tokenizer.eos_token_id}); "
                "masks and last-token pooling index by position, never by pad id")
    else:
        raise UsageError("the tokenizer has neither a pad nor an EOS token: cannot pad batches")
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "pad_token_id", None) is None:
        text.pad_token_id = tokenizer.pad_token_id
    return note


def linear_layer_names(model: Any) -> list[str]:
    """Last name component of every linear layer (incl. bitsandbytes' and GPT-2's Conv1D)."""
    names = []
    for full, mod in model.named_modules():
        kind = type(mod).__name__
        if isinstance(mod, torch.nn.Linear) or kind in ("Linear4bit", "Linear8bitLt", "Conv1D"):
            leaf = full.split(".")[-1]
            if leaf not in names and leaf not in ("score", "lm_head", "classifier"):
                names.append(leaf)
    return names


def lora_targets(model: Any, requested: list[str]) -> list[str]:
    """The modules LoRA adapts: `requested` (each must match a module) or all linear layers."""
    available = linear_layer_names(model)
    if not requested:
        if not available:
            raise UsageError(f"{type(model).__name__} has no linear layers for LoRA to adapt")
        return available
    modules = {full.split(".")[-1] for full, _ in model.named_modules()} | {full for full, _ in model.named_modules()}
    for t in requested:
        if t not in modules and not any(full.endswith("." + t) for full, _ in model.named_modules()):
            raise UsageError(f"--lora-targets {t!r} matches no module of {type(model).__name__}; "
                             f"its linear layers: {', '.join(available)}")
    return list(requested)


def apply_lora(model: Any, spec: LoraSpec) -> tuple[Any, list[str]]:
    from peft import get_peft_model
    targets = lora_targets(model, spec.targets)
    cfg = lora_config(model, r=spec.r, alpha=spec.alpha, dropout=spec.dropout, target_modules=targets)
    return get_peft_model(model, cfg), targets


def _load_bare(auto_model, path: str, config, decoder: bool, **kw):
    """The bare model (no task head) from `path`. A decoder checkpoint is a causal LM whose
    lm_head.* weights the classifier never uses; transformers 5 prints a LOAD REPORT table
    of them as UNEXPECTED on every such load. They are declared ignorable for this load
    only, through the library's own `_keys_to_ignore_on_load_unexpected` (any other
    unexpected or missing key is still reported)."""
    from transformers import MODEL_MAPPING
    cls = MODEL_MAPPING.get(type(config), None) if decoder else None  # remote-code models are not mapped
    if cls is None:
        return auto_model.from_pretrained(path, config=config, **kw)
    before = cls.__dict__.get("_keys_to_ignore_on_load_unexpected", None)
    inherited = getattr(cls, "_keys_to_ignore_on_load_unexpected", None)
    cls._keys_to_ignore_on_load_unexpected = set(inherited or ()) | {r"^lm_head\."}
    try:
        return cls.from_pretrained(path, config=config, **kw)
    finally:
        if before is None:
            del cls._keys_to_ignore_on_load_unexpected
        else:
            cls._keys_to_ignore_on_load_unexpected = before


def load_backbone(name: str, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                  lora: LoraSpec | None = None, load_in_4bit: bool = False, load_in_8bit: bool = False,
                  attn: str | None = None, gradient_checkpointing: bool = False, trust_remote_code: bool = False,
                  compute_dtype: torch.dtype = torch.bfloat16,
                  log: Callable[[str], Any] | None = print) -> Backbone:
    """Bare backbone + tokenizer for an alias, hub id or local folder (tiny-* built in-process).
    With 4/8-bit weights `compute_dtype` is bitsandbytes' compute dtype and the dtype of
    the unquantised weights (training: bf16; prediction: its precision)."""
    from transformers import AutoModel, AutoTokenizer

    bits = check_quantization(load_in_4bit, load_in_8bit, device)
    if bits and lora is None:
        raise UsageError(f"--load-in-{bits} trains only adapters on frozen quantised weights: add --lora")
    path = resolve(name)
    config = _load_config(name, path, trust_remote_code)
    decoder = is_decoder_config(config)
    if (bits or attn) and not decoder:
        raise UsageError(f"--{'load-in-' + bits if bits else 'attn'} is for decoder LLMs; {name!r} is an encoder "
                         f"({config.model_type})")
    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": dtype}
    info: dict[str, Any] = {"model_type": config.model_type, "decoder": decoder}
    if decoder:
        kw["attn_implementation"] = info["attn"] = check_attention(attn, config.model_type, device,
                                                                   attention_softcap(config))
    if bits:  # each DDP rank / prediction GPU: its own quantised copy on its own device
        kw.update(quantized_load_kwargs(bits, device, compute_dtype))
        info["quantization"] = bits
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = _load_bare(AutoModel, path, config, decoder, **kw)
    if decoder:
        info["pad"] = ensure_pad(tokenizer, model.config)
    if bits:
        from peft import prepare_model_for_kbit_training

        from .quantize import keep_one_4bit_layout
        keep_one_4bit_layout(model)  # evals compute as training does (quantize.py says why)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gradient_checkpointing:
        enable_activation_recompute(model)
    if lora is not None:
        model, info["lora_targets"] = apply_lora(model, lora)
    if log:
        parts = [f"[backbone] {name} ({config.model_type}, {'decoder' if decoder else 'encoder'})"]
        parts += [f"attn {info['attn']}"] if decoder else []
        parts += [info["pad"]] if decoder else []
        parts += [f"{bits} weights"] if bits else []
        parts += [f"LoRA r={lora.r} alpha={lora.alpha} on {', '.join(info['lora_targets'])}"] if lora else []
        log("; ".join(parts))
    return Backbone(model=model, tokenizer=tokenizer, decoder=decoder, path=path, info=info)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """0..n-1 over each row's real tokens wherever the padding sits (pads get 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def hidden_states(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, decoder: bool) -> torch.Tensor:
    """Last hidden states; decoders get position ids from the mask and no KV cache."""
    if not decoder:
        return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                 use_cache=False).last_hidden_state


def hidden_states_packed(model: Any, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Last hidden states of a packed row (1, T): no attention mask, so transformers takes
    the sequence boundaries from the restarting position ids (see check_padding_free)."""
    return model(input_ids=input_ids, position_ids=position_ids, use_cache=False).last_hidden_state


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Position of each row's last real token, by the mask (right or left padding alike)."""
    pos = torch.arange(mask.shape[-1], device=mask.device)
    return (pos * mask.long()).argmax(-1)


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "last":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last_token_index(mask)]
    if how == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def trainable_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts (4-bit weights counted as their logical size)."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel() * (2 if type(p).__name__ == "Params4bit" else 1)  # two nf4 values per stored byte
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


# ---- glue for the classifier's config (PrefConfig fields, read with defaults so the
# ---- knobs can land in the config independently) ----------------------------------

def lora_spec_from_config(cfg: Any) -> LoraSpec | None:
    if not getattr(cfg, "lora", False):
        return None
    targets = getattr(cfg, "lora_targets", "") or []
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraSpec(r=getattr(cfg, "lora_r", LORA_DEFAULTS.lora_r), alpha=getattr(cfg, "lora_alpha", LORA_DEFAULTS.lora_alpha),
                    dropout=getattr(cfg, "lora_dropout", LORA_DEFAULTS.lora_dropout), targets=list(targets))


def backbone_from_config(cfg: Any, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                         compute_dtype: torch.dtype = torch.bfloat16,
                         log: Callable[[str], Any] | None = print) -> Backbone:
    """load_backbone with the run config's knobs; checks the pooling against the backbone kind.
    `compute_dtype`: a quantised base's compute dtype (training passes its precision's)."""
    b = load_backbone(cfg.model, device=device, dtype=dtype, lora=lora_spec_from_config(cfg),
                      compute_dtype=compute_dtype,
                      load_in_4bit=getattr(cfg, "load_in_4bit", False), load_in_8bit=getattr(cfg, "load_in_8bit", False),
                      attn=getattr(cfg, "attn", None) or None,
                      gradient_checkpointing=getattr(cfg, "gradient_checkpointing", False),
                      trust_remote_code=getattr(cfg, "trust_remote_code", False), log=log)
    pooling = getattr(cfg, "pooling", "auto")
    check_pooling(default_pooling(b.decoder) if pooling == "auto" else pooling, b.decoder)
    return b


def lr_multipliers(model: Any, head_mult: float, lora_mult: float = 1.0) -> dict[str, float]:
    """Parameter-name prefix -> LR multiplier (the engine's contract): the head and the
    adapters learn at separate rates. Adapter weights sit deep in the peft tree, so each
    is listed by its full name (a prefix of itself)."""
    mults = {"head.": head_mult}
    mults.update({n: lora_mult for n, p in model.named_parameters() if p.requires_grad and "lora_" in n})
    return mults
