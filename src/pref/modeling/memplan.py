"""`--plan`: will this backbone configuration fit a GPU? Estimated offline, before renting one.

Parameter counts are exact: the backbone is instantiated on the meta device from its
config (no weights, no download) and its parameters counted; LoRA adds r * (in + out)
per adapted linear layer. The LLM aliases carry their architecture numbers here, so they
plan offline; any local folder with a config.json (or the tiny decoders) plans too.

Peak memory per device during a training step is the sum of

  weights       base parameters at their storage precision: 16/32-bit, int8 (+ a scale per
                row), nf4 with double quantisation (~4.13 bits: a 1-byte absmax per 64
                weights, itself quantised); under k-bit training prep every weight bitsandbytes
                does not quantise (embeddings, norms) is upcast to fp32 by peft
  trainable     LoRA adapters + classification head (or the whole model for a full fine-tune):
                fp32 weight + fp32 gradient + two AdamW moments = 16 bytes per parameter
                (sharded over the devices under FSDP / ZeRO-3)
  activations   tensors autograd keeps for the backward pass, per token and layer, counted from
                the layer's structure (norm inputs, q/k/v/attention output, the four MLP
                intermediates of a gated MLP, LoRA dropout copies; eager attention adds the
                attention probabilities, a * s per token); with gradient checkpointing only each
                layer's input is kept, plus one layer recomputed at a time; plus the
                gradients one layer's backward holds at once (MLP intermediates, and under
                eager attention the fp32 gradient of the attention probabilities)
  logits        the classifier's 3 per sequence: the backbone has no LM head, so a vocab-sized
                logits tensor (printed for contrast) never exists
  runtime       CUDA context + allocator slack, a fixed allowance

Training sequences per step: cross arch feeds both orders (2 x batch); siamese both sides.
Checked by tests against a hand count and against measured saved-tensor bytes of the tiny
decoders on CPU (tests/test_memplan.py).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from ...errors import UsageError
from ...models.shapes import ARCHS

GiB = 1024 ** 3

GPUS = [("T4", 16), ("L4", 24), ("A40", 48), ("A100-80GB", 80), ("H100", 80), ("H200", 141)]
RUNTIME_GIB = 1.0        # CUDA context (~0.4-0.6 GiB) + allocator fragmentation
NF4_BYTES = 4.127 / 8    # nf4 + double-quantised absmax per 64 weights
INT8_BYTES = 1.0
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass
class PlanInput:
    model: str
    lora: bool = False
    lora_r: int = 16
    lora_targets: list[str] = field(default_factory=list)
    bits: str | None = None          # "4bit" | "8bit" | None
    precision: str = "bf16"          # compute/storage precision of unquantised weights
    max_len: int = 512
    batch_size: int = 8
    arch: str = "cross"
    gradient_checkpointing: bool = True
    attn: str | None = None
    devices: int = 1                 # FSDP/ZeRO-3 shard count (full fine-tune); DDP replicates
    head_hidden: int = 256
    head: str = "mlp"                # mlp | linear (the classifier head's shape)
    lora_dropout: float = 0.05
    inference: bool = False          # predict: no gradients, no optimizer, one layer's tensors alive


def load_config(model: str):
    """A transformers config for an alias (offline, from ARCHS), a tiny decoder, or a local folder."""
    from transformers import AutoConfig, CONFIG_MAPPING
    if model in ARCHS:
        numbers = dict(ARCHS[model])
        return CONFIG_MAPPING[numbers.pop("model_type")](**numbers)
    from ...models.names import check_name, is_embedded, is_tiny_decoder, resolve
    check_name(model)  # 'gemma-2-9b' -> did you mean 'gemma-2-9b-it'
    path = resolve(model) if is_tiny_decoder(model) or is_embedded(model) else model
    if os.path.isfile(os.path.join(path, "config.json")):
        return AutoConfig.from_pretrained(path)
    raise UsageError(f"--plan: no architecture numbers for {model!r} offline: use an alias "
                     f"({', '.join(sorted(ARCHS))}) or a local folder with a config.json")


_META: dict[str, Any] = {}


def meta_backbone(config):
    """The bare backbone on the meta device: exact shapes, no memory (cached per config:
    building a 32-layer model takes seconds even without weights)."""
    import torch
    from transformers import AutoModel
    key = config.to_json_string()
    if key not in _META:
        with torch.device("meta"):
            _META[key] = AutoModel.from_config(config)
    return _META[key]


def _linear_shapes(model, targets: list[str] | None) -> list[tuple[str, int, int]]:
    """(leaf name, in, out) of every linear layer LoRA would adapt."""
    import torch
    out = []
    for full, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            leaf = full.split(".")[-1]
            if not targets or leaf in targets:
                out.append((leaf, mod.in_features, mod.out_features))
    return out


def text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def activation_bytes_per_token_layer(config, p: PlanInput, act_bytes: float, lora_targets: set[str]) -> float:
    """Bytes autograd saves per token per decoder layer (no checkpointing)."""
    c = text_config(config)
    h, i = c.hidden_size, c.intermediate_size
    heads = c.num_attention_heads
    hd = getattr(c, "head_dim", None) or h // heads
    q, kv = heads * hd, (getattr(c, "num_key_value_heads", None) or heads) * hd
    norms = 4 if c.model_type in ("gemma2", "gemma3_text", "gemma3") else 2
    n = (norms * h           # norm inputs
         + h + h              # q/k/v input, MLP input (norm outputs)
         + 2 * (q + kv) + kv  # q, k before and after rotary; v
         + q                  # attention output (o_proj input)
         + 4 * i)             # gate, act(gate), up, act(gate)*up (down input)
    b = n * act_bytes
    if p.lora and p.lora_dropout > 0:  # peft keeps the dropped-out input of each adapted linear (+ its mask)
        ins = {"q_proj": h, "k_proj": h, "v_proj": h, "o_proj": q, "gate_proj": h, "up_proj": h, "down_proj": i}
        b += sum(ins.get(t, h) for t in lora_targets) * (act_bytes + 1)
    attn = p.attn or ("eager" if c.model_type == "gemma2" else "sdpa")
    if attn == "eager":  # softmax output (fp32 under autocast) + its cast; softcapping adds the tanh output
        per = (4 + act_bytes) if act_bytes < 4 else 4
        if getattr(c, "attn_logit_softcapping", None):
            per += act_bytes
        b += heads * p.max_len * per
    return b


def backward_transient_bytes_per_token(config, p: PlanInput, act_bytes: float) -> float:
    """Gradients alive at once while one layer back-propagates: its MLP intermediates and,
    under eager attention, the fp32 gradient of the attention probabilities."""
    c = text_config(config)
    b = 2 * c.intermediate_size * act_bytes
    if (p.attn or ("eager" if c.model_type == "gemma2" else "sdpa")) == "eager":
        b += c.num_attention_heads * p.max_len * 4
    return b


@dataclass
class Plan:
    model: str
    params: int
    trainable: int
    lora_params: int
    head_params: int
    weights_gib: float
    trainable_state_gib: float
    activations_gib: float
    activations_no_ckpt_gib: float
    activations_ckpt_gib: float
    logits_gib: float
    lm_logits_gib: float
    runtime_gib: float
    total_gib: float
    fits: dict[str, bool]
    inputs: PlanInput

    def text(self) -> str:
        p = self.inputs
        how = ("predict " if p.inference else "") + ("QLoRA nf4" if p.bits == "4bit" else "LoRA int8" if p.bits == "8bit" else
               f"LoRA {p.precision}" if p.lora else f"full fine-tune {p.precision}")
        seqs = 2 * p.batch_size
        lines = [
            f"plan: {self.model}  {how}  max_len {p.max_len}  batch {p.batch_size} ({seqs} sequences/step, "
            f"{p.arch})  grad-ckpt {'on' if p.gradient_checkpointing else 'off'}"
            + (f"  devices {p.devices}" if p.devices > 1 else ""),
            f"  parameters       {self.params / 1e9:8.3f} B   trainable {self.trainable / 1e6:,.2f} M "
            f"(LoRA {self.lora_params / 1e6:,.2f} M + head {self.head_params / 1e6:,.2f} M)",
            f"  weights          {self.weights_gib:8.2f} GiB",
            f"  trainable state  {self.trainable_state_gib:8.2f} GiB  (fp32 weight + grad + AdamW m, v)"
            if not p.inference else "  trainable state      0.00 GiB  (inference)",
            f"  activations      {self.activations_gib:8.2f} GiB  (with checkpointing {self.activations_ckpt_gib:.2f}, "
            f"without {self.activations_no_ckpt_gib:.2f})",
            f"  logits           {self.logits_gib:8.4f} GiB  (an LM head would need {self.lm_logits_gib:.2f})",
            f"  runtime          {self.runtime_gib:8.2f} GiB",
            f"  peak per device  {self.total_gib:8.2f} GiB",
            "  fits: " + "  ".join(f"{g} {gb} GB {'yes' if ok else 'no'}" for (g, gb), ok in
                                   zip(GPUS, self.fits.values())),
        ]
        return "\n".join(lines)


def plan(p: PlanInput, config=None, *, runtime_gib: float = RUNTIME_GIB) -> Plan:
    """The memory estimate for one training configuration (see the module docstring)."""
    from ..inputs.features import N_FEATURES
    config = config if config is not None else load_config(p.model)
    c = text_config(config)
    model = meta_backbone(config)
    params = sum(t.numel() for t in model.parameters())
    linears = _linear_shapes(model, None)
    linear_params = sum(i * o for _, i, o in linears)
    head_in = (c.hidden_size if p.arch == "cross" else 4 * c.hidden_size) + 3 * N_FEATURES
    head = head_in * 3 + 3 if p.head == "linear" else head_in * p.head_hidden + p.head_hidden + p.head_hidden * 3 + 3
    targets = lora_targets_for_plan(linears, p.lora_targets)
    lora = sum(p.lora_r * (i + o) for leaf, i, o in linears if leaf in targets) if p.lora else 0
    store = DTYPE_BYTES[p.precision]
    if p.bits:
        per = NF4_BYTES if p.bits == "4bit" else INT8_BYTES
        other = params - linear_params
        # k-bit training prep upcasts the rest to fp32; prediction keeps them (and the adapters) at 16 bits
        weights = linear_params * per + (other * store + lora * store if p.inference else other * 4)
        if p.bits == "8bit":
            weights += sum(o for _, _, o in linears) * 4  # one fp32 scale per output row
    elif p.lora:
        weights = params * store
    else:
        weights = 0.0  # a full fine-tune's weights are in the trainable state (fp32 master copy)
    trainable = (lora + head) if p.lora else (params + head)
    shard = p.devices if not p.lora else 1
    state = trainable * 16 / shard
    act_bytes = 4 if p.precision == "fp32" else 2
    tokens = 2 * p.batch_size * p.max_len
    per_layer = activation_bytes_per_token_layer(config, p, act_bytes, set(targets) if p.lora else set())
    n_layers = c.num_hidden_layers
    boundary = tokens * c.hidden_size * act_bytes * 2  # embedding output + final norm
    transient = tokens * backward_transient_bytes_per_token(config, p, act_bytes)
    no_ckpt = tokens * per_layer * n_layers + boundary + transient
    ckpt = tokens * c.hidden_size * act_bytes * n_layers + tokens * per_layer + boundary + transient
    act = ckpt if p.gradient_checkpointing else no_ckpt
    if p.inference:  # inference_mode keeps nothing for backward: the residual stream + one layer at work
        state = 0.0
        act = tokens * (3 * c.hidden_size + 2 * c.intermediate_size) * act_bytes + transient
        no_ckpt = ckpt = act
    logits = 2 * p.batch_size * 3 * 4
    lm_logits = tokens * c.vocab_size * 4
    total = weights + state + act + logits + runtime_gib * GiB
    fits = {g: total <= gb * 1e9 * 0.95 for g, gb in GPUS}  # GPUs are sold in GB; keep 5% headroom
    return Plan(model=p.model, params=params, trainable=trainable, lora_params=lora, head_params=head,
                weights_gib=weights / GiB, trainable_state_gib=state / GiB, activations_gib=act / GiB,
                activations_no_ckpt_gib=no_ckpt / GiB, activations_ckpt_gib=ckpt / GiB, logits_gib=logits / GiB,
                lm_logits_gib=lm_logits / GiB, runtime_gib=runtime_gib, total_gib=total / GiB, fits=fits, inputs=p)


def lora_targets_for_plan(linears: list[tuple[str, int, int]], requested: list[str]) -> list[str]:
    names = list(dict.fromkeys(leaf for leaf, _, _ in linears))
    if not requested:
        return names
    missing = [t for t in requested if t not in names]
    if missing:
        raise UsageError(f"--lora-targets {missing[0]!r} matches no linear layer; its linear layers: "
                         f"{', '.join(names)}")
    return list(requested)


def plan_json(pl: Plan) -> str:
    d = {k: v for k, v in pl.__dict__.items() if k != "inputs"}
    return json.dumps(d)


def main(argv: list[str] | None = None) -> int:
    """python -m src.pref.modeling.memplan MODEL [--lora] [--load-in-4bit] ... (what train_pref --plan prints)."""
    import argparse

    from ...errors import run_cli
    ap = argparse.ArgumentParser(prog="python -m src.pref.modeling.memplan", description=main.__doc__)
    ap.add_argument("model")
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-targets", default="")
    ap.add_argument("--load-in-4bit", action="store_true")
    ap.add_argument("--load-in-8bit", action="store_true")
    ap.add_argument("--precision", default="bf16", choices=list(DTYPE_BYTES))
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--arch", default="cross", choices=["cross", "siamese"])
    ap.add_argument("--no-gradient-checkpointing", action="store_true")
    ap.add_argument("--attn", default=None)
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--inference", action="store_true")
    a = ap.parse_args(argv)

    def body():
        bits = "4bit" if a.load_in_4bit else "8bit" if a.load_in_8bit else None
        print(plan(PlanInput(a.model, lora=a.lora or bool(bits), lora_r=a.lora_r,
                             lora_targets=[t for t in a.lora_targets.split(",") if t], bits=bits,
                             precision=a.precision, max_len=a.max_len, batch_size=a.batch_size, arch=a.arch,
                             gradient_checkpointing=not a.no_gradient_checkpointing, attn=a.attn,
                             devices=a.devices, inference=a.inference)).text())
    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())


def plan_input_from_config(cfg: Any, devices: int = 1) -> PlanInput:
    """PlanInput from a classifier run config (what `train_pref --plan` estimates)."""
    bits = "4bit" if getattr(cfg, "load_in_4bit", False) else "8bit" if getattr(cfg, "load_in_8bit", False) else None
    targets = getattr(cfg, "lora_targets", "") or []
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    precision = getattr(cfg, "precision", "bf16")
    return PlanInput(cfg.model, lora=bool(getattr(cfg, "lora", False) or bits), lora_r=getattr(cfg, "lora_r", 16),
                     lora_targets=list(targets), bits=bits,
                     precision=precision if precision in DTYPE_BYTES else "bf16", max_len=cfg.max_len,
                     batch_size=cfg.batch_size, arch=getattr(cfg, "arch", "cross"),
                     gradient_checkpointing=getattr(cfg, "gradient_checkpointing", False),
                     attn=getattr(cfg, "attn", None) or None, devices=devices,
                     head_hidden=getattr(cfg, "head_hidden", 256), head=getattr(cfg, "head", "mlp"),
                     lora_dropout=getattr(cfg, "lora_dropout", 0.05))
