"""Generative stages: tokenisation of chat episodes for causal LMs (`tokenize`) and a
tiny in-process model/tokenizer for tests and demos (`tiny`)."""
