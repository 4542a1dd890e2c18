"""Configs grouped by section (issue 19, item 4): one --help group per section, flat flags and
older flat run configs still load into the same resolved config, one LoRA section and one
peft `LoraConfig` builder for both stages, and the engine sees only the `train` section."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from src.config import flat_fields, flatten, from_dict, resolve, save_yaml
from src.engine.settings import TrainSettings
from src.gen.config import GenConfig
from src.models import lora as lora_module
from src.models.lora import LoraSettings
from src.pref.config import DistillSettings, PrefConfig, RowSettings

REPO = Path(__file__).resolve().parents[1]


def _help_groups(main, capsys) -> dict[str, list[str]]:
    """--help as {group title: the --flags listed under it}."""
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    groups: dict[str, list[str]] = {}
    title = None
    for line in capsys.readouterr().out.splitlines():
        if re.match(r"^\S.*:$", line):
            title = line[:-1]
            groups[title] = []
        elif title and (m := re.match(r"^  (--[a-z0-9-]+)", line)):
            groups[title].append(m.group(1))
    return groups


def test_train_pref_help_shows_one_group_per_section(capsys):
    from src.train_pref import main
    groups = _help_groups(main, capsys)
    assert list(groups) == ["options", "PrefConfig fields", "rows section", "distill section", "adapter section",
                            "train section"]
    sections = {"rows section": RowSettings, "distill section": DistillSettings, "adapter section": LoraSettings,
                "train section": TrainSettings}
    for title, cls in sections.items():  # every field of a section, and nothing else, under its group
        assert groups[title] == ["--" + n.replace("_", "-") for n in flat_fields(cls)], title
    assert {"--model", "--data", "--out", "--lora", "--arch"} <= set(groups["PrefConfig fields"])
    assert {"--config", "--resume", "--plan", "--merge"} <= set(groups["options"])
    every = [f for flags in groups.values() for f in flags if f != "--help"]
    assert len(every) == len(set(every))  # no flag listed twice


def test_train_gen_help_groups_hold_the_same_shared_sections(capsys):
    from src.train_gen import main
    groups = _help_groups(main, capsys)
    assert list(groups)[1:] == ["GenConfig fields", "adapter section", "train section"]
    assert groups["adapter section"] == ["--lora-r", "--lora-alpha", "--lora-dropout"]


# --- flat flags and older flat YAML --------------------------------------------------------------

CHANGED = {"lr": 2e-5, "epochs": 3.0, "folds": 5, "fold": 1, "select_frac": 0.0, "distill_kl": 0.4,
           "teacher": "runs/t", "lora": True, "lora_r": 8, "lora_dropout": 0.0, "model": "distilbert"}


def test_an_old_flat_run_config_loads_into_the_same_config_as_sections_and_flags(tmp_path):
    flat = tmp_path / "old.yaml"  # how run dirs wrote config.yaml before sections existed
    flat.write_text(yaml.safe_dump(CHANGED))
    from_flat = resolve(PrefConfig, str(flat))
    assert from_flat.train.lr == 2e-5 and from_flat.rows.folds == 5 and from_flat.distill.distill_kl == 0.4
    assert from_flat.adapter.lora_r == 8 and from_flat.model == "distilbert"

    nested = tmp_path / "nested.yaml"
    save_yaml(from_flat, nested)  # what a run writes now: one block per section
    written = yaml.safe_load(nested.read_text())
    assert written["train"]["lr"] == 2e-5 and written["rows"]["folds"] == 5 and written["adapter"]["lora_r"] == 8
    assert "lr" not in written and "folds" not in written
    assert resolve(PrefConfig, str(nested)) == from_flat

    from src.train_pref import parse_args
    argv = [x for k, v in CHANGED.items() for x in ("--" + k.replace("_", "-"), str(v))]
    from_flags, _ = parse_args(argv)
    assert from_flags == from_flat
    assert PrefConfig(**CHANGED) == from_flat  # flat keyword arguments in code, too


def test_a_flag_overrides_the_same_field_given_inside_its_section_in_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"rows": {"folds": 5, "fold": 0}, "distill": {"distill_kl": 0.2},
                                    "adapter": {"lora_r": 4}}))
    from src.train_pref import parse_args
    cfg, _ = parse_args(["--config", str(path), "--fold", "3", "--lora-r", "2"])
    assert (cfg.folds, cfg.fold, cfg.distill_kl, cfg.lora_r) == (5, 3, 0.2, 2)


@settings(max_examples=30, deadline=None)
@given(nest=st.lists(st.booleans(), min_size=len(CHANGED), max_size=len(CHANGED)))
def test_any_mix_of_flat_and_sectioned_keys_resolves_to_one_config(nest):
    """Whichever keys an older or newer file spells flat or inside their section, the result is the same."""
    routes = {name: sname for sname in ("rows", "distill", "adapter", "train")
              for name in flat_fields(type(getattr(PrefConfig(), sname)))}
    data: dict = {}
    for (k, v), inside in zip(CHANGED.items(), nest):
        if inside and k in routes:
            data.setdefault(routes[k], {})[k] = v
        else:
            data[k] = v
    assert from_dict(PrefConfig, data) == from_dict(PrefConfig, dict(CHANGED))


def test_a_key_in_the_wrong_section_is_one_line_naming_it(tmp_path):
    from src.errors import UsageError
    with pytest.raises(UsageError, match=r"c.yaml: unknown config field 'lr' for DistillSettings"):
        from_dict(PrefConfig, {"distill": {"lr": 1e-3}}, source="c.yaml")


# --- one LoRA section, one builder ------------------------------------------------------------------

def test_fields_both_stages_take_are_declared_once_with_each_stages_default():
    pref, gen = flat_fields(PrefConfig), flat_fields(GenConfig)
    for name in ("lora_r", "lora_alpha", "lora_dropout", "eval_max_tokens"):
        assert pref[name][0] is gen[name][0], name  # the same dataclass Field: one declaration, one help, one range
    assert flatten(PrefConfig().adapter) == flatten(GenConfig().adapter) == flatten(LoraSettings())
    # the defaults each stage had before the fields moved into shared sections
    assert (PrefConfig().eval_max_tokens, GenConfig().eval_max_tokens) == (16384, 8192)
    old_flat = {"eval_max_tokens": 4096}  # an older run's top-level key
    assert from_dict(PrefConfig, old_flat).train.eval_max_tokens == 4096
    assert from_dict(GenConfig, old_flat).train.eval_max_tokens == 4096


def test_only_src_models_lora_builds_a_peft_lora_config():
    builders = [str(p.relative_to(REPO)) for p in (REPO / "src").rglob("*.py")
                if re.search(r"\bLoraConfig\(", p.read_text(encoding="utf-8"))]
    assert builders == ["src/models/lora.py"]
    from src.gen import model as gen_model
    from src.pref.modeling import backbone
    assert backbone.lora_config is gen_model.lora_config is lora_module.lora_config


def test_both_stages_build_adapters_with_the_same_defaults():
    from src.gen.model import apply_lora as gen_apply, load_base, load_tokenizer
    from src.pref.modeling.backbone import LoraSpec, apply_lora as pref_apply, load_backbone
    pref = load_backbone("tiny-llama", lora=LoraSpec(), log=None).model.peft_config["default"]
    tok = load_tokenizer("tiny")
    gen = gen_apply(load_base("tiny", tok), GenConfig(), []).peft_config["default"]
    defaults = LoraSettings()
    for peft_cfg in (pref, gen):
        assert (peft_cfg.r, peft_cfg.lora_alpha, peft_cfg.lora_dropout, peft_cfg.bias) == (
            defaults.lora_r, defaults.lora_alpha, defaults.lora_dropout, "none")
    assert gen.fan_in_fan_out and not pref.fan_in_fan_out  # GPT-2's Conv1D (tiny) vs llama's Linear
    assert str(gen.task_type).endswith("CAUSAL_LM") and pref.task_type is None


# --- the engine gets TrainSettings ---------------------------------------------------------------------

class _Reached(Exception):
    pass


def _spy(seen: dict):
    def fake_train(cfg, task, model, run_dir, accelerator, **kw):
        seen["cfg"], seen["hparams"] = cfg, kw.get("hparams")
        raise _Reached
    return fake_train


def test_the_pref_stage_hands_the_engine_its_train_section(tmp_path, monkeypatch):
    from src.data.synthetic import make_rows, write_csv
    from src.pref import train as pref_train
    from tests.pref_helpers import make_tiny_encoder
    data = tmp_path / "d.csv"
    write_csv(make_rows(60, seed=3), data)
    seen: dict = {}
    monkeypatch.setattr(pref_train, "train", _spy(seen))
    cfg = PrefConfig(model=str(make_tiny_encoder(tmp_path / "enc")), data=str(data), out=str(tmp_path / "run"),
                     max_len=32, prompt_budget=8, epochs=1, progress=False, lr=3e-4)
    with pytest.raises(_Reached):
        pref_train.run(cfg)
    assert type(seen["cfg"]) is TrainSettings and seen["cfg"] == cfg.train and seen["cfg"].lr == 3e-4
    assert seen["hparams"] is cfg  # the trackers still record the whole config


def test_the_gen_stage_hands_the_engine_its_train_section(tmp_path, monkeypatch):
    from src.gen import train as gen_train
    seen: dict = {}
    monkeypatch.setattr(gen_train, "train", _spy(seen))
    cfg = GenConfig(model="tiny", synthetic_episodes=12, out=str(tmp_path / "run"), max_len=64, sample_count=0,
                    progress=False, device="cpu", precision="fp32", lr=1e-3)
    with pytest.raises(_Reached):
        gen_train.run(cfg)
    assert type(seen["cfg"]) is TrainSettings and seen["cfg"] == cfg.train and seen["cfg"].lr == 1e-3
    assert seen["hparams"] is cfg
