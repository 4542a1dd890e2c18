"""A tiny causal LM and tokenizer built in-process: tests and demos run offline.

`build_tiny()` trains a byte-level BPE tokenizer (the `tokenizers` library, a few
milliseconds on a few kilobytes of text) and wraps it as a transformers fast
tokenizer, then builds a 2-layer GPT-2 for it. Like GPT-2 it has an EOS token and
no pad token, so the pad-token handling of `src.gen.model.ensure_pad_token` is exercised on it.
Byte-level means every string round-trips, Cyrillic and emoji included.

    model, tok = build_tiny()
    save_tiny(model, tok, "runs/tiny")          # save_pretrained of both
    model, tok = load_tiny("runs/tiny")         # Auto*.from_pretrained, local only

Tiny decoders of three real families, for the classifier's decoder backbones:
`tiny_decoder_path("tiny-llama" | "tiny-qwen2" | "tiny-gemma2")` builds (once per
process) a 2-layer random Llama / Qwen2 / Gemma-2 with grouped-query attention and a
byte-level BPE whose special tokens and chat template mimic the family (Llama-3 header
tags and no pad token; Qwen2 ChatML with pad <|endoftext|>; Gemma <start_of_turn>, a
<pad> and a prepended <bos>), saves both with save_pretrained and returns the folder,
which then loads through AutoConfig/AutoModel/AutoTokenizer.from_pretrained exactly as
a downloaded hub model does. Deterministic: two processes build identical folders
(DDP ranks, and a checkpoint that names `tiny-llama` as its base, rely on it).
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
        # transformers >= 5 writes the weights only on torch.distributed rank 0 once a process
        # group exists (PreTrainedModel.should_save_on_this_rank). A tiny folder is private to
        # the process that builds it (each DDP rank builds its own), so this process must write
        # it whatever its rank: without this, rank 1 of a DDP run found a folder with a
        # tokenizer and no config or weights.
        model.should_save_on_this_rank = lambda is_main_process: is_main_process
        try:
            model.save_pretrained(folder)
        finally:
            del model.should_save_on_this_rank
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise RuntimeError(f"{folder}: save_pretrained wrote no config.json for the tiny model")


def load_tiny(folder: str | os.PathLike):
    """(model, tokenizer) saved by `save_tiny` (or any local causal-LM folder)."""
    from transformers import AutoModelForCausalLM
    from transformers import AutoTokenizer
    return (AutoModelForCausalLM.from_pretrained(folder, local_files_only=True),
            AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False))


# ---- tiny decoders of real families (classifier backbones) ----------------------------

_LLAMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
_QWEN2_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Gemma has no system role and calls the assistant "model" (as the real template does).
_GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

# family -> special tokens (in id order), which of them play bos/eos/pad, whether the
# tokenizer prepends bos, and the chat template.
TINY_DECODERS: dict[str, dict] = {
    "tiny-llama": dict(specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                 "<|end_header_id|>", "<|eot_id|>"],
                       bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None, add_bos=True,
                       template=_LLAMA_TEMPLATE),
    "tiny-qwen2": dict(specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                       bos=None, eos="<|im_end|>", pad="<|endoftext|>", add_bos=False,
                       template=_QWEN2_TEMPLATE),
    "tiny-gemma2": dict(specials=["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
                        bos="<bos>", eos="<eos>", pad="<pad>", add_bos=True, template=_GEMMA_TEMPLATE),
}
TINY_VERSION = 2  # bump when a builder changes, so no stale cached folder is reused
_built: dict[str, str] = {}


def build_family_tokenizer(name: str, vocab_size: int = 384, model_max_length: int = 1024):
    """The byte-level BPE of a tiny decoder family, with its specials and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    fam = TINY_DECODERS[name]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=fam["specials"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # the judge's answers, repeated so the BPE learns "tie" as one token: --head lm needs
    # single-token answers (pref/modeling/lm_head.py), as real tokenizers have them
    tok.train_from_iterator(default_corpus() + ["user assistant model system which response is better"]
                            + ["Which is better: A, B, or tie?\ntie\n tie"] * 200, trainer)
    if fam["add_bos"]:
        bos_id = tok.token_to_id(fam["bos"])
        tok.post_processor = processors.TemplateProcessing(
            single=f"{fam['bos']} $A", pair=f"{fam['bos']} $A $B", special_tokens=[(fam["bos"], bos_id)])
    kw = {k + "_token": fam[k] for k in ("bos", "eos", "pad") if fam[k] is not None}
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **kw)
    wrapped.chat_template = fam["template"]
    return wrapped


def _family_config(name: str, tok, max_positions: int):
    from transformers import Gemma2Config, LlamaConfig, Qwen2Config
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if name == "tiny-llama":
        return LlamaConfig(**common, tie_word_embeddings=False)
    if name == "tiny-qwen2":
        return Qwen2Config(**common, tie_word_embeddings=True)
    # Gemma-2: head_dim and query scale explicit, softcapping on (why it wants eager attention);
    # a sliding window shorter than the test sequences so the local layers are exercised.
    return Gemma2Config(**common, head_dim=16, query_pre_attn_scalar=16, sliding_window=32,
                        attn_logit_softcapping=50.0, final_logit_softcapping=30.0)


def build_tiny_decoder(name: str, seed: int = 0, max_positions: int = 1024):
    """(model, tokenizer) of a tiny random decoder family (AutoModelForCausalLM class)."""
    import torch
    from transformers import AutoModelForCausalLM

    if name not in TINY_DECODERS:
        raise KeyError(f"unknown tiny decoder {name!r}; known: {', '.join(TINY_DECODERS)}")
    tok = build_family_tokenizer(name, model_max_length=max_positions)
    cfg = _family_config(name, tok, max_positions)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    return model, tok


def tiny_decoder_path(name: str, root: str | os.PathLike | None = None) -> str:
    """Folder holding tiny decoder `name` (config, safetensors, tokenizer), built at most
    once per process under `root` (default: a per-process folder in the temp dir)."""
    import tempfile
    if name in _built and root is None and os.path.isdir(_built[name]):
        return _built[name]
    base = root or os.path.join(tempfile.gettempdir(), f"prefpipe-tiny-v{TINY_VERSION}-{os.getpid()}")
    folder = os.path.join(base, name)
    if not os.path.isfile(os.path.join(folder, "model.safetensors")):
        model, tok = build_tiny_decoder(name)
        tmp = folder + ".partial"
        save_tiny(model, tok, tmp)
        os.replace(tmp, folder) if not os.path.exists(folder) else None
    if root is None:
        _built[name] = folder
    return folder


def is_tiny_decoder(name: str) -> bool:
    return name in TINY_DECODERS
