"""src.config (defaults < YAML < CLI, coercion, atomic writes) and src.device (device/precision choice)."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from src import config as cfgmod
from src import device as devmod
from src.config import add_config_args, atomic_write_text, from_dict, knob, load_yaml, resolve, save_yaml


@dataclass
class ToyConfig:
    lr: float = knob(1e-3, "learning rate")
    epochs: int = knob(2, "passes over the data")
    name: str = knob("toy", "run name")
    use_amp: bool = knob(False, "mixed precision")
    layers: list[int] = knob([64, 32], "hidden sizes")
    tags: list[str] = knob([], "free-form tags")
    max_len: int | None = knob(None, "token budget; None = model max")
    mode: str = knob("fast", "speed preset", choices=["fast", "slow"])


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config")
    add_config_args(ap, ToyConfig)
    return ap.parse_args(argv)


def write_yaml(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# --- config ---------------------------------------------------------------------------------

def test_defaults_yaml_cli_precedence(tmp_path):
    y = write_yaml(tmp_path / "c.yaml", "lr: 0.01\nepochs: 5\nname: from-yaml\n")
    assert resolve(ToyConfig, None, parse([])) == ToyConfig()
    from_yaml = resolve(ToyConfig, y, parse([]))
    assert (from_yaml.lr, from_yaml.epochs, from_yaml.name, from_yaml.use_amp) == (0.01, 5, "from-yaml", False)
    both = resolve(ToyConfig, y, parse(["--epochs", "9", "--use-amp"]))
    assert (both.lr, both.epochs, both.name, both.use_amp) == (0.01, 9, "from-yaml", True)  # CLI wins, YAML stays
    assert isinstance(both.epochs, int) and isinstance(both.lr, float)
    only_cli = resolve(ToyConfig, None, parse(["--lr", "3e-4", "--name", "cli"]))
    assert (only_cli.lr, only_cli.name, only_cli.epochs) == (3e-4, "cli", 2)


def test_cli_flag_can_turn_off_a_yaml_true(tmp_path):
    y = write_yaml(tmp_path / "c.yaml", "use_amp: true\n")
    assert resolve(ToyConfig, y, parse([])).use_amp is True
    assert resolve(ToyConfig, y, parse(["--no-use-amp"])).use_amp is False


def test_resolve_accepts_a_dict_and_ignores_unrelated_keys():
    cfg = resolve(ToyConfig, None, {"epochs": "4", "unrelated": 1, "lr": None})
    assert cfg.epochs == 4 and cfg.lr == 1e-3


def test_unknown_yaml_field_is_a_clear_error(tmp_path):
    y = write_yaml(tmp_path / "bad.yaml", "lr: 0.1\nlearning_rate: 0.2\nepochz: 3\n")
    with pytest.raises(ValueError) as ei:
        resolve(ToyConfig, y, parse([]))
    msg = str(ei.value)
    assert "epochz" in msg and "learning_rate" in msg and "bad.yaml" in msg and "ToyConfig" in msg


def test_yaml_must_be_a_mapping(tmp_path):
    y = write_yaml(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_yaml(y)
    assert load_yaml(write_yaml(tmp_path / "empty.yaml", "")) == {}


@pytest.mark.parametrize("raw,expected", [("true", True), ("Yes", True), ("1", True), ("on", True),
                                          ("false", False), ("NO", False), ("0", False), (True, True), (False, False)])
def test_bool_coercion(raw, expected):
    assert from_dict(ToyConfig, {"use_amp": raw}).use_amp is expected


def test_bad_values_are_errors_naming_the_field():
    with pytest.raises(ValueError, match="use_amp"):
        from_dict(ToyConfig, {"use_amp": "maybe"})
    with pytest.raises(ValueError, match="epochs"):
        from_dict(ToyConfig, {"epochs": "many"})
    with pytest.raises(ValueError, match="epochs"):
        from_dict(ToyConfig, {"epochs": 2.5})
    assert from_dict(ToyConfig, {"epochs": 3.0}).epochs == 3


def test_list_coercion_from_cli_and_yaml(tmp_path):
    assert resolve(ToyConfig, None, parse(["--layers", "128,64,8"])).layers == [128, 64, 8]
    assert resolve(ToyConfig, None, parse(["--tags", "a,b"])).tags == ["a", "b"]
    y = write_yaml(tmp_path / "c.yaml", "layers: [1, '2', 3]\ntags: single\n")
    cfg = resolve(ToyConfig, y, parse([]))
    assert cfg.layers == [1, 2, 3] and cfg.tags == ["single"]
    assert from_dict(ToyConfig, {"tags": ""}).tags == []


def test_optional_field_and_choices():
    assert resolve(ToyConfig, None, parse([])).max_len is None
    assert resolve(ToyConfig, None, parse(["--max-len", "512"])).max_len == 512
    with pytest.raises(SystemExit):
        parse(["--mode", "medium"])
    assert resolve(ToyConfig, None, parse(["--mode", "slow"])).mode == "slow"


def test_list_defaults_are_not_shared():
    a, b = ToyConfig(), ToyConfig()
    a.layers.append(1)
    assert b.layers == [64, 32]


def test_help_text_comes_from_the_field():
    ap = argparse.ArgumentParser()
    add_config_args(ap, ToyConfig)
    text = ap.format_help()
    assert "--learning-rate" not in text and "--lr" in text and "learning rate" in text
    assert "--max-len" in text and "token budget" in text


def test_cli_defined_flag_is_not_redefined():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=None, help="richer epochs flag")
    add_config_args(ap, ToyConfig)  # must not raise "conflicting option string"
    assert resolve(ToyConfig, None, ap.parse_args(["--epochs", "7"])).epochs == 7


def test_save_yaml_roundtrip(tmp_path):
    cfg = ToyConfig(lr=0.5, layers=[3], use_amp=True, max_len=128)
    out = tmp_path / "run" / "config.yaml"
    save_yaml(cfg, out, header="# python -m something --config run/config.yaml")
    assert out.read_text().startswith("# python -m something")
    assert resolve(ToyConfig, str(out), parse([])) == cfg


def test_atomic_write_text_replaces_whole_file(tmp_path):
    p = tmp_path / "deep" / "dir" / "f.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert sorted(x.name for x in p.parent.iterdir()) == ["f.txt"]


def test_atomic_write_text_failure_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "original")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(p, "half written \udcff then fails")  # a lone surrogate cannot be UTF-8
    assert p.read_text() == "original"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.txt"]


def test_atomic_write_text_failure_on_rename(tmp_path, monkeypatch):
    p = tmp_path / "new.txt"

    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(cfgmod.os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_text(p, "x")
    assert list(tmp_path.iterdir()) == []


# --- device -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cuda", "xpu", "mps", "cpu"])
def test_explicit_device_is_kept(name):
    assert devmod.pick_device(name) == name


@pytest.mark.parametrize("bad", ["tpu", "CUDA", "", "gpu"])
def test_invalid_device(bad):
    with pytest.raises(ValueError, match="unknown device"):
        devmod.pick_device(bad)


@pytest.mark.parametrize("prec", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("dev", ["cpu", "cuda", "mps"])
def test_explicit_precision_is_kept(dev, prec):
    assert devmod.pick_precision(dev, prec) == prec


@pytest.mark.parametrize("bad", ["fp8", "float16", "half", ""])
def test_invalid_precision(bad):
    with pytest.raises(ValueError, match="unknown precision"):
        devmod.pick_precision("cpu", bad)


def _no_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devmod, "xpu_available", lambda: False)
    monkeypatch.setattr(devmod, "mps_available", lambda: False)


def test_auto_device_order(monkeypatch):
    _no_accelerators(monkeypatch)
    assert devmod.pick_device() == "cpu"
    monkeypatch.setattr(devmod, "mps_available", lambda: True)
    assert devmod.pick_device() == "mps"
    monkeypatch.setattr(devmod, "xpu_available", lambda: True)
    assert devmod.pick_device() == "xpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devmod.pick_device("auto") == "cuda"


def test_auto_device_on_this_machine():
    has_accel = torch.cuda.is_available() or devmod.xpu_available() or devmod.mps_available()
    got = devmod.pick_device()
    if has_accel:
        assert got in ("cuda", "xpu", "mps")
    else:
        assert got == "cpu"
    assert devmod.DeviceChoice.resolve().device == got


def test_auto_precision(monkeypatch):
    monkeypatch.setattr(devmod, "cpu_has_bf16", lambda: True)
    assert devmod.pick_precision("cpu") == "bf16"
    monkeypatch.setattr(devmod, "cpu_has_bf16", lambda: False)
    assert devmod.pick_precision("cpu") == "fp32"
    assert devmod.pick_precision("mps") == "fp32"
    assert devmod.pick_precision("xpu") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert devmod.pick_precision("cuda") == "fp16"  # T4 / V100
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert devmod.pick_precision("cuda") == "bf16"


def test_device_choice_and_mappings(monkeypatch):
    _no_accelerators(monkeypatch)
    monkeypatch.setattr(devmod, "cpu_has_bf16", lambda: False)
    assert devmod.DeviceChoice.resolve() == devmod.DeviceChoice("cpu", "fp32")
    assert devmod.DeviceChoice.resolve("cpu", "bf16") == devmod.DeviceChoice("cpu", "bf16")
    assert [devmod.to_accelerate_precision(p) for p in ("bf16", "fp16", "fp32")] == ["bf16", "fp16", "no"]
    assert devmod.torch_dtype("bf16") is torch.bfloat16 and devmod.torch_dtype("fp32") is torch.float32
    info = devmod.describe()
    assert info["device"] == "cpu" and info["torch"] == torch.__version__ and info["cpu_threads"] >= 1


def test_cpu_has_bf16_reads_cpuinfo():
    flags = Path("/proc/cpuinfo").read_text() if os.path.exists("/proc/cpuinfo") else None
    if flags is None:
        pytest.skip("no /proc/cpuinfo")
    assert devmod.cpu_has_bf16() == any(f in flags for f in ("avx512_bf16", "amx_bf16"))
