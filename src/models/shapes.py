"""Architecture numbers of the LLM aliases: enough to rebuild each config offline, so `--plan`
(src.pref.modeling.memplan) counts parameters and activations without a download."""
from __future__ import annotations

from typing import Any

# Architecture numbers from each model's published config.json (enough to rebuild the
# config offline; everything else keeps the family default).
ARCHS: dict[str, dict[str, Any]] = {
    "gemma-2-9b-it": dict(model_type="gemma2", hidden_size=3584, num_hidden_layers=42, num_attention_heads=16,
                          num_key_value_heads=8, head_dim=256, intermediate_size=14336, vocab_size=256000),
    "gemma-2-2b-it": dict(model_type="gemma2", hidden_size=2304, num_hidden_layers=26, num_attention_heads=8,
                          num_key_value_heads=4, head_dim=256, intermediate_size=9216, vocab_size=256000),
    "gemma-2-27b-it": dict(model_type="gemma2", hidden_size=4608, num_hidden_layers=46, num_attention_heads=32,
                           num_key_value_heads=16, head_dim=128, intermediate_size=36864, vocab_size=256000),
    "llama-3.1-8b-instruct": dict(model_type="llama", hidden_size=4096, num_hidden_layers=32,
                                  num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                                  intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False),
    "qwen2.5-7b-instruct": dict(model_type="qwen2", hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                                num_key_value_heads=4, intermediate_size=18944, vocab_size=152064,
                                tie_word_embeddings=False),
    "qwen2.5-14b-instruct": dict(model_type="qwen2", hidden_size=5120, num_hidden_layers=48,
                                 num_attention_heads=40, num_key_value_heads=8, intermediate_size=13824,
                                 vocab_size=152064, tie_word_embeddings=False),
    "qwen3-8b": dict(model_type="qwen3", hidden_size=4096, num_hidden_layers=36, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=128, intermediate_size=12288, vocab_size=151936,
                     tie_word_embeddings=False),
    "mistral-7b-instruct": dict(model_type="mistral", hidden_size=4096, num_hidden_layers=32,
                                num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                                intermediate_size=14336, vocab_size=32768, tie_word_embeddings=False),
    "phi-3-mini": dict(model_type="phi3", hidden_size=3072, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, intermediate_size=8192, vocab_size=32064, tie_word_embeddings=False),
}
ARCHS["llama-3-8b-instruct"] = ARCHS["llama-3.1-8b-instruct"]
# The embedded decoders (from their converted config.json): --plan needs no conversion.
ARCHS["smollm2-135m-instruct"] = dict(model_type="llama", hidden_size=576, num_hidden_layers=30,
                                      num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                                      intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True)
ARCHS["gemma3-270m"] = dict(model_type="gemma3_text", hidden_size=640, num_hidden_layers=18, num_attention_heads=4,
                            num_key_value_heads=1, head_dim=256, intermediate_size=2048, vocab_size=262144)
