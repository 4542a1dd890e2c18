"""Fold averaging (`predict --average-folds OUT --run RUN_CV`): K fold runs -> one model.

One averaged model costs one model's inference instead of K (WSDM Cup 2025's 4th place
averaged its fold LoRAs, then quantised the merged model). The fold runs must share
their architecture and start point (the same base, one config apart from the fold):
weights of independently started runs do not average into a working model.

What is averaged: every floating-point tensor of each fold's checkpoint file,
elementwise, in fp64 (identical folds then average to themselves exactly), stored
back in its own dtype. For a full-weight run that is the
encoder and the head. For a LoRA run the file holds the adapters and the head, so the
A and B matrices are averaged SEPARATELY (as the 4th place did), which is not the
average of the merged deltas: mean(B) @ mean(A) != mean(B @ A). Non-float tensors
(integer buffers) must be equal across folds.

The averaged run's temperature is the mean of the folds' temperatures (each was
fitted on its own fold's selection slice; the averaged model has no rows of its own
to fit one on: every training row was seen by K-1 of the folds) and its prior the
mean of their priors. Its scores on the folds' OOF rows are therefore NOT out-of-fold:
each row was trained on by K-1 of the K averaged models.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...engine.rundir import RunDir
from ...files import atomic_write_text
from ...errors import UsageError

# config fields a fold may differ in; anything else differing means the runs do not average
FOLD_FIELDS = {"fold", "out", "seed", "init_from", "teacher"}


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]], names: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Elementwise mean of float tensors (in fp64, cast back); other tensors must be equal."""
    if not states:
        raise UsageError("no runs to average")
    names = list(names) or [f"run {i + 1}" for i in range(len(states))]
    keys = set(states[0])
    for s, n in zip(states[1:], names[1:]):
        if set(s) != keys:
            diff = sorted(keys ^ set(s))[:3]
            raise UsageError(f"{n}: its weights have other tensors than {names[0]} ({', '.join(diff)} ...): "
                             "only runs of one architecture average")
    out = {}
    for k in sorted(keys):
        ts = [s[k] for s in states]
        if any(t.shape != ts[0].shape for t in ts):
            raise UsageError(f"tensor {k} has shapes {[tuple(t.shape) for t in ts]} across {', '.join(names)}")
        if ts[0].is_floating_point():
            # fp64: K copies of x sum to K*x and divide back to x exactly
            out[k] = torch.stack([t.double() for t in ts]).mean(0).to(ts[0].dtype)
        else:
            if any(not torch.equal(t, ts[0]) for t in ts[1:]):
                raise UsageError(f"integer tensor {k} differs across {', '.join(names)}: cannot average it")
            out[k] = ts[0].clone()
    return out


def _check_configs(folders: Sequence[Path]) -> None:
    from ...config import load_yaml
    cfgs = [load_yaml(RunDir(f).config) for f in folders]

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out
    ref = flat(cfgs[0])
    for f, c in zip(folders[1:], cfgs[1:]):
        c = flat(c)
        diff = [k for k in sorted(set(ref) | set(c)) if k.split(".")[-1] not in FOLD_FIELDS
                and k.split(".")[-1] not in {"data"} and ref.get(k) != c.get(k)]
        if diff:
            raise UsageError(f"{f}: config differs from {folders[0]} in {', '.join(diff[:5])}: "
                             "fold averaging needs runs of one configuration (folds of one --folds K run)")


def average_runs(runs: Sequence[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Write OUT as a run dir (checkpoint/best, prior.json, metrics.json) holding the average
    of `runs` (run dirs or a K-fold run dir); returns what metrics.json says."""
    from safetensors.torch import load_file, save_file
    from ..checkpoint import BEST, PRIOR, expand_runs, locate
    from ..inference.ensemble import run_prior
    run_dirs = expand_runs(runs)
    if len(run_dirs) < 2:
        raise UsageError(f"--average-folds needs two or more runs, got {len(run_dirs)} ({', '.join(map(str, runs))})")
    folders = [locate(r).best for r in run_dirs]
    _check_configs(folders)
    out = Path(out)
    if out.exists():
        raise UsageError(f"{out} exists: --average-folds writes a new run dir")
    from safetensors import safe_open
    with safe_open(str(folders[0] / "model.safetensors"), framework="pt") as f:
        metadata = f.metadata() or {}
    avg = average_state_dicts([load_file(str(f / "model.safetensors")) for f in folders], [str(r) for r in run_dirs])
    temps = [json.loads((f / "calibration.json").read_text())["temperature"] if (f / "calibration.json").exists()
             else 1.0 for f in folders]
    priors = [run_prior(r)[0] for r in run_dirs]
    tmp = out.with_name(out.name + ".partial")  # nothing half-written under OUT's own name
    shutil.rmtree(tmp, ignore_errors=True)
    best = tmp / BEST
    shutil.copytree(folders[0], best, ignore=shutil.ignore_patterns("model.safetensors", "calibration.json"))
    save_file(avg, str(best / "model.safetensors"), metadata=metadata)
    atomic_write_text(best / "calibration.json", json.dumps({"temperature": float(np.mean(temps))}) + "\n")
    prior = np.mean(priors, axis=0)
    atomic_write_text(tmp / PRIOR, json.dumps({"prior": (prior / prior.sum()).tolist(),
                                              "source": f"mean of {len(run_dirs)} fold priors"}, indent=2) + "\n")
    summary = {"averaged_from": [str(r) for r in run_dirs], "fold_temperatures": temps,
               "temperature": float(np.mean(temps)),
               "method": "elementwise mean of every float tensor of the checkpoint files (LoRA: A and B "
                         "averaged separately, not the merged deltas)",
               "note": "every OOF row of these folds was trained on by K-1 of the averaged models"}
    atomic_write_text(RunDir(tmp).metrics, json.dumps(summary, indent=2) + "\n")
    tmp.rename(out)
    return summary
