"""Package trained runs as a self-contained folder to upload as a Kaggle dataset.

    OUTDIR/
      dataset-metadata.json     title, id (USER/slug), licenses: what `kaggle datasets create` reads
      prefpipe_export.json      the models in ensemble order, their weights, provenance
      models/m0/                model.safetensors, encoder/ (config), tokenizer/, config.yaml,
                                calibration.json, prior.json (class prior for unparseable rows)
      prefpipe_src/src/...      the inference code: exactly the src modules `src.predict` imports
      README.md                 how to upload it and predict with it

The notebook (notebooks/kaggle_inference.ipynb) puts prefpipe_src/ first on
sys.path and calls `src.pref.submission.predict_file`. The export is checked
before it is moved into place: in a fresh interpreter that sees only the copied
code, with accelerate/optuna/peft/trl/matplotlib/pandas made unimportable (the
Kaggle image has torch and transformers; nothing else of ours is needed), the
code imports and every model loads offline.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from ..config import atomic_write_text
from ..engine.checkpoint import atomic_dir
from .checkpoint import CHECKPOINT_DIRS, CHECKPOINT_FILES, METRICS, PRIOR, expand_runs, load_config, locate
from .ensemble import run_prior

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = "prefpipe_export.json"
SRC_DIR = "prefpipe_src"
# what the notebook and the CLI import; src.pref.adapters is imported lazily by load_pref_checkpoint,
# so the import scan below would not see it
ENTRY_MODULES = ("src.predict", "src.pref.submission", "src.pref.adapters")
BLOCKED = ("accelerate", "optuna", "peft", "trl", "matplotlib", "pandas", "sklearn")
PATH_FIELDS = ("data", "out")  # config.yaml fields that hold local paths: exported as bare names
USER_PLACEHOLDER = "INSERT_KAGGLE_USERNAME_HERE"


def inference_modules(root: Path = ROOT) -> list[Path]:
    """The src files `src.predict` and `src.pref.submission` import, found by
    importing them in a fresh interpreter (so the list follows the code)."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); "
            + "; ".join(f"import {m}" for m in ENTRY_MODULES)
            + "; print(json.dumps(sorted(m.__file__ for n, m in list(sys.modules.items()) "
              "if (n == 'src' or n.startswith('src.')) and getattr(m, '__file__', None))))")
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"could not import the inference code: {out.stderr.strip()[-2000:]}")
    files = [Path(p).resolve() for p in json.loads(out.stdout.strip().splitlines()[-1])]
    src = (root / "src").resolve()
    return sorted(f for f in files if src in f.parents)


def slugify(text: str, max_len: int = 50) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    s = s[:max_len].strip("-")
    return s if len(s) >= 3 else (s + "-model").strip("-")


def default_title(run_dirs: Sequence[Path], model_name: str) -> str:
    base = f"prefpipe {Path(model_name).name} " + (run_dirs[0].name if len(run_dirs) == 1 else f"{len(run_dirs)} runs")
    title = base[:50].strip()
    return title if len(title) >= 6 else f"prefpipe {title}"


def dataset_metadata(title: str, *, user: str | None, slug: str | None, license_name: str) -> dict:
    user = user or os.environ.get("KAGGLE_USERNAME") or USER_PLACEHOLDER
    return {"title": title, "id": f"{user}/{slug or slugify(title)}", "licenses": [{"name": license_name}]}


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _relative_name(path: Path, base: Path | None) -> str:
    """`path` relative to `base` when inside it, else its last part: never an absolute local path."""
    if base is not None:
        try:
            return path.resolve().relative_to(base.resolve()).as_posix() or "."
        except ValueError:
            pass
    return path.name


def portable_config(text: str) -> str:
    """A checkpoint's config.yaml with local paths (data, out) cut to their file names."""
    import yaml
    cfg = load_yaml_text(text)
    for key in PATH_FIELDS:
        if cfg.get(key):
            cfg[key] = Path(str(cfg[key])).name
    return yaml.safe_dump(cfg, sort_keys=False)


def load_yaml_text(text: str) -> dict:
    import yaml
    data = yaml.safe_load(text) or {}
    return data if isinstance(data, dict) else {}


def copy_model(run: Path, dest: Path) -> dict:
    """One run's checkpoint (the layout's file list), its prior and metrics; relative names only."""
    layout = locate(run)
    folder = layout.best
    dest.mkdir(parents=True)
    for name in CHECKPOINT_FILES:
        if (folder / name).exists():
            shutil.copy2(folder / name, dest / name)
    atomic_write_text(dest / "config.yaml", portable_config((folder / "config.yaml").read_text(encoding="utf-8")))
    for name in CHECKPOINT_DIRS:
        shutil.copytree(folder / name, dest / name)
    prior, source = run_prior(run)
    atomic_write_text(dest / PRIOR, json.dumps({"prior": prior.tolist(), "source": source}, indent=2) + "\n")
    root = layout.root or folder
    info = {"source_run": root.name, "checkpoint": _relative_name(folder, layout.root)}
    metrics_file = layout.find(METRICS)
    if metrics_file is not None:
        shutil.copy2(metrics_file, dest / METRICS)
        info["val_log_loss"] = json.loads(metrics_file.read_text()).get("val_log_loss")
    return info


