"""A tiny causal LM and tokenizer built in-process: tests and demos run offline.

`build_tiny()` trains a byte-level BPE tokenizer (the `tokenizers` library, a few
milliseconds on a few kilobytes of text) and wraps it as a transformers fast
tokenizer, then builds a 2-layer GPT-2 for it. Like GPT-2 it has an EOS token and
no pad token, so the pad-token handling of `src.gen.model.ensure_pad_token` is exercised on it.
Byte-level means every string round-trips, Cyrillic and emoji included.

    model, tok = build_tiny()
    save_tiny(model, tok, "runs/tiny")          # save_pretrained of both
    model, tok = load_tiny("runs/tiny")         # Auto*.from_pretrained, local only
"""
from __future__ import annotations

import os
from typing import Iterable

EOS = "<|endoftext|>"
# A small chat template (role tags as plain text) so the chat-template rendering path
# can be tested without downloading a tokenizer that has one.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def default_corpus() -> list[str]:
    """Text the tiny BPE learns its merges from: the synthetic chat vocabulary."""
    from ..data.chat_synthetic import CYRILLIC, make_episodes
    texts = []
    for ep in make_episodes(60, seed=0):
        texts += [ep.persona, ep.scenario] + [t.text for t in ep.turns]
    return texts + CYRILLIC + ["User: Bot: Assistant: {{char}} {{user}} Persona: Scenario: <START>"]


def build_tiny_tokenizer(vocab_texts: Iterable[str] | None = None, vocab_size: int = 512,
                         chat_template: bool = False, model_max_length: int = 512):
    """A byte-level BPE tokenizer trained on `vocab_texts` (default: synthetic chat text),
    returned as a transformers fast tokenizer with EOS and no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(vocab_texts) if vocab_texts is not None else default_corpus(), trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS,
                                      model_max_length=model_max_length)
    if chat_template:
        wrapped.chat_template = TINY_CHAT_TEMPLATE
    return wrapped


def build_tiny_model(vocab_size: int, eos_token_id: int, seed: int = 0, n_positions: int = 512,
                     n_embd: int = 64, n_layer: int = 2, n_head: int = 2):
    """A randomly initialised GPT-2 (deterministic from the seed)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                     n_head=n_head, bos_token_id=eos_token_id, eos_token_id=eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(cfg)


def build_tiny(vocab_texts: Iterable[str] | None = None, seed: int = 0, *, vocab_size: int = 512,
               n_positions: int = 512, chat_template: bool = False):
    """(model, tokenizer): a 2-layer GPT-2 and its in-process byte-level BPE tokenizer."""
    tok = build_tiny_tokenizer(vocab_texts, vocab_size, chat_template, n_positions)
    model = build_tiny_model(len(tok), tok.eos_token_id, seed=seed, n_positions=n_positions)
    return model, tok


def save_tiny(model, tokenizer, folder: str | os.PathLike) -> None:
    os.makedirs(folder, exist_ok=True)
    tokenizer.save_pretrained(folder)
    if model is not None:
        model.save_pretrained(folder)


def load_tiny(folder: str | os.PathLike):
    """(model, tokenizer) saved by `save_tiny` (or any local causal-LM folder)."""
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True), load_tokenizer(folder)


def load_tokenizer(name_or_path: str, *, chat_template: bool = False):
    """'tiny' builds the in-process tokenizer; anything else goes to AutoTokenizer
    (a local folder, or a hub id when the cache has it; never remote code)."""
    if name_or_path == "tiny":
        return build_tiny_tokenizer(chat_template=chat_template)
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
