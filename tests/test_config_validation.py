"""Config validation at load, before any data or model work: declared ranges and
choices, unknown keys with the nearest valid name, sections composed litgpt style
(flat flags and older flat YAML still work), one line and exit 2 from the CLIs."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from src.config import composed, flat_fields, from_dict, knob, resolve, save_yaml, section, to_dict, validate
from src.engine.settings import TrainSettings
from src.errors import UsageError
from src.gen.config import GenConfig
from src.pref.config import PrefConfig

REPO = Path(__file__).resolve().parents[1]


# --- the CLIs: one line, exit 2, nothing written ------------------------------------------------

BAD_FLAGS = [
    (["--lr", "-1"], "--lr must be > 0"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--grad-accum", "0"], "--grad-accum must be at least 1"),
    (["--epochs", "0"], "--epochs must be > 0"),
    (["--max-len", "5"], "--max-len must be at least 32"),
    (["--warmup-ratio", "1.5"], "--warmup-ratio must be in [0, 1]"),
    (["--folds", "1"], "--folds must be at least 2 (or 0)"),
    (["--head-dropout", "1"], "--head-dropout must be in [0, 1)"),
    (["--lr", "abc"], "--lr expects float"),
]


@pytest.mark.parametrize("argv, message", BAD_FLAGS)
def test_train_pref_refuses_bad_numbers_in_one_line_before_any_work(tmp_path, capsys, argv, message):
    from src.train_pref import main
    out = tmp_path / "run"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists()  # refused before the run dir, the data and the model


def test_train_pref_names_the_nearest_field_for_a_yaml_typo(tmp_path, capsys):
    from src.train_pref import main
    y = tmp_path / "c.yaml"
    y.write_text("model: minilm\nlerning_rate: 0.001\n")
    assert main(["--config", str(y), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'lerning_rate'" in err and "did you mean 'lr'?" in err and str(y) in err
    assert not (tmp_path / "run").exists()


def test_a_yaml_value_out_of_range_names_the_file_and_field(tmp_path, capsys):
    from src.train_pref import main
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  batch_size: 0\n")
    assert main(["--config", str(y)]) == 2
    assert capsys.readouterr().err == f"error: {y}: batch_size must be at least 1, got 0\n"


def test_train_gen_refuses_bad_values_in_one_line(tmp_path, capsys):
    from src.train_gen import main
    for argv, message in [(["--lr", "-1"], "--lr must be > 0"), (["--dropout", "2"], "--dropout must be in [0, 1) (or -1)"),
                          (["--lora-r", "0"], "--lora-r must be at least 1"), (["--part", "2"], "--part needs --parts N"),
                          (["--parts", "2", "--part", "3"], "--part must be in 1..--parts")]:
        assert main([*argv, "--out", str(tmp_path / "g")]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    assert not (tmp_path / "g").exists()


@pytest.mark.slow  # spawns the CLI in a child process
def test_the_real_command_exits_2_with_one_line(tmp_path):
    """Once through a real process: the exit code and stderr a shell sees."""
    proc = subprocess.run([sys.executable, "-m", "src.train_pref", "--lr", "-1", "--out", str(tmp_path / "r")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "error: --lr must be > 0, got -1\n" and proc.stdout == ""
    assert not (tmp_path / "r").exists()


def test_too_few_rows_per_class_for_the_folds_is_one_clear_line(tmp_path, capsys):
    from src.train_pref import main
    assert main(["--demo-rows", "12", "--out", str(tmp_path / "r"), "--progress", "false"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "12 labelled rows" in err and "too few per class" in err, err
    assert "n_splits" not in err
    assert main(["--demo-rows", "12", "--folds", "5", "--out", str(tmp_path / "k"), "--progress", "false"]) == 2
    assert "--folds 5" in capsys.readouterr().err


# --- sections: composition, flat compatibility --------------------------------------------------

def test_train_knobs_are_declared_once_and_gen_only_changes_defaults():
    gen_names = {f.name for f in dataclasses.fields(GenConfig)}
    train_names = {f.name for f in dataclasses.fields(TrainSettings)}
    assert not gen_names & train_names and not {f.name for f in dataclasses.fields(PrefConfig)} & train_names
    g, p = GenConfig(), PrefConfig()
    assert (g.lr, g.epochs, g.schedule, g.batch_size) == (2e-4, 1.0, "constant", 8)
    assert (p.lr, p.epochs, p.schedule) == (TrainSettings().lr, TrainSettings().epochs, TrainSettings().schedule)
    assert flat_fields(GenConfig)["lr"][0] is flat_fields(PrefConfig)["lr"][0]  # one field, one help text


def test_flat_yaml_nested_yaml_and_flags_agree(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("model: minilm\nlr: 0.001\nbatch_size: 8\nmax_len: 64\n")
    nested = tmp_path / "nested.yaml"
    nested.write_text("model: minilm\nmax_len: 64\ntrain:\n  lr: 0.001\n  batch_size: 8\n")
    a, b = resolve(PrefConfig, str(flat)), resolve(PrefConfig, str(nested))
    c = resolve(PrefConfig, None, {"lr": "0.001", "batch_size": "8", "max_len": "64"})
    assert a == b == c and a.train.lr == 1e-3 and a.batch_size == 8
    over = resolve(PrefConfig, str(nested), {"lr": "0.002"})  # a flag beats the YAML's section
    assert over.lr == 0.002 and over.batch_size == 8


def test_a_run_config_yaml_reloads_to_the_same_config_flat_or_nested(tmp_path):
    cfg = GenConfig(model="tiny", lr=1e-3, epochs=3.0, lora_r=4)
    save_yaml(cfg, tmp_path / "config.yaml")
    assert "train" in yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert resolve(GenConfig, str(tmp_path / "config.yaml")) == cfg
    old_style = {k: v for k, v in to_dict(cfg).items() if k != "train"} | to_dict(cfg)["train"]  # before sections
    assert from_dict(GenConfig, old_style) == cfg


def test_flat_access_and_replace_never_share_a_section():
    a = PrefConfig(lr=1e-3)
    b = dataclasses.replace(a, stop_after_steps=3)
    assert (a.stop_after_steps, b.stop_after_steps, b.lr) == (0, 3, 1e-3) and a.train is not b.train
    b.lr = 0.5
    assert b.train.lr == 0.5 and a.lr == 1e-3
    with pytest.raises(AttributeError):
        a.not_a_field  # noqa: B018


def test_direct_construction_is_validated_too():
    with pytest.raises(UsageError, match="batch_size must be at least 1"):
        PrefConfig(batch_size=0)
    with pytest.raises(UsageError, match="objective: 'ppo' is not one of sft, clm, dpo"):
        GenConfig(objective="ppo")


# --- the machinery, on a toy config ------------------------------------------------------------

@dataclass
class Inner:
    rate: float = knob(0.5, "a rate", low=0, high=1, high_open=True)
    steps: int = knob(3, "steps", low=1)

    def __post_init__(self) -> None:
        validate(self)


@composed
@dataclass
class Outer:
    name: str = knob("x", "a name", choices=["x", "y"])
    keep: float = knob(-1.0, "a fraction or -1", low=0, high=1, also=(-1.0,))
    inner: Inner = section(Inner, rate=0.25)


@given(st.floats(allow_nan=True, allow_infinity=True, width=32))
@settings(max_examples=60, deadline=None)
def test_a_value_is_accepted_exactly_when_it_is_in_the_declared_range(x):
    ok = 0 <= x < 1
    try:
        cfg = from_dict(Outer, {"rate": x})
        assert ok and cfg.inner.rate == x
    except UsageError as e:
        assert not ok and str(e).startswith("config: rate must be") and "\n" not in str(e)


def test_special_values_section_defaults_and_unknown_keys():
    assert from_dict(Outer, {"keep": -1}).keep == -1.0 and from_dict(Outer, {"keep": 0.5}).keep == 0.5
    with pytest.raises(UsageError, match=r"keep must be in \[0, 1\] \(or -1\), got 2"):
        from_dict(Outer, {"keep": 2})
    assert from_dict(Outer, {}).inner == Inner(rate=0.25)          # the section's own defaults
    assert from_dict(Outer, {"steps": 5}).inner == Inner(rate=0.25, steps=5)
    with pytest.raises(UsageError, match=r"unknown config fields 'stpes' \(did you mean 'steps'\?\), 'zzz' for Outer"):
        from_dict(Outer, {"stpes": 5, "zzz": 1})
    with pytest.raises(UsageError, match="inner is a section"):
        from_dict(Outer, {"inner": 3})
    with pytest.raises(UsageError, match="name: 'z' is not one of x, y"):
        from_dict(Outer, {"name": "z"})


def test_every_shipped_classifier_config_resolves(tmp_path):
    """configs/pref/*.yaml are what the README tells users to run: each must load into a
    PrefConfig with no unknown or mistyped field."""
    import argparse
    from src.config import add_config_args, resolve
    from src.pref.config import PrefConfig
    paths = sorted((Path(__file__).resolve().parents[1] / "configs" / "pref").glob("*.yaml"))
    assert len(paths) >= 2
    for path in paths:
        ap = argparse.ArgumentParser()
        add_config_args(ap, PrefConfig)
        cfg = resolve(PrefConfig, str(path), ap.parse_args([]))
        assert cfg.model and cfg.max_len >= 16, path
