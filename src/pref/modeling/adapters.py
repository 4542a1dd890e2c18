"""LoRA classifier checkpoints: adapter + head + tokenizer, never the base weights; merge.

A LoRA run's weights file holds only what training changed: the LoRA matrices, the
head and its buffers (style statistics). `backbone.json` names the base (alias, hub id
or folder) and the LoRA spec, so loading rebuilds the base through `load_backbone`
(optionally in 8/4-bit for prediction), attaches fresh adapters of the same shape and
fills them; every key of the file must land and every missing key must be a base
weight, so a head cannot silently come back random (the peft SEQ_CLS pitfall) and an
adapter of another shape is an error, not noise.

`merge_folder` (called by pref/checkpoint.merge_run) folds the adapters into the base (peft merge_and_unload) and writes a plain
folder: the merged backbone (save_pretrained), the head, the tokenizer.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ...errors import UsageError
from .backbone import LoraSpec

META = "backbone.json"


def is_lora_model(model: Any) -> bool:
    from peft import PeftModel
    return isinstance(getattr(model, "encoder", None), PeftModel)


def _is_base_key(key: str) -> bool:
    return key.startswith("encoder.") and "lora_" not in key


def own_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """What a LoRA classifier's checkpoint stores: adapters, head, buffers; not the base."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if not _is_base_key(k)}


def write_meta(folder: Path, *, base: str, lora: LoraSpec | None, decoder: bool, pooling: str,
               attn: str | None, targets: list[str] | None) -> None:
    meta = {"base": base, "lora": asdict(lora) if lora else None, "decoder": decoder, "pooling": pooling,
            "attn": attn}
    if lora is not None and targets:
        meta["lora"]["targets"] = list(targets)  # resolved names: a reload adapts exactly these
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META).write_text(json.dumps(meta, indent=2) + "\n")


def read_meta(folder: Path) -> dict | None:
    p = Path(folder) / META
    return json.loads(p.read_text()) if p.exists() else None


def save_own_weights(model: Any, path: Path) -> int:
    from safetensors.torch import save_file
    state = own_state_dict(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return sum(v.numel() * v.element_size() for v in state.values())


def load_own_weights(model: Any, path: Path) -> None:
    """Fill adapters + head from `path`; refuses a file whose keys do not all land."""
    from safetensors.torch import load_file
    state = load_file(str(path))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # same key, other shape (an MLP head's weights into --head linear): torch raises
        first = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e).splitlines()[0])
        raise UsageError(f"{path}: adapter checkpoint does not match the rebuilt model ({first})") from None
    not_base = [k for k in missing if not _is_base_key(k)]
    if unexpected or not_base:
        raise UsageError(f"{path}: adapter checkpoint does not match the rebuilt model "
                         f"(unexpected {unexpected[:3]}, missing {not_base[:3]})")


def same_base(a: str, b: str) -> bool:
    """Do two --model names (alias, hub id, folder) name one base? Aliases resolve first
    (gemma-2-9b-it == google/gemma-2-9b-it), folders compare by real path."""
    import os
    from ...models import resolve
    if a == b:
        return True
    ra, rb = resolve(a), resolve(b)
    return ra == rb or (os.path.isdir(ra) and os.path.isdir(rb) and os.path.realpath(ra) == os.path.realpath(rb))


