"""The embedded real decoders on their real weights and tokenizers (slow tier).

Conversion happens once per machine: the session fixtures call `resolve`, which converts into
the persistent cache ($PREFPIPE_MODEL_CACHE, default ~/.cache/prefpipe/models) only when it is
missing or stale (measured on a shared 2-core EPYC: SmolLM2 ~25 s, Gemma-3 ~300 s), so repeated
runs of the suite reuse it. Each fixture prints what it took.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from src.data.records import PairRecord
from src.models import resolve
from src.models.embedded import EMBEDDED, MANIFEST, cache_problem, package_dir

pytestmark = pytest.mark.slow
SMOL = "smollm2-135m-instruct"


def _converted(alias: str) -> Path:
    t0 = time.perf_counter()
    folder = Path(resolve(alias))
    print(f"\n[{alias}] resolve (convert when not cached) {time.perf_counter() - t0:.1f} s -> {folder}")
    assert cache_problem(folder, alias) is None
    return folder


@pytest.fixture(scope="session")
def smol_folder() -> Path:
    return _converted(SMOL)


@pytest.fixture(scope="session")
def smol_tok(smol_folder):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(smol_folder)


@pytest.fixture(scope="session")
def gemma_folder() -> Path:
    return _converted("gemma3-270m")


def test_converted_smollm2_reloads_to_identical_logits(smol_folder, smol_tok):
    """The cached folder (plain from_pretrained, safetensors) == the model transformers builds
    from the GGUF itself: same logits, same token ids, same chat template; the cache records
    the GGUF's sha256, and the folder loads in seconds."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    spec = EMBEDDED[SMOL]
    pkg = str(package_dir(spec))
    t0 = time.perf_counter()
    cached = AutoModelForCausalLM.from_pretrained(smol_folder).eval()
    load_s = time.perf_counter() - t0
    gguf = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=spec.gguf_file, dtype=torch.float32).eval()
    gguf_tok = AutoTokenizer.from_pretrained(pkg, gguf_file=spec.gguf_file)
    text = "The capital of France is"
    chat = [{"role": "user", "content": "Which is better, A or B?"}]
    assert smol_tok(text).input_ids == gguf_tok(text).input_ids
    assert smol_tok.apply_chat_template(chat, tokenize=False) == gguf_tok.apply_chat_template(chat, tokenize=False)
    ids = torch.tensor([smol_tok(text).input_ids])
    with torch.inference_mode():
        a, b = cached(ids).logits, gguf(ids).logits
    assert torch.equal(a, b)
    assert smol_tok.decode(a[0, -1].argmax()) .strip() == "Paris"  # real weights, not a random init
    assert (smol_folder / "model.safetensors").is_file() and (smol_folder / MANIFEST).is_file()
    print(f"[{SMOL}] cached folder load {load_s:.1f} s")


def _rec(prompt, a, b):
    return PairRecord(id="x", prompt=[prompt], response_a=[a], response_b=[b], label=0)


def test_last_token_pooling_reads_the_last_real_token_where_pad_is_eos(smol_tok):
    """SmolLM2's pad is its EOS (<|im_end|>) and every siamese side ends in EOS: the pooled
    position is the row's last real token (an EOS), never the token before it, and the pooled
    vector of a padded row equals that row run alone."""
    from src.pref.inputs.collate import collate
    from src.pref.inputs.encode import encode_pairs
    from src.pref.modeling.backbone import hidden_states, last_token_index, load_backbone, pool
    tok = smol_tok
    assert tok.pad_token_id == tok.eos_token_id
    recs = [_rec("Say hi", "Hi!", "Hello there, how can I help you today with anything at all?"),
            _rec("What is 2+2? Answer briefly please.", "4", "Four, of course.")]
    enc = encode_pairs(recs, tok, arch="siamese", max_len=64, prompt_budget=32, both_orders=False)
    batch = collate(enc, [0, 1], both_orders=False)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    seqs = enc.ids["a"] + enc.ids["b"]
    last = last_token_index(mask)
    assert last.tolist() == [len(s) - 1 for s in seqs]
    assert all(ids[r, last[r]].item() == tok.eos_token_id for r in range(len(seqs)))
    # the id-based rule (first pad id - 1) misreads a row that ends in EOS: the control
    by_id = (ids == tok.pad_token_id).int().argmax(-1) - 1
    assert (by_id != last).any()
    bb = load_backbone(SMOL, device="cpu")
    with torch.inference_mode():
        pooled = pool(hidden_states(bb.model, ids, mask, True), mask, "last")
        for r, s in enumerate(seqs):
            one = torch.tensor([s])
            alone = pool(hidden_states(bb.model, one, torch.ones_like(one), True), torch.ones_like(one), "last")
            torch.testing.assert_close(pooled[r], alone[0], atol=1e-4, rtol=1e-4)


def test_judge_prompt_renders_through_smollm2_chat_template(smol_tok):
    from src.pref.inputs.judge import INSTRUCTION, JudgeBudget, JudgeEncoder
    ids = JudgeEncoder(smol_tok).encode_records([_rec("what is 2+2", "four", "5")], JudgeBudget(256))["ab"][0]
    text = smol_tok.decode(ids)
    assert text.startswith("<|im_start|>system\n") and "<|im_start|>user\n" + INSTRUCTION in text
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")  # last token: where the verdict would start
    assert text.index("what is 2+2") < text.index("four") < text.index("5")


def test_gemma3_base_has_no_template_and_gets_the_plain_judge_text(gemma_folder):
    from transformers import AutoTokenizer
    from src.pref.inputs.judge import INSTRUCTION, PLAIN_ANSWER_CUE, QUESTION, JudgeBudget, JudgeEncoder, template_parts
    tok = AutoTokenizer.from_pretrained(gemma_folder)
    assert not getattr(tok, "chat_template", None) and template_parts(tok) == ("", PLAIN_ANSWER_CUE)
    ids = JudgeEncoder(tok).encode_records([_rec("what is 2+2", "four", "5")], JudgeBudget(256))["ab"][0]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    text = tok.decode(ids[1:])
    assert text.startswith(INSTRUCTION) and text.endswith(QUESTION + PLAIN_ANSWER_CUE)


def test_generate_answers_through_smollm2_chat_template_and_stops_at_its_eos(smol_folder, capsys):
    """`generate --run smollm2-135m-instruct`: the bare model is prompted through its ChatML
    template and stops on <|im_end|> (its EOS), greedy so the answer is fixed."""
    import json
    from src.generate import main as generate_main
    assert generate_main(["--run", SMOL, "--prompt", "What is the capital of France?", "--preset", "greedy",
                          "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "Paris" in out["reply"] and out["stop_reason"] == "eos" and out["new_tokens"] < 30
