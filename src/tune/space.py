"""The sweep YAML: which training config to start from, what to search, how.

    base: configs/pref/minilm.yaml        # the PrefConfig every trial starts from
    fixed: {epochs: 1, eval_every: 4}     # PrefConfig fields set for every trial, on top of base
    space:                                # PrefConfig fields optuna chooses, one line each
      lr:           {type: float, low: 1.0e-5, high: 3.0e-4, log: true}    # or type: logfloat
      batch_size:   {type: categorical, choices: [8, 16, 32], scale_lr: sqrt}
      epochs:       {type: int, low: 1, high: 3}
      pooling:      {type: categorical, choices: [mean, cls]}
    study: {name: demo, n_trials: 8, pruner: median}   # StudySettings below

`scale_lr: sqrt` on batch_size: the searched lr is the lr at the base config's
batch (batch_size * grad_accum); a trial whose batch is k times larger trains
with lr * sqrt(k) (`linear`: lr * k). The trial's config.yaml and the best
config hold the lr actually used.

Everything is checked when the file is loaded (unknown fields, types, ranges,
choices a field does not accept), so a typo fails before the first trial.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import flat_fields, from_dict, knob, load_yaml, validate
from ..errors import UsageError
from ..pref.config import PrefConfig

# Fields a sweep owns itself: each trial's run dir, and running to the end.
RESERVED = {"out": "each trial's run dir is <study out>/trials/<number>",
            "stop_after_steps": "a trial must run to its end to give a value"}
PARAM_TYPES = {"float": ("float", False), "logfloat": ("float", True), "log-float": ("float", True),
               "loguniform": ("float", True), "int": ("int", False), "logint": ("int", True),
               "categorical": ("categorical", False)}


@dataclass
class StudySettings:
    name: str = knob("", "study name in the storage (default: the sweep file's name)")
    out: str = knob("", "study folder: study.db, trials/<number>/ run dirs, report/ (default sweeps/<name>)")
    storage: str = knob("", "'' = sqlite:///<out>/study.db; any SQLAlchemy URL (postgresql://user@host/db); "
                            "journal:<path> for optuna's journal file")
    n_trials: int = knob(10, "finished trials the study should hold; re-running continues up to this many", low=1)
    timeout: float = knob(0.0, "stop starting new trials after this many seconds (0 = no limit)", low=0)
    workers: int = knob(1, "worker processes on this machine", low=1)
    seed: int = knob(0, "sampler seed (each trial's sampler is seeded from this and the trial number)")
    n_startup_trials: int = knob(5, "random trials before TPE starts modelling", low=0)
    pruner: str = knob("median", "median | hyperband | none", choices=["median", "hyperband", "none"])
    pruner_args: dict = knob({}, "keyword arguments of the pruner (e.g. n_startup_trials, n_warmup_steps; "
                                 "min_resource, reduction_factor)")
    reports_per_epoch: int = knob(4, "pruning steps per epoch: step k = after k/N epochs, so trials with "
                                     "different batch sizes are compared at the same amount of data", low=1)
    metric: str = knob("", "metric minimised (from each eval and the run's final metrics); default: the base "
                           "config's task's (arena3: val_log_loss, binary: val_binary_log_loss)")
    enqueue_base: bool = knob(True, "make the base config's values of the searched fields the first trial "
                                    "(the baseline the sweep has to beat)")
    keep_checkpoints: bool = knob(False, "keep each trial's checkpoint/ (GBs over a sweep); the best config "
                                         "retrains the best model")
    objective: str = knob("src.pref.train:run", "module:function called as f(cfg, trial_hook=...) -> metrics")

    def __post_init__(self) -> None:
        validate(self)
        if ":" not in self.objective:
            raise UsageError(f"objective must be module:function, got '{self.objective}'")


@dataclass
class Param:
    """One searched PrefConfig field."""
    name: str
    kind: str  # float | int | categorical
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list = field(default_factory=list)
    scale_lr: str = "none"  # batch_size only: none | sqrt | linear

    def suggest(self, trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, self.choices)

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        return self.low <= value <= self.high


@dataclass
class SweepSpec:
    base: str
    fixed: dict
    space: list[Param]
    study: StudySettings
    source: str = ""

    def base_values(self) -> dict[str, Any]:
        """base YAML < fixed: every trial's starting point, as a plain dict."""
        data = load_yaml(self.base) if self.base else {}
        data.update(self.fixed)
        return data

    def base_config(self) -> PrefConfig:
        return from_dict(PrefConfig, self.base_values(), source=self.source)

    def baseline_params(self) -> dict[str, Any]:
        """The base config's value of each searched field (the enqueued first trial)."""
        cfg = self.base_config()
        return {p.name: getattr(cfg, p.name) for p in self.space}

    def trial_config(self, params: dict[str, Any], out: str | Path, **extra: Any) -> PrefConfig:
        """base < fixed < sampled params < extra; then the lr rescaled for the batch size."""
        base = self.base_config()
        data = {**self.base_values(), **params, **extra, "out": str(out)}
        cfg = from_dict(PrefConfig, data, source=f"{self.source} trial")
        cfg.lr = scaled_lr(self, cfg, base)
        return cfg

    def describe(self) -> dict:
        """JSON-able summary stored with the study (the report reads it on any machine)."""
        return {"source": self.source, "base": self.base, "fixed": self.fixed,
                "space": [dataclasses.asdict(p) for p in self.space]}


