"""--distinct-pad (GenConfig.distinct_pad): the default adds a pad token distinct from EOS;
false keeps pad == eos, the logbooks' pitfall, so that it can be measured
(scripts/measure_gen.py, #3). The one knob reaches the prepared data and the model alike,
and prepared data that disagrees with it is refused in one line."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from src.gen.config import GenConfig
from src.gen.dataset import load_tokenized
from src.gen.model import ensure_pad_token, prepare_for_training
from src.gen.prepare_chat import PrepareChatConfig, prepare
from src.gen.train import RunError, load_data, prepare_config
from src.models.tiny import build_tiny


def _prepare(tmp: Path, distinct: bool) -> Path:
    out = tmp / f"ds_{distinct}"
    prepare(PrepareChatConfig(synthetic_episodes=20, tokenizer="tiny", val_frac=0.2,
                              tokenize={"max_len": 64, "distinct_pad": distinct}), str(out))
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[bool, Path]:
    """Tiny synthetic chats prepared with and without a distinct pad token (once per module)."""
    tmp = tmp_path_factory.mktemp("pad")
    return {d: _prepare(tmp, d) for d in (True, False)}


def test_prepared_data_keeps_pad_equal_eos_only_when_asked(prepared):
    kept = load_tokenized(prepared[False])
    assert kept.meta["pad_token_id"] == kept.meta["eos_token_id"]
    assert kept.tokenizer().pad_token_id == kept.tokenizer().eos_token_id
    default = load_tokenized(prepared[True])
    assert default.meta["pad_token_id"] != default.meta["eos_token_id"]


def test_the_gen_flag_reaches_on_the_fly_preparation_over_a_yaml(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text(yaml.safe_dump({"synthetic_episodes": 10, "tokenize": {"distinct_pad": True}}))
    assert prepare_config(GenConfig(data=str(y), distinct_pad=False)).tok_cfg.distinct_pad is False
    assert prepare_config(GenConfig(data=str(y))).tok_cfg.distinct_pad is True


def test_prepared_distinct_pad_data_is_refused_with_pad_equal_eos(tmp_path, prepared):
    class Acc:  # the one accelerator method load_data uses on prepared data
        is_main_process = True

        def print(self, *a):
            pass
    data = prepared[True]
    with pytest.raises(RunError, match="distinct from EOS; --distinct-pad false"):
        load_data(GenConfig(data=str(data), distinct_pad=False), tmp_path / "run", Acc(), False)
    assert not (tmp_path / "run").exists()
    assert load_data(GenConfig(data=str(prepared[False]), distinct_pad=False), tmp_path / "run2",
                     Acc(), False).train


def test_model_keeps_its_rows_with_pad_equal_eos():
    model, tok = build_tiny(seed=0)
    rows = model.get_input_embeddings().weight.shape[0]
    cfg = GenConfig(finetune="full", distinct_pad=False)
    model, info = prepare_for_training(model, tok, cfg)
    assert tok.pad_token_id == tok.eos_token_id and not info["added"] and info["new_token_ids"] == []
    assert model.get_input_embeddings().weight.shape[0] == max(rows, -(-len(tok) // 64) * 64)
    model2, tok2 = build_tiny(seed=0)
    info2 = ensure_pad_token(model2, tok2)  # the default
    assert info2["added"] and tok2.pad_token_id != tok2.eos_token_id
