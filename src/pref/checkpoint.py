"""The classifier's checkpoint folder (what prediction needs) and where to find it in a run
dir. The run dir's file names are src/engine/rundir.py's; in a classifier run:

    RUN_DIR/
      config.yaml            the run's PrefConfig (python -m src.train_pref --config it to rerun)
      data_report.json       what the reader made of the data file (rows, quarantine, label counts)
      prior.json             class prior of the TRAINING rows (add-one smoothed) for rows predict cannot parse
      metrics.jsonl          one line per log/eval step;  metrics.json  final metrics
      val_predictions.csv    the validation rows, predicted by checkpoint/best
      plots/                 loss curves, reliability, confusion matrix
      checkpoint/best/       what prediction needs (CHECKPOINT_FILES + CHECKPOINT_DIRS)
      checkpoint/last/       what --resume needs (written by the engine)
      fold<k>/               with --folds K --fold -1: one run dir per fold

An export's models/m<k>/ is a bare best/ folder with prior.json and
metrics.json copied in (EXPORT_EXTRA_FILES). Train writes this layout, predict
and export read it, the Kaggle notebook reads the export: all through `locate`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import from_dict, load_yaml, save_yaml
from ..engine.rundir import BEST, BEST_PATH, CHECKPOINT, CONFIG, METRICS, PRIOR, WEIGHTS, RunDir
from ..files import atomic_write_text
from ..engine.checkpoint import load_weights, save_weights
from ..errors import UsageError
from .config import PrefConfig
from .modeling.backbone import lora_spec_from_config
from .modeling.model import PrefModel

CHECKPOINT_FILES = ("model.safetensors", CONFIG, "calibration.json")
OPTIONAL_CHECKPOINT_FILES = ("backbone.json",)  # LoRA runs: which base the adapters belong to
CHECKPOINT_DIRS = ("encoder", "tokenizer")
EXPORT_EXTRA_FILES = (PRIOR, METRICS)


def _is_best(folder: Path) -> bool:
    return (folder / WEIGHTS).exists() and (folder / CONFIG).exists()


@dataclass(frozen=True)
class RunLayout:
    """Where a trained classifier's files are. `root` is its run dir, None for a
    bare checkpoint folder (an export's models/m<k>)."""
    best: Path
    root: Path | None

    def find(self, name: str) -> Path | None:
        """A run file (prior.json, metrics.json, data_report.json): the checkpoint folder's own copy first."""
        for d in (self.best, self.root):
            if d is not None and (d / name).exists():
                return d / name
        return None


def locate(path: str | os.PathLike) -> RunLayout:
    """A run dir, its checkpoint/ folder, or checkpoint/best (or an exported model folder)."""
    p = Path(path)
    if _is_best(p / BEST_PATH):
        return RunLayout(p / BEST_PATH, p)
    if _is_best(p / BEST):
        return RunLayout(p / BEST, p.parent if p.name == CHECKPOINT else None)
    if _is_best(p):
        inside_run = p.name == BEST and p.parent.name == CHECKPOINT
        return RunLayout(p, p.parent.parent if inside_run else None)
    raise FileNotFoundError(f"{path}: no trained classifier here (expected checkpoint/best/model.safetensors)")


def best_folder(path: str | os.PathLike) -> Path:
    return locate(path).best


def expand_runs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Run dirs, checkpoint folders, or a K-fold run dir (its fold*/ runs, in order)."""
    out: list[Path] = []
    for p in map(Path, paths):
        try:
            locate(p)
            out.append(p)
            continue
        except FileNotFoundError:
            pass
        folds = sorted((d for d in p.glob("fold*") if d.is_dir()), key=lambda d: (len(d.name), d.name))
        folds = [d for d in folds if _is_best(d / BEST_PATH)]
        if not folds:
            from ..run_kind import wrong_kind
            kind_error = wrong_kind(p, "a trained classifier")  # a generative run, a sweep, an unfinished run
            if kind_error:
                raise UsageError(kind_error)
            raise FileNotFoundError(f"{p}: no trained classifier here (expected checkpoint/best/model.safetensors "
                                    "or fold*/checkpoint/best/)")
        out += folds
    return out


# --- writing ---------------------------------------------------------------------

def save_classifier(folder: Path, model: PrefModel, tokenizer, cfg: PrefConfig, temperature: float) -> None:
    """What prediction needs (CHECKPOINT_FILES + CHECKPOINT_DIRS), and nothing it would have to download.
    A LoRA run stores adapters + head only, and backbone.json naming its base (pref/modeling/adapters.py)."""
    from .modeling import adapters
    if adapters.is_lora_model(model):
        adapters.save_own_weights(model, folder / "model.safetensors")
        adapters.write_meta(folder, base=cfg.model, lora=lora_spec_from_config(cfg), decoder=model.decoder,
                            pooling=model.pooling, attn=cfg.attn or None,
                            targets=sorted(next(iter(model.encoder.peft_config.values())).target_modules))
    else:
        save_weights(model, folder / "model.safetensors")
    model.encoder.config.save_pretrained(folder / "encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    save_yaml(cfg, folder / CONFIG)
    atomic_write_text(folder / "calibration.json", json.dumps({"temperature": float(temperature)}) + "\n")


def write_prior(run_dir: Path, labels: np.ndarray) -> np.ndarray:
    """prior.json: add-one smoothed class frequencies of the rows the run trained on.
    `labels` are class ids (n,) or target distributions (n, 3): a soft row counts
    with its probabilities."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        counts = labels.astype(np.float64).sum(0)[:3]
    else:
        counts = np.bincount(labels.astype(np.int64), minlength=3)[:3].astype(float)
    prior = (counts + 1.0) / (counts.sum() + 3.0)
    atomic_write_text(RunDir(run_dir).prior, json.dumps({"prior": prior.tolist(), "counts": np.round(counts).astype(int).tolist(),
                                                   "source": f"training rows ({int(round(counts.sum()))})"}, indent=2) + "\n")
    return prior


# --- reading ---------------------------------------------------------------------

def build_pref_model(encoder, cfg: PrefConfig) -> PrefModel:
    return PrefModel(encoder, arch=cfg.arch, pooling=cfg.pooling, head_hidden=cfg.head_hidden,
                     dropout=cfg.head_dropout, style=cfg.style_features, chunks=cfg.length_chunks,
                     head=getattr(cfg, "head", "mlp"))


def load_config(path: str | os.PathLike) -> PrefConfig:
    folder = best_folder(path)
    return from_dict(PrefConfig, load_yaml(folder / CONFIG), source=str(folder / CONFIG))


def init_from_run(model: PrefModel, path: str | os.PathLike, cfg: PrefConfig) -> Path:
    """Fill `model` with another run's best weights (encoder or adapter, and head) for a
    warm start (stage 2 from stage 1). The shapes must agree: a key or shape that does not
    land is a one-line error, never a silently random head."""
    from ..errors import UsageError
    try:
        folder = best_folder(path)
    except FileNotFoundError as e:
        raise UsageError(f"--init-from {e}") from None
    src = load_config(folder)
    for name in ("arch", "pooling", "head_hidden", "style_features", "head"):
        if getattr(src, name) != getattr(cfg, name):
            raise UsageError(f"--init-from {path}: its {name} is {getattr(src, name)!r}, this run's is {getattr(cfg, name)!r}")
    from .modeling import adapters
    adapters.check_warm_start(adapters.read_meta(folder), cfg, model, f"--init-from {path}")
    try:  # a LoRA run's file holds adapters + head only; a full run's file holds everything
        if adapters.is_lora_model(model):
            adapters.load_own_weights(model, folder / "model.safetensors")
        else:
            load_weights(model, folder / "model.safetensors")
    except (RuntimeError, KeyError, ValueError) as e:
        raise UsageError(f"--init-from {path}: weights do not fit this model ({str(e).splitlines()[0][:200]})") from None
    return folder


def load_pref_checkpoint(path: str | os.PathLike, *, load_in_4bit: bool = False, load_in_8bit: bool = False,
                         device: str = "cpu", compute_dtype=None, base_dir: str | os.PathLike | None = None):
    """(model in eval mode, tokenizer, config, temperature). Nothing is downloaded:
    the encoder is rebuilt from its saved config and filled from safetensors. An
    adapter run's base comes from `base_dir` when given (adapters.base_location)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from .modeling import adapters
    folder = best_folder(path)
    cfg = load_config(folder)
    meta = adapters.read_meta(folder)
    if meta and meta.get("lora"):  # base + adapter: the base is rebuilt from its name, the file fills the rest
        quant = {"compute_dtype": compute_dtype} if compute_dtype is not None else {}
        base = adapters.load_base_for(meta, load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit,
                                      device=device, log=None, folder=folder, base_dir=base_dir, **quant)
        model = build_pref_model(base.model, cfg)
        adapters.load_own_weights(model, folder / "model.safetensors")
    else:
        enc_cfg = AutoConfig.from_pretrained(folder / "encoder")
        model = build_pref_model(AutoModel.from_config(enc_cfg), cfg)
        load_weights(model, folder / "model.safetensors")
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    return model.eval(), tokenizer, cfg, read_temperature(folder)


def read_temperature(path: str | os.PathLike) -> float:
    """The checkpoint's fitted temperature (1.0 when it has none)."""
    cal = best_folder(path) / "calibration.json"
    return json.loads(cal.read_text())["temperature"] if cal.exists() else 1.0


def merge_run(run: str | os.PathLike) -> Path:
    """python -m src.train_pref --merge RUN: RUN/merged/ (backbone/, head.safetensors, tokenizer/).
    Here, not in adapters.py, so that adapters never imports this module (no import cycle)."""
    from ..errors import UsageError
    from .modeling import adapters
    folder = best_folder(run)
    if not (adapters.read_meta(folder) or {}).get("lora"):
        raise UsageError(f"--merge {run}: not a LoRA run (its checkpoint already holds the full weights)")
    out = RunDir(run).merged
    if out.exists():  # before loading anything: a merge is minutes of work and GBs of writes
        raise UsageError(f"--merge: {out} exists; choose another --out (or remove it)")
    model, tokenizer, _, _ = load_pref_checkpoint(folder)
    adapters.merge_folder(model, tokenizer, out)
    return out
