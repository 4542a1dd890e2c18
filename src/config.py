"""Typed dataclass configs: defaults < YAML file < command-line flags.

(Over 400 lines on purpose: flag generation, YAML loading, section routing and
field validation are one mechanism; split apart, each half would need the
other's private view of a field's metadata.)

Every field of a config dataclass becomes a `--field-name` flag (help text from
the field's `metadata["help"]`), so a new knob needs one line in one place. The
resolved config is written next to every run (`config.yaml`) and reloading that
file reproduces the run.

Validation lives at the field, so YAML and flags are checked by the same code
before any data or model work (`from_dict`):

    batch_size: int = knob(16, "examples per micro-batch", low=1)
    lr: float = knob(5e-5, "peak learning rate", low=0, low_open=True)
    pooling: str = knob("mean", "mean | cls", choices=["mean", "cls"])

A bad value, an unknown key (with the nearest valid name) or a wrong type is a
one-line `UsageError` naming the field (`--flag` when it came from the command
line). Configs compose by section, litgpt style: a field typed with a dataclass
(`train: TrainSettings = section(TrainSettings, lr=2e-4)`) is a nested block in
YAML, while its fields stay flat flags (`--lr`) and flat YAML keys (`lr:` in an
older run's config.yaml) are routed into the one section that declares them.
`@composed` gives the same flat view in code (`cfg.lr` is `cfg.train.lr`), so a
stage config reads as one object while each knob is declared, with its help and
range, exactly once.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import UsageError
from .files import atomic_write_text, write_yaml  # noqa: F401 (atomic_write_text: older imports)

T = TypeVar("T")


def knob(default: Any, help: str, *, choices: list | tuple | None = None, low: float | None = None,
         high: float | None = None, low_open: bool = False, high_open: bool = False, also: tuple = (),
         aliases: tuple[str, ...] = (), **kw: Any) -> Any:
    """A config field with its documentation and its valid values attached.

    low/high bound a number (closed unless low_open/high_open); `also` lists
    special values allowed outside the range (e.g. -1 = "keep the model's");
    `aliases` are names people type for this field (only used to suggest it)."""
    meta = {"help": help, **kw}
    for key, value in (("choices", list(choices) if choices is not None else None), ("low", low), ("high", high)):
        if value is not None:
            meta[key] = value
    meta.update(low_open=low_open, high_open=high_open, also=tuple(also), aliases=tuple(aliases))
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type, help: str = "", **defaults: Any) -> Any:
    """A nested config block of type `cls`, with stage-specific defaults (the
    fields' help and ranges stay declared once, in `cls`)."""
    return dataclasses.field(default_factory=lambda: cls(**defaults), metadata={"help": help, "section": True})


def _base_type(tp: Any) -> Any:
    """Optional[X] / X | None -> X."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, getattr(types, "UnionType", None)) and len(args) == 1:
        return args[0]
    return tp


def _is_section(tp: Any) -> bool:
    tp = _base_type(tp)
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


@functools.cache
def _layout(cls: type) -> tuple[dict[str, Any], dict[str, type], dict[str, str]]:
    """(own field name -> type, section name -> section class, flat name -> section name)."""
    hints = typing.get_type_hints(cls)
    own = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    sections = {n: _base_type(t) for n, t in own.items() if _is_section(t)}
    routes: dict[str, str] = {}
    for sname, scls in sections.items():
        for flat in flat_fields(scls):
            if flat in own or flat in routes:
                raise TypeError(f"{cls.__name__}: field '{flat}' is declared twice (section '{sname}')")
            routes[flat] = sname
    return own, sections, routes


def flat_fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    """Every leaf field a config takes, by its flat name (sections opened up): name -> (field, type)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[dataclasses.Field, Any]] = {}
    for f in dataclasses.fields(cls):
        if _is_section(hints[f.name]):
            out.update(flat_fields(_base_type(hints[f.name])))
        else:
            out[f.name] = (f, hints[f.name])
    return out