def copy_source(dest: Path, root: Path = ROOT) -> list[str]:
    copied = []
    for f in inference_modules(root):
        rel = f.relative_to(root)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest / rel)
        copied.append(rel.as_posix())
    return copied


def verify_export(folder: Path, *, load_models: bool = True, timeout: int = 600) -> dict:
    """Import the copied code (only it) and load every model, in a fresh
    interpreter without PYTHONPATH, cwd or user site (`python -I`), with the
    packages in BLOCKED unimportable. Raises RuntimeError with the child's error."""
    manifest = json.loads((folder / MANIFEST).read_text())
    models = [str(folder / m["path"]) for m in manifest["models"]] if load_models else []
    code = f"""
import json, sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # "not installed": import raises, importlib.util.find_spec says None
sys.path.insert(0, {str(folder / SRC_DIR)!r})
import src
assert src.__file__.startswith({str(folder / SRC_DIR)!r}), src.__file__
{chr(10).join(f"import {m}" for m in ENTRY_MODULES)}
from src.pref.checkpoint import load_pref_checkpoint
loaded = []
for path in {models!r}:
    model, tok, cfg, t = load_pref_checkpoint(path)
    loaded.append({{"path": path, "model": cfg.model, "arch": cfg.arch, "temperature": t}})
print(json.dumps({{"src": src.__file__, "loaded": loaded}}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    out = subprocess.run([sys.executable, "-I", "-B", "-c", code], capture_output=True, text=True, env=env,
                         cwd=str(folder), timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"export check failed in {folder}: {out.stderr.strip()[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


EXPORT_README = """# {title}

Exported by prefpipe (`python -m src.export`) on {created}.
Models (ensemble order, weights {weights}): {models}.

Upload (subfolders need --dir-mode):

    kaggle datasets create -p {folder} --dir-mode zip      # first time
    kaggle datasets version -p {folder} --dir-mode zip -m "new weights"

In a Kaggle notebook with this dataset attached (Internet off), run
notebooks/kaggle_inference.ipynb, or:

    import sys; sys.path.insert(0, "/kaggle/input/<slug>/{src}")
    from src.pref.submission import predict_file
    predict_file(["/kaggle/input/<slug>/models/m0"], "/kaggle/input/lmsys-chatbot-arena/test.csv",
                 "/kaggle/working/submission.csv")
"""


def export_runs(runs: Sequence[str | os.PathLike], out: str | os.PathLike, *, weights: Sequence[float] | None = None,
                kaggle_user: str | None = None, title: str | None = None, slug: str | None = None,
                license_name: str = "other", force: bool = False, verify: bool = True,
                log=print) -> dict:
    """Write the export folder atomically (a temp folder renamed into place); returns the manifest."""
    log = log or (lambda s: None)
    out = Path(out)
    run_dirs = expand_runs(runs)
    if weights is not None and len(weights) != len(run_dirs):
        raise ValueError(f"{len(weights)} weights for {len(run_dirs)} runs")
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and is not empty (use --force to replace it)")
    first_cfg = load_config(run_dirs[0])
    title = title or default_title(run_dirs, first_cfg.model)
    if not 6 <= len(title) <= 50:
        raise ValueError(f"Kaggle dataset titles have 6 to 50 characters, got {len(title)}: {title!r}")
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with atomic_dir(out) as tmp:
        models = []
        for k, run in enumerate(run_dirs):
            info = copy_model(run, tmp / "models" / f"m{k}")
            models.append({"path": f"models/m{k}", "weight": 1.0 if weights is None else float(weights[k]), **info})
            log(f"[export] {run} -> models/m{k}")
        files = copy_source(tmp / SRC_DIR)
        manifest = {"format": 1, "created": created, "git_commit": _git_commit(ROOT), "models": models,
                    "tta": True, "src": SRC_DIR, "src_files": files}
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        meta = dataset_metadata(title, user=kaggle_user, slug=slug, license_name=license_name)
        atomic_write_text(tmp / "dataset-metadata.json", json.dumps(meta, indent=2) + "\n")
        atomic_write_text(tmp / "README.md", EXPORT_README.format(
            title=title, created=created, weights=[m["weight"] for m in models],
            models=", ".join(m["path"] for m in models), folder=out.name, src=SRC_DIR))
        if verify:
            checked = verify_export(tmp)
            log(f"[export] checked: the copied code imports without {', '.join(BLOCKED)} and "
                f"{len(checked['loaded'])} model(s) load offline")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"[export] wrote {out} ({size / 2**20:.1f} MiB, {len(files)} source files), dataset id {meta['id']}"
        + ("  <- set --kaggle-user or KAGGLE_USERNAME" if meta["id"].startswith(USER_PLACEHOLDER) else ""))
    log(f"[export] upload: kaggle datasets create -p {out} --dir-mode zip")
    return {**manifest, "dataset": meta, "out": str(out), "bytes": size}