def check_warm_start(meta: dict | None, cfg: Any, model: Any, where: str) -> None:
    """--init-from RUN into this run's model: refuse what would load silently but wrongly.
    Adapters of another base with the same module names and shapes (tiny-qwen2 and
    tiny-llama, or two fine-tunes of one architecture) fill without a single missing key,
    and a different alpha rescales every adapter: both give a run that is not the source's."""
    src_lora = bool(meta and meta.get("lora"))
    if src_lora != is_lora_model(model):
        if src_lora:
            raise UsageError(f"{where} is a LoRA run (adapters on {meta['base']!r}) and this run is not: "
                             "add --lora with the same base and LoRA shape")
        raise UsageError(f"{where} is a full fine-tune and this run is LoRA: drop --lora to start from its weights")
    if not src_lora:
        return
    if not same_base(meta["base"], cfg.model):
        raise UsageError(f"{where}: its adapters belong to base model {meta['base']!r}, this run's base is "
                         f"{cfg.model!r}: LoRA warm starts need the same base")
    src = meta["lora"]
    here = {"lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
            "lora_targets": sorted(next(iter(model.encoder.peft_config.values())).target_modules)}
    there = {"lora_r": src["r"], "lora_alpha": src["alpha"], "lora_targets": sorted(src.get("targets") or [])}
    for name in here:
        if here[name] != there[name] and (name != "lora_targets" or there[name]):
            raise UsageError(f"{where}: its {name} is {there[name]!r}, this run's is {here[name]!r}")


def lora_spec_from_meta(meta: dict) -> LoraSpec | None:
    return LoraSpec(**meta["lora"]) if meta.get("lora") else None


def base_location(meta: dict, folder: str | Path | None = None, base_dir: str | Path | None = None) -> str:
    """Where to load an adapter's base from: `base_dir` (a caller's override), else
    backbone.json's `base_dir` (an export: the base copied beside the models, relative to
    the checkpoint folder, or a Kaggle model path), else its `base` name (alias, hub id,
    folder). A folder named but absent is a one-line error naming it."""
    where = base_dir or meta.get("base_dir")
    if not where:
        return meta["base"]
    path = Path(where)
    if not path.is_absolute() and folder is not None:
        path = Path(folder) / path
    if not path.is_dir():
        raise UsageError(f"adapter run: its base model folder {path} (base {meta['base']!r}) does not exist here: "
                         "attach the dataset that holds it, or export again with the base copied")
    return str(path.resolve())


def load_base_for(meta: dict, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                  load_in_4bit: bool = False, load_in_8bit: bool = False, compute_dtype: torch.dtype = torch.bfloat16,
                  log=None, folder: str | Path | None = None, base_dir: str | Path | None = None):
    """The backbone a LoRA checkpoint was trained on, with fresh adapters of its shape
    (4/8-bit: quantised onto `device`, bitsandbytes computing in `compute_dtype`; from
    `base_location`: the checkpoint `folder` anchors a relative `base_dir`)."""
    from .backbone import load_backbone
    where = base_location(meta, folder, base_dir)
    try:
        return load_backbone(where, device=device, dtype=dtype, lora=lora_spec_from_meta(meta),
                             load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, attn=meta.get("attn"),
                             compute_dtype=compute_dtype, log=log)
    except (OSError, UsageError) as e:
        if isinstance(e, UsageError) and "--load-in" in str(e):
            raise
        raise UsageError(f"adapter run: its base model {where!r} cannot be loaded here "
                         f"({str(e).splitlines()[0]}); put the base there, or export the run with "
                         "`python -m src.export --base-dir PATH` naming where it is") from None


def merge_into(model: Any) -> Any:
    """model.encoder with adapters folded in (a plain transformers backbone)."""
    if not is_lora_model(model):
        raise UsageError("--merge: this run is not a LoRA run (its checkpoint already holds full weights)")
    model.encoder = model.encoder.merge_and_unload()
    return model


def merge_folder(model: Any, tokenizer: Any, out: Path) -> None:
    """Write a merged checkpoint: backbone/ (save_pretrained), head.safetensors, tokenizer/.
    An existing `out` is refused before anything is merged or written; the folder appears
    whole or not at all (src/files.atomic_dir)."""
    from safetensors.torch import save_file
    from ...files import atomic_dir
    out = Path(out)
    if out.exists():
        raise UsageError(f"--merge: {out} exists; choose another --out (or remove it)")
    merge_into(model)
    with atomic_dir(out) as tmp:
        model.encoder.save_pretrained(tmp / "backbone")
        tokenizer.save_pretrained(tmp / "tokenizer")
        save_file({k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("encoder.")},
                  str(tmp / "head.safetensors"))