def flat_defaults(cls: type) -> dict[str, Any]:
    """Default value of every leaf field (a section's stage-specific defaults included),
    without building `cls` (its __post_init__ may refuse an all-defaults config)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(flatten(value))
        elif value is not dataclasses.MISSING:
            out[f.name] = value
    return out


def flatten(cfg: Any) -> dict[str, Any]:
    """A config as one flat mapping (what the flags see)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out.update(flatten(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else {f.name: v})
    return out


def _flat_getattr(self: Any, name: str) -> Any:  # only called when normal lookup fails
    if name.startswith("__"):
        raise AttributeError(name)
    own, sections, routes = _layout(type(self))
    sname = routes.get(name)
    if sname is not None and sname in self.__dict__:
        return getattr(self.__dict__[sname], name)
    for sname in sections:  # a section's methods too (cfg.optimizer_steps() is cfg.train.optimizer_steps())
        block = self.__dict__.get(sname)
        if block is not None and not name.startswith("_") and callable(getattr(type(block), name, None)):
            return getattr(block, name)
    raise AttributeError(f"{type(self).__name__} has no field '{name}'")


def _flat_setattr(self: Any, name: str, value: Any) -> None:
    own, _, routes = _layout(type(self))
    if name not in own and name in routes:
        setattr(getattr(self, routes[name]), name, value)
    else:
        object.__setattr__(self, name, value)


def composed(cls: type[T]) -> type[T]:
    """Class decorator (on top of @dataclass) for a config made of sections.

    Flat access: `cfg.lr` reads and writes `cfg.train.lr`; construction takes flat
    keyword arguments (`PrefConfig(lr=1e-3)`, `dataclasses.replace(cfg, lr=...)`);
    every instance owns copies of its sections (no block shared by two configs).
    Why by hand: the stage code, the engine and the sweep read knobs by their flag
    names; composition must not make every reader know which block a knob lives in."""
    init = cls.__init__
    own, sections, routes = _layout(cls)
    factories = {f.name: f.default_factory for f in dataclasses.fields(cls) if f.name in sections}

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kw: Any) -> None:
        flat: dict[str, dict[str, Any]] = {s: {} for s in sections}
        for k in [k for k in kw if k not in own and k in routes]:
            flat[routes[k]][k] = kw.pop(k)
        for sname in sections:
            block = kw.get(sname)
            if block is None:
                block = factories[sname]()
            elif isinstance(block, dict):
                block = from_dict(sections[sname], {**flatten(factories[sname]()), **block}, source=sname)
            kw[sname] = dataclasses.replace(block, **flat[sname])  # a copy, with the flat overrides
        init(self, *args, **kw)

    cls.__init__ = __init__
    cls.__getattr__ = _flat_getattr
    cls.__setattr__ = _flat_setattr
    return cls


# --------------------------------------------------------------------------- values


def _coerce(value: Any, tp: Any, name: str, origin: str = "config") -> Any:
    """`value` as type `tp`; a one-line UsageError naming the field (`name`) and its `origin`."""
    try:
        return _coerce_value(value, tp, name)
    except UsageError as e:
        raise UsageError(f"{origin}: {e}" if origin else str(e)) from None


