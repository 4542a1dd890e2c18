"""`--head lm`: judge with the decoder's own language-model head, three rows of it.

The cross judge prompt (pref/inputs/judge.py) ends where the model would start its
verdict, and asks for "A", "B" or "tie". The logits the LM head gives those three
answer tokens at that last position are the classifier's three logits (the 4th-place
WSDM Cup 2025 recipe). Only those three rows of the output matrix are ever multiplied:
`AnswerHead` is a 3-row linear built from them (Gemma-3's full 262k-row product
would cost 262144 x hidden per sequence for three numbers).

What makes the three logits equal the full-vocabulary ones (a test pins it):
* the rows are the output embedding: the input embedding when the config ties them
  (SmolLM2, Gemma, Qwen2-0.5B), else `lm_head.weight` read row by row from the
  checkpoint's safetensors (the bare AutoModel backbone has no LM head);
* the hidden state is the backbone's last (final-normed) one at the last real token,
  which is what `last` pooling reads;
* a final logit softcap (Gemma-2: 30) is applied as the CausalLM applies it.

Answer tokens are chosen per tokenizer by what it emits right after the judge prompt's
end (`answer_token_ids`): each word must become exactly one token appended to that
context, with or without a leading space; a tokenizer that cannot is a one-line error.

The three rows TRAIN (with LoRA or a full fine-tune) at the base learning rate (they are
pretrained, 3 x hidden numbers), and a bias, starting at 0, trains at --head-lr-mult like
a fresh head: it carries the class prior, which a zero-shot LM does not know (SmolLM2
gives "tie" about 0.06% after the judge prompt; 2.8% of the dev file's votes are ties),
and a frozen 'tie' row without it could only reach that prior through the adapters.
Zero-shot (nothing trained) the three logits are exactly the LM's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import UsageError

ANSWER_WORDS = (("A",), ("B",), ("tie", "Tie"))  # per class, in preference order


class AnswerHead(nn.Module):
    """logits = softcap(h @ rows.T + bias): three rows of the LM head."""

    def __init__(self, hidden: int, softcap: float | None = None):
        super().__init__()
        self.proj = nn.Linear(hidden, 3)
        self.softcap = softcap

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.proj(h.to(self.proj.weight.dtype))
        return z if self.softcap is None else self.softcap * torch.tanh(z / self.softcap)


def final_softcap(config: Any) -> float | None:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "final_logit_softcapping", None)


def check_decoder(config: Any, name: str) -> None:
    from .backbone import is_decoder_config
    if not is_decoder_config(config):
        raise UsageError(f"--head lm scores answer tokens with a decoder's language-model head; {name!r} is an "
                         f"encoder ({getattr(config, 'model_type', '?')}) without one: use --head mlp")


def answer_token_ids(tokenizer) -> tuple[list[int], list[str]]:
    """(ids, words) of the A / B / tie answers: for each class the first candidate word
    (bare or with a leading space, the space first when the judge prompt ends in a
    non-space) that the tokenizer appends to the judge prompt's end as exactly one token."""
    from ..inputs.judge import answer_context
    ctx = answer_context(tokenizer)
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    base = enc(ctx)
    space_first = not ctx[-1:].isspace()
    ids, words = [], []
    for options in ANSWER_WORDS:
        cands = [v for w in options for v in ((" " + w, w) if space_first else (w, " " + w))]
        for w in cands:
            full = enc(ctx + w)
            if len(full) == len(base) + 1 and full[:len(base)] == base:
                ids.append(full[-1])
                words.append(w)
                break
        else:
            raise UsageError(f"--head lm: the tokenizer ({type(tokenizer).__name__}, {len(tokenizer)} tokens) spells "
                             f"none of {cands} as one token after the judge prompt: use --head mlp")
    if len(set(ids)) < 3:
        raise UsageError(f"--head lm: answers {words} share a token ({ids}): use --head mlp")
    return ids, words


def _bare(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _tied(config: Any) -> bool:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return bool(getattr(config, "tie_word_embeddings", getattr(text, "tie_word_embeddings", False)))


def _weight_files(path: str) -> list[Path]:
    folder = Path(path)
    if not folder.is_dir():  # a hub id: its cached snapshot (offline; never downloads here)
        from huggingface_hub import snapshot_download
        folder = Path(snapshot_download(path, local_files_only=True, allow_patterns=["*.safetensors*"]))
    index = folder / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / n for n in names]
    return sorted(folder.glob("*.safetensors"))


def untied_rows(path: str, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows `ids` of `lm_head.weight` (and its bias, if any) read from the checkpoint
    without loading the whole matrix (safetensors slices)."""
    from safetensors import safe_open
    for f in _weight_files(path):
        with safe_open(str(f), framework="pt") as st:
            keys = [k for k in st.keys() if k == "lm_head.weight" or k.endswith(".lm_head.weight")]
            if keys:
                w = torch.stack([st.get_slice(keys[0])[i] for i in ids])
                bkey = keys[0][:-len("weight")] + "bias"
                b = st.get_tensor(bkey)[ids] if bkey in st.keys() else None
                return w, b
    raise UsageError(f"--head lm: {path} unties its LM head from the embeddings but no lm_head.weight was found "
                     "in its safetensors")


def output_rows(encoder: Any, path: str, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(3 x hidden rows, bias or None) of the LM head for token `ids`."""
    bare = _bare(encoder)
    if _tied(bare.config):
        return bare.get_input_embeddings().weight[ids].detach().float().clone(), None
    return untied_rows(path, ids)


def lr_multipliers_lm(mults: dict[str, float], head_mult: float) -> dict[str, float]:
    """The engine's prefix -> LR multiplier map for --head lm (the first matching prefix wins):
    the fresh bias at head_mult, the pretrained rows at the base lr, adapters as given."""
    out = {"head.proj.bias": head_mult, "head.": 1.0}
    out.update({k: v for k, v in mults.items() if k != "head."})
    return out


def init_answer_head(model: Any, path: str, tokenizer, log=print) -> list[str]:
    """Fill `model.head` (an AnswerHead) with the LM head's rows for the answer tokens."""
    ids, words = answer_token_ids(tokenizer)
    w, b = output_rows(model.encoder, path, ids)
    with torch.no_grad():
        model.head.proj.weight.copy_(w)
        model.head.proj.bias.copy_(b if b is not None else torch.zeros(3))
    if log:
        log(f"[head] lm: answer tokens {words} (ids {ids}) from {os.path.basename(str(path)) or path}'s LM head"
            + (f", final softcap {model.head.softcap}" if model.head.softcap else ""))
    return words
