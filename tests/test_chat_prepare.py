"""End to end: `python -m src.gen.prepare_chat` turns raw files into a tokenised
dataset plus a data report whose counts add up from the first row to the last token."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from src.config import resolve
from src.gen.prepare_chat import PrepareChatConfig, main
from src.gen.dataset import load_tokenized
from src.gen.encode import IGNORE

REPO = Path(__file__).resolve().parents[1]
SMALL = {"synthetic_episodes": 120, "seed": 3, "names": {"enabled": True},
         "keywords": {"groups": {"blush": {"words": ["blush"], "p_drop": 0.7}}},
         "source_cap": {"cap": {"loud_subset": 10}}, "tokenize": {"max_len": 256}}


def write_config(tmp_path: Path, data: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prep")
    out = tmp / "ds"
    assert main(["--config", str(write_config(tmp, SMALL)), "--out", str(out)]) == 0
    return out


def test_report_counts_add_up(prepared):
    report = json.loads((prepared / "data_report.json").read_text())
    for r in report["inputs"]:
        assert r["rows"] == r["ok"] + r["quarantined"] + sum(r["skipped"].values())
    assert report["read"]["quarantined"] == 2  # the two broken demo lines, each with a reason
    f = report["filters"]
    assert f[0]["in"] == report["totals"]["episodes_read"] == report["read"]["episodes"]
    for a, b in zip(f, f[1:]):
        assert a["out"] == b["in"]
    for e in f:
        assert e["in"] == e["out"] + sum(e["dropped"].values())
    assert f[-1]["out"] == report["totals"]["episodes_kept"]
    split = report["split"]
    assert split["train_episodes"] + split["val_episodes"] == report["totals"]["episodes_kept"]
    for name in ("train", "val"):
        t = report["tokenize"][name]
        assert t["in"] == split[f"{name}_episodes"] and t["in"] == t["out"] + sum(t["dropped"].values())
        assert t["out"] == report["totals"][f"{name}_rows"]


def test_dataset_loads_with_distinct_pad_and_eos(prepared):
    data = load_tokenized(prepared)
    meta, tok = data.meta, data.tokenizer()
    assert meta["pad_token_id"] != meta["eos_token_id"] and tok.pad_token_id == meta["pad_token_id"]
    assert len(data.train) == meta["splits"]["train"] and len(data.val) == meta["splits"]["val"] >= 1
    for row in data.train + data.val:
        labels, ids = row["labels"], row["input_ids"]
        assert len(ids) <= 256 and (labels != IGNORE).any()
        assert (labels[-1] == meta["eos_token_id"]) == (not row["truncated"])
        assert meta["pad_token_id"] not in ids
    assert {r["group_id"] for r in data.train}.isdisjoint({r["group_id"] for r in data.val})
    cfg = yaml.safe_load((prepared / "config.yaml").read_text())
    assert cfg["synthetic_episodes"] == 120  # the resolved config travels with the data


def test_cli_flags_override_yaml_and_packing(tmp_path):
    cfg = {**SMALL, "tokenize": {"max_len": 256, "packing": True}}
    out = tmp_path / "packed"
    assert main(["--config", str(write_config(tmp_path, cfg)), "--out", str(out), "--val-frac", "0.2",
                 "--seed", "4"]) == 0
    data = load_tokenized(out)
    report = json.loads((out / "data_report.json").read_text())
    assert report["tokenize"]["train"]["packed_rows"]["rows"] == len(data.train)
    assert any(r["n_examples"] > 1 for r in data.train) and all("position_ids" in r for r in data.train)
    assert report["split"]["val_episodes"] > 0.1 * report["totals"]["episodes_kept"]
    # a second run into a non-empty folder needs --overwrite
    assert main(["--config", str(write_config(tmp_path, cfg)), "--out", str(out)]) == 2


def test_cli_reports_bad_config(tmp_path, capsys):
    bad = write_config(tmp_path, {**SMALL, "markup": {"action": "explode"}})
    assert main(["--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "markup.action" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "y")]) == 2  # no inputs at all
    assert not (tmp_path / "x").exists()


def test_real_inputs_and_duplicate_names(tmp_path, synthetic_csv):
    cfg = {"inputs": [{"path": str(synthetic_csv), "name": "arena", "tie_policy": "both", "pair_mode": "both"}],
           "tokenize": {"max_len": 384, "over_length": "drop"}}
    out = tmp_path / "real"
    assert main(["--config", str(write_config(tmp_path, cfg)), "--out", str(out)]) == 0
    report = json.loads((out / "data_report.json").read_text())
    assert report["read"]["rows"] == 400 and report["totals"]["train_rows"] > 0
    dup = {"inputs": [{"path": str(synthetic_csv), "name": "a"}, {"path": str(synthetic_csv), "name": "a"}]}
    assert main(["--config", str(write_config(tmp_path, dup, "d.yaml")), "--out", str(tmp_path / "dup")]) == 2


def test_shipped_configs_validate():
    # configs/gen also holds other stages' configs: check those launched with prepare_chat
    paths = [p for p in sorted((REPO / "configs" / "gen").glob("*.yaml"))
             if f"src.gen.prepare_chat --config configs/gen/{p.name}" in p.read_text()]
    assert paths
    for p in paths:
        cfg = resolve(PrepareChatConfig, str(p))
        assert cfg.filter_configs and cfg.tok_cfg.max_len > 0