def _coerce_value(value: Any, tp: Any, name: str) -> Any:
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
        return [_coerce_value(v, inner, name) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UsageError(f"{name} expects a mapping, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        s = str(value).lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{name} expects true/false, got {value!r}")
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            if tp is int and isinstance(value, str) and "." in value:
                value = float(value)
                if not value.is_integer():
                    raise ValueError
            if tp in (int, float) and isinstance(value, bool):
                raise ValueError
            return tp(value)
        except (TypeError, ValueError, OverflowError):
            raise UsageError(f"{name} expects {tp.__name__}, got {value!r}") from None
    return value


def _fmt(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def check_value(name: str, value: Any, meta: typing.Mapping[str, Any]) -> str | None:
    """Why `value` is not valid for a field with this metadata (None when it is);
    `name` is how the message names the field (`lr`, `--lr`)."""
    if value is None or value in meta.get("also", ()):
        return None
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        return f"{name}: {value!r} is not one of {', '.join(map(str, choices))}"
    low, high = meta.get("low"), meta.get("high")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (low is not None or high is not None):
        special = f" (or {', '.join(map(_fmt, meta['also']))})" if meta.get("also") else ""
        if isinstance(value, float) and not math.isfinite(value):
            return f"{name} must be a finite number, got {value}"
        lo_ok = low is None or (value > low if meta.get("low_open") else value >= low)
        hi_ok = high is None or (value < high if meta.get("high_open") else value <= high)
        if not (lo_ok and hi_ok):
            if low is not None and high is not None:
                rng = f"in {'(' if meta.get('low_open') else '['}{_fmt(low)}, {_fmt(high)}{')' if meta.get('high_open') else ']'}"
            elif low is not None:
                rng = f"> {_fmt(low)}" if meta.get("low_open") else f"at least {_fmt(low)}"
            else:
                rng = f"< {_fmt(high)}" if meta.get("high_open") else f"at most {_fmt(high)}"
            why = f" ({meta['why']})" if meta.get("why") else ""
            return f"{name} must be {rng}{special}, got {_fmt(value)}{why}"
    return None


def validate(cfg: Any) -> None:
    """Check every field of a config instance (sections too) against its declared
    choices and range; raise a one-line UsageError for the first bad one.
    Stage configs call this from __post_init__, so direct construction is checked too."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            continue  # a section validated itself when it was built
        problem = check_value(f.name, value, f.metadata)
        if problem:
            raise UsageError(problem)


def nearest(name: str, cls: type) -> str | None:
    """The valid field name closest to a misspelt one (aliases count as spellings of their field)."""
    spellings: dict[str, str] = {}
    for flat, (f, _) in flat_fields(cls).items():
        spellings[flat] = flat
        for alias in f.metadata.get("aliases", ()):
            spellings.setdefault(alias, flat)
    hits = difflib.get_close_matches(name, list(spellings), n=1, cutoff=0.6)
    return spellings[hits[0]] if hits else None


def from_dict(cls: type[T], data: dict[str, Any], *, source: str = "config",
              flags: typing.Collection[str] = (), path: str = "") -> T:
    """Build `cls` from a mapping: coerce types, route flat keys into sections,
    check choices/ranges, refuse unknown keys. `flags` names the keys that came from
    the command line (errors then say `--flag`); `path` names a nested block
    (errors then say `markup.action`)."""
    if not isinstance(data, dict):
        raise UsageError(f"{source}: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    own, sections, routes = _layout(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}

    def where(name: str) -> tuple[str, str]:  # (where it came from, how to name it)
        if name in flags:
            return "", "--" + name.replace("_", "-")
        return source, f"{path}.{name}" if path else name

    unknown = [k for k in data if k not in own and k not in routes]
    if unknown:
        named = ", ".join(f"'{k}'" + (f" (did you mean '{hint}'?)" if (hint := nearest(str(k), cls)) else "")
                          for k in unknown)
        raise UsageError(f"{source}: unknown config field{'s' if len(unknown) > 1 else ''} {named} for "
                         f"{cls.__name__} (see --help)")
    kwargs: dict[str, Any] = {}
    routed: dict[str, dict[str, Any]] = {s: {} for s in sections}
    for k, v in data.items():
        if k in sections:
            if dataclasses.is_dataclass(v) and not isinstance(v, type):
                v = flatten(v)
            if not isinstance(v, dict):
                raise UsageError(f"{source}: {k} is a section: expected a mapping of {sections[k].__name__} "
                                 f"fields, got {v!r}")
            routed[k].update(v)
        elif k in own:
            origin, label = where(k)
            value = _coerce(v, own[k], label, origin)
            problem = check_value(label, value, fields[k].metadata)
            if problem:
                raise UsageError(f"{origin}: {problem}" if origin else problem)
            kwargs[k] = value
        else:
            routed[routes[k]][k] = v
    for sname, given in routed.items():
        if given or sname not in kwargs:
            base = flatten(fields[sname].default_factory()) if fields[sname].default_factory is not dataclasses.MISSING else {}
            kwargs[sname] = from_dict(sections[sname], {**base, **given}, source=source, flags=flags)
    try:
        return cls(**kwargs)
    except UsageError as e:  # a cross-field check in __post_init__
        raise UsageError(f"{source}: {e}") from None


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of config fields at the top level")
    return data


def flag_groups(cls: type) -> list[tuple[str, str, list[str]]]:
    """(title, description, flat field names) per --help group: the config's own fields first
    (titled by the first line of its docstring), then one group per section, as in YAML."""
    own, sections, _ = _layout(cls)
    hints = {f.name: f for f in dataclasses.fields(cls)}
    doc = (cls.__doc__ or "").strip().splitlines()
    head = doc[0] if doc and not doc[0].startswith(cls.__name__ + "(") else ""
    groups = [(f"{cls.__name__} fields", head, [n for n in own if n not in sections])]
    for sname, scls in sections.items():
        groups.append((f"{sname} section", hints[sname].metadata.get("help", ""), list(flat_fields(scls))))
    return groups


def add_config_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one `--field-name` flag per leaf field (sections opened up; all default to None = unset),
    in one argparse group per section so --help reads like the YAML.
    Ranges are checked by from_dict, not argparse, so YAML and flags give the same one-line error."""
    defaults = flat_defaults(cls)
    fields = flat_fields(cls)
    for title, description, names in flag_groups(cls):
        group = parser.add_argument_group(title, description or None)
        for name in names:
            _add_flag(parser, group, name, *fields[name], defaults)


def _add_flag(parser: argparse.ArgumentParser, group: Any, name: str, f: dataclasses.Field, tp: Any,
              defaults: dict[str, Any]) -> None:
    flag = "--" + name.replace("_", "-")
    if any(flag in a.option_strings for a in parser._actions):
        return  # the CLI defined a richer version of this flag itself
    tp = _base_type(tp)
    help_text = f.metadata.get("help", "")
    kwargs: dict[str, Any] = {"dest": name, "default": None,
                              "help": f"{help_text} [default: {defaults.get(name, '(see config)')}]"}
    if tp is bool:
        # `--flag`, `--flag false` and `--no-flag` all work
        kwargs.update(nargs="?", const=True, metavar="BOOL")
        group.add_argument("--no-" + name.replace("_", "-"), dest=name, action="store_false",
                           default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    elif typing.get_origin(tp) in (list, tuple):
        # repeatable: `--x a --x b` == `--x a,b` (a YAML list is the third spelling)
        kwargs.update(metavar=name.upper(), action=_ExtendSplit)
    else:
        kwargs["metavar"] = name.upper()
    if "choices" in f.metadata:  # argparse lists them in --help and refuses others at once
        kwargs["choices"] = f.metadata["choices"]
    group.add_argument(flag, **kwargs)


class _ExtendSplit(argparse.Action):
    """A list flag given several times accumulates; each value may hold several
    comma-separated items. The first use on the command line replaces (does not
    extend) the YAML's list, like every other flag."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, self.dest, None) or [])
        items += [v for v in str(values).split(",") if v != ""]
        setattr(namespace, self.dest, items)


def resolve(cls: type[T], yaml_path: str | None, args: argparse.Namespace | dict | None = None) -> T:
    """defaults < YAML < explicit CLI flags (flags left at None are unset)."""
    data: dict[str, Any] = {}
    if yaml_path:
        data.update(load_yaml(yaml_path))
    cli: dict[str, Any] = {}
    if args is not None:
        ns = vars(args) if isinstance(args, argparse.Namespace) else args
        names = set(flat_fields(cls)) | set(_layout(cls)[0])
        cli = {k: v for k, v in ns.items() if k in names and v is not None}
    for k, v in cli.items():  # a flag overrides the same field given flat or inside its section in the YAML
        sname = _layout(cls)[2].get(k)
        if sname is not None and isinstance(data.get(sname), dict):
            data[sname] = {**data[sname], k: v}
        else:
            data[k] = v
    return from_dict(cls, data, source=yaml_path or "command line", flags=set(cli))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_yaml(cfg: Any, path: str | os.PathLike, header: str = "") -> None:
    """A config as YAML, without the knobs that belong to one invocation (`knob(..., invocation=True)`):
    resuming with a run's config.yaml must not, e.g., stop again after --stop-after-steps N."""
    write_yaml(run_config(cfg) if dataclasses.is_dataclass(cfg) else cfg, path, header)


def run_config(cfg: Any) -> dict[str, Any]:
    """`to_dict(cfg)` without the invocation knobs: the config of the run itself."""
    out = dataclasses.asdict(cfg)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.metadata.get("invocation"):
            del out[f.name]
        elif dataclasses.is_dataclass(value):
            out[f.name] = run_config(value)
    return out