def scaled_lr(spec: SweepSpec, cfg: PrefConfig, base: PrefConfig) -> float:
    bs = next((p for p in spec.space if p.name == "batch_size" and p.scale_lr != "none"), None)
    if bs is None:
        return cfg.lr
    k = (cfg.batch_size * cfg.grad_accum) / (base.batch_size * base.grad_accum)
    return cfg.lr * (math.sqrt(k) if bs.scale_lr == "sqrt" else k)


def _field_kind(name: str) -> type:
    tp = flat_fields(PrefConfig)[name][1]
    return tp if tp in (int, float, bool, str) else object


def parse_param(name: str, spec: Any, source: str) -> Param:
    where = f"{source}: space.{name}"
    fields = {n: f for n, (f, _) in flat_fields(PrefConfig).items()}
    if name not in fields:
        raise ValueError(f"{where}: not a PrefConfig field (see python -m src.train_pref --help)")
    if name in RESERVED:
        raise ValueError(f"{where}: the sweep sets this itself ({RESERVED[name]})")
    if isinstance(spec, list):  # shorthand: a list is a categorical
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"{where}: expected a mapping with 'type' (float, logfloat, int, categorical)")
    spec = dict(spec)
    typ = str(spec.pop("type")).lower()
    if typ not in PARAM_TYPES:
        raise ValueError(f"{where}: unknown type '{typ}' (choose from {', '.join(PARAM_TYPES)})")
    kind, log = PARAM_TYPES[typ]
    log = bool(spec.pop("log", log))
    scale_lr = str(spec.pop("scale_lr", "none")).lower()
    if scale_lr not in ("none", "sqrt", "linear"):
        raise ValueError(f"{where}: scale_lr must be none, sqrt or linear")
    if scale_lr != "none" and name != "batch_size":
        raise ValueError(f"{where}: scale_lr belongs on batch_size")
    ftype = _field_kind(name)

    def check(value: Any) -> Any:  # coerce as PrefConfig would, and respect the field's own choices
        try:
            value = getattr(from_dict(PrefConfig, {name: value}, source=where), name)
        except ValueError as e:
            raise ValueError(str(e)) from None
        allowed = fields[name].metadata.get("choices")
        if allowed and value not in allowed:
            raise ValueError(f"{where}: '{value}' is not one of {allowed}")
        return value

    if kind == "categorical":
        choices = spec.pop("choices", None)
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{where}: categorical needs a non-empty 'choices' list")
        choices = [check(c) for c in choices]
        if len(set(map(repr, choices))) < len(choices):
            raise ValueError(f"{where}: duplicate choices {choices}")
        param = Param(name, kind, choices=choices, scale_lr=scale_lr)
    else:
        if ftype not in (int, float) or (kind == "float" and ftype is int):
            raise ValueError(f"{where}: a {ftype.__name__} field can't take type {typ} "
                             f"({'use int or categorical' if ftype is int else 'use categorical'})")
        if "low" not in spec or "high" not in spec:
            raise ValueError(f"{where}: {typ} needs low and high")
        low, high = check(spec.pop("low")), check(spec.pop("high"))
        step = spec.pop("step", None)
        if kind == "int" and not all(float(v).is_integer() for v in (low, high)):
            raise ValueError(f"{where}: int bounds must be whole numbers")
        if not low < high:
            raise ValueError(f"{where}: low ({low}) must be below high ({high})")
        if log and low <= 0:
            raise ValueError(f"{where}: a log scale needs low > 0")
        if log and step is not None:
            raise ValueError(f"{where}: step and log can't be combined")
        if kind == "int":
            low, high = int(low), int(high)
        param = Param(name, kind, low=low, high=high, log=log, step=step, scale_lr=scale_lr)
    if spec:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(spec))}")
    return param


def parse_sweep(data: dict, source: str = "sweep") -> SweepSpec:
    unknown = sorted(set(data) - {"base", "fixed", "space", "study"})
    if unknown:
        raise ValueError(f"{source}: unknown top-level key(s) {', '.join(unknown)} (base, fixed, space, study)")
    base = str(data.get("base") or "")
    if base and not Path(base).exists():
        raise ValueError(f"{source}: base config '{base}' not found (paths are relative to the working directory)")
    fixed = dict(data.get("fixed") or {})
    for name in fixed:
        if name in RESERVED:
            raise ValueError(f"{source}: fixed.{name}: the sweep sets this itself ({RESERVED[name]})")
    space_data = data.get("space") or {}
    if not isinstance(space_data, dict) or not space_data:
        raise ValueError(f"{source}: 'space' must map PrefConfig fields to search ranges")
    space = [parse_param(name, spec, source) for name, spec in space_data.items()]
    clash = sorted(set(fixed) & set(space_data))
    if clash:
        raise ValueError(f"{source}: {', '.join(clash)} both fixed and searched")
    study = from_dict(StudySettings, dict(data.get("study") or {}), source=f"{source}: study")
    if not study.name:
        study.name = Path(source).stem if source.endswith((".yaml", ".yml")) else "sweep"
    spec = SweepSpec(base=base, fixed=fixed, space=space, study=study, source=source)
    base_cfg = spec.base_config()  # base + fixed must make a valid PrefConfig on their own
    if not study.metric:  # the task's metric, so a binary sweep needs no `study: {metric: ...}`
        from ..data.tasks import SWEEP_METRICS
        study.metric = SWEEP_METRICS[base_cfg.task]
    return spec


def load_sweep(path: str | Path) -> SweepSpec:
    return parse_sweep(load_yaml(path), source=str(path))
