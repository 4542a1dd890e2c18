"""Typed dataclass configs: defaults < YAML file < command-line flags.

Every field of a config dataclass becomes a `--field-name` flag (help text from
the field's `metadata["help"]`), so a new knob needs one line in one place. The
resolved config is written next to every run (`config.yaml`) and reloading that
file reproduces the run.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def knob(default: Any, help: str, **kw: Any) -> Any:
    """A config field with its documentation attached."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> Any:
    """Optional[X] / X | None -> X."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return args[0]
    return tp


def _coerce(value: Any, tp: Any, name: str) -> Any:
    tp = _base_type(tp)
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (inner,) = typing.get_args(tp)[:1] or (str,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        elif not isinstance(value, (list, tuple)):
            value = [value]  # `layers: 5` in YAML means a one-element list
        return [_coerce(v, inner, name) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"config field '{name}' expects a mapping, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        s = str(value).lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"config field '{name}' expects true/false, got {value!r}")
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise ValueError(f"config field '{name}' expects {tp.__name__}, got {value!r}") from None
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, source: str = "config") -> T:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{source}: unknown config field(s) {', '.join(unknown)} for {cls.__name__}")
    types = _field_types(cls)
    return cls(**{k: _coerce(v, types[k], k) for k, v in data.items()})


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config fields at the top level")
    return data


def add_config_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one `--field-name` flag per dataclass field (all default to None = unset)."""
    types = _field_types(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if any(flag in a.option_strings for a in parser._actions):
            continue  # the CLI defined a richer version of this flag itself
        tp = _base_type(types[f.name])
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else "(see config)"
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": f"{help_text} [default: {default}]"}
        if tp is bool:
            # `--flag`, `--flag false` and `--no-flag` all work
            kwargs.update(nargs="?", const=True, metavar="BOOL", type=lambda v, n=f.name: _coerce(v, bool, n))
            parser.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        else:
            kwargs["metavar"] = f.name.upper()
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(flag, **kwargs)


def resolve(cls: type[T], yaml_path: str | None, args: argparse.Namespace | dict | None = None) -> T:
    """defaults < YAML < explicit CLI flags (flags left at None are unset)."""
    data: dict[str, Any] = {}
    if yaml_path:
        data.update(load_yaml(yaml_path))
    if args is not None:
        ns = vars(args) if isinstance(args, argparse.Namespace) else args
        names = {f.name for f in dataclasses.fields(cls)}
        data.update({k: v for k, v in ns.items() if k in names and v is not None})
    return from_dict(cls, data, source=yaml_path or "command line")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write to a temp file in the same folder, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_yaml(cfg: Any, path: str | os.PathLike, header: str = "") -> None:
    body = yaml.safe_dump(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg, sort_keys=False)
    atomic_write_text(path, (header + "\n" if header else "") + body)
