"""Package trained runs as a self-contained folder to upload as a Kaggle dataset.

    OUTDIR/
      dataset-metadata.json     title, id (USER/slug), licenses: what `kaggle datasets create` reads
      prefpipe_export.json      the models in ensemble order, their weights, provenance, and the task
                                (arena3 | binary: the submission schema the notebook writes and checks)
      models/m0/                model.safetensors, encoder/ (config), tokenizer/, config.yaml,
                                calibration.json, prior.json (class prior for unparseable rows);
                                an adapter (LoRA) run: adapters + head only, and backbone.json
                                whose `base_dir` says where its base model is
      bases/<name>/             an adapter run's base model folder, copied once for all models that
                                share it (not written with --base-dir: a Kaggle model path instead)
      prefpipe_src/src/...      the inference code: the src modules `src.predict` can reach (import scan)
      README.md                 how to upload it and predict with it

The notebook (notebooks/kaggle_inference.ipynb) puts prefpipe_src/ first on
sys.path and calls `src.pref.inference.submission.predict_file`. The export is checked
before it is moved into place: in a fresh interpreter that sees only the copied
code, with accelerate/optuna/peft/trl/matplotlib/pandas made unimportable (the
Kaggle image has torch and transformers; nothing else of ours is needed), the
code imports, every model loads offline and predicts three rows. An adapter
export needs peft (and accelerate, which peft imports): the manifest's `requires`
lists them, the check lets exactly those through, and the notebook says so when
one is missing.
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

from ..engine.rundir import CONFIG, METRICS, PRIOR
from ..files import atomic_dir, atomic_write_text
from ..errors import UsageError
from .modeling.adapters import META, read_meta
from .checkpoint import (CHECKPOINT_DIRS, CHECKPOINT_FILES, OPTIONAL_CHECKPOINT_FILES, expand_runs,
                         load_config, locate)
from .inference.ensemble import run_prior
from .inference.submission import runs_task

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = "prefpipe_export.json"
SRC_DIR = "prefpipe_src"
# what the notebook and the CLI import; everything else is found from their imports
ENTRY_MODULES = ("src.predict", "src.pref.inference.submission")
BLOCKED = ("accelerate", "optuna", "peft", "trl", "matplotlib", "pandas", "sklearn")
REQUIRES = ("torch", "transformers", "safetensors", "tokenizers")  # on the Kaggle image
ADAPTER_REQUIRES = ("peft", "accelerate")  # LoRA runs: peft builds the adapters, and imports accelerate
BASES = "bases"
PATH_FIELDS = ("data", "out")  # config.yaml fields that hold local paths: exported as bare names
USER_PLACEHOLDER = "INSERT_KAGGLE_USERNAME_HERE"


def inference_modules(root: Path = ROOT) -> list[Path]:
    """The src files prediction can reach from ENTRY_MODULES: every import statement of
    every reached file, those inside functions included (load_pref_checkpoint -> adapters
    -> backbone -> models.tiny are lazy imports that importing the entry points would not
    run), read statically (ast) so the list follows the code with nothing kept by hand."""
    key = (str(root), ENTRY_MODULES)
    if key not in _SCANNED:
        _SCANNED[key] = _scan_modules(root)
    return list(_SCANNED[key])


_SCANNED: dict[tuple, list[Path]] = {}


def _module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _imported_names(path: Path, module: str) -> set[str]:
    """Dotted names one file imports (absolute, relative resolved; `from m import x` gives m and m.x)."""
    import ast
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def _scan_modules(root: Path) -> list[Path]:
    root = root.resolve()
    seen: dict[str, Path] = {}
    todo = list(ENTRY_MODULES)
    while todo:
        name = todo.pop()
        if name in seen or not (name == "src" or name.startswith("src.")):
            continue
        f = _module_file(root, name)
        if f is None:  # `from pkg import function`: pkg.function is not a module
            continue
        seen[name] = f
        parent = name.rpartition(".")[0]
        todo.extend([parent] if parent else [])  # importing a.b.c runs a/__init__ and a/b/__init__
        todo.extend(_imported_names(f, name))
    return sorted(seen.values())


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
    """One run's checkpoint (the layout's file list), its prior and metrics; relative names only.
    An adapter run's backbone.json is copied too (the base is placed by `place_base`)."""
    layout = locate(run)
    folder = layout.best
    dest.mkdir(parents=True)
    for name in CHECKPOINT_FILES + OPTIONAL_CHECKPOINT_FILES:
        if (folder / name).exists():
            shutil.copy2(folder / name, dest / name)
    atomic_write_text(dest / CONFIG, portable_config((folder / CONFIG).read_text(encoding="utf-8")))
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


def local_base_folder(name: str, run: Path) -> Path:
    """The folder an adapter run's base loads from here: a local folder, a tiny-* model
    (built in-process), or a hub id already in the local HF cache."""
    from ..models import resolve
    path = resolve(name)
    if os.path.isdir(path):
        return Path(path)
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(path, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), no hub client, a bad id
        raise UsageError(f"{run}: its base model {name!r} is neither a local folder nor in the local Hugging Face "
                         "cache, so it cannot be copied into the export: give --base-dir with the path the notebook "
                         "will find it at (a Kaggle model, e.g. /kaggle/input/gemma-2/transformers/gemma-2-9b-it/2)"
                         ) from None


def place_base(run: Path, model_dir: Path, root: Path, copied: dict[str, str], base_dir: str | None,
               log) -> dict | None:
    """For an adapter run: copy its base into root/bases/<name>/ once per distinct base
    (or, with `base_dir`, only name that path), and point the exported backbone.json's
    `base_dir` at it. None for a run with full weights."""
    meta = read_meta(model_dir)
    if not meta or not meta.get("lora"):
        return None
    name = str(meta["base"])
    if base_dir is None:
        src = local_base_folder(name, run).resolve()
        if str(src) not in copied:
            slug = slugify(Path(name).name)
            while slug in copied.values():
                slug += "-b"
            shutil.copytree(src, root / BASES / slug, ignore=shutil.ignore_patterns("*.partial", "__pycache__", ".cache"))
            size = sum(f.stat().st_size for f in (root / BASES / slug).rglob("*") if f.is_file())
            log(f"[export] base {name} -> {BASES}/{slug} ({size / 2**20:.1f} MiB)")
            copied[str(src)] = slug
        where = f"../../{BASES}/{copied[str(src)]}"  # relative to models/m<k>/
    else:
        where = base_dir
    if os.path.isabs(name) or os.path.isdir(name):
        meta["base"] = Path(name).name  # provenance only: never a local path in the export
    meta["base_dir"] = where
    atomic_write_text(model_dir / META, json.dumps(meta, indent=2) + "\n")
    return {"name": meta["base"], "dir": where, "copied": base_dir is None}


def copy_source(dest: Path, root: Path = ROOT) -> list[str]:
    copied = []
    for f in inference_modules(root):
        rel = f.relative_to(root)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest / rel)
        copied.append(rel.as_posix())
    return copied


VERIFY_ROWS = [  # id, prompt, response_a, response_b: the check predicts these with every model
    ("1", '["What is 2+2?"]', '["4"]', '["Four, because 2+2=4."]'),
    ("2", '["Name a colour.", "Another?"]', '["Red.", "Blue."]', '["Green", "Teal"]'),
    ("3", '["Say hi"]', '["hi"]', '[""]'),
]


def verify_export(folder: Path, *, load_models: bool = True, base_dirs: dict[str, str] | None = None,
                  timeout: int = 600) -> dict:
    """Import the copied code (only it), load every model and predict VERIFY_ROWS with the
    ensemble, in a fresh interpreter without PYTHONPATH, cwd or user site (`python -I`),
    with the packages in BLOCKED unimportable except those the manifest `requires` (peft
    for adapter runs). `base_dirs` (model path -> local folder) stands in for a base the
    export names by a path that exists only on Kaggle. Raises RuntimeError with the child's error."""
    folder = Path(folder).resolve()  # the child runs inside it: a relative path would point elsewhere
    manifest = json.loads((folder / MANIFEST).read_text())
    blocked = tuple(b for b in BLOCKED if b not in manifest.get("requires", ()))
    models = [m["path"] for m in manifest["models"]] if load_models else []
    code = f"""
import csv, json, os, sys, tempfile
for name in {blocked!r}:
    sys.modules[name] = None  # "not installed": import raises, importlib.util.find_spec says None
sys.path.insert(0, {str(folder / SRC_DIR)!r})
import src
assert src.__file__.startswith({str(folder / SRC_DIR)!r}), src.__file__
{chr(10).join(f"import {m}" for m in ENTRY_MODULES)}
from src.pref.checkpoint import load_pref_checkpoint
from src.pref.inference.submission import check_submission, predict_file
folder, overrides = {str(folder)!r}, {dict(base_dirs or {})!r}
loaded = []
for rel in {models!r}:
    path = os.path.join(folder, rel)
    model, tok, cfg, t = load_pref_checkpoint(path, base_dir=overrides.get(rel))
    loaded.append({{"path": rel, "model": cfg.model, "arch": cfg.arch, "temperature": t}})
if loaded and not overrides:  # the whole inference path, lazily imported modules included
    with tempfile.TemporaryDirectory() as tmp:
        test, out = os.path.join(tmp, "test.csv"), os.path.join(tmp, "sub.csv")
        with open(test, "w", newline="") as f:
            csv.writer(f).writerows([("id", "prompt", "response_a", "response_b"), *{VERIFY_ROWS!r}])
        predict_file([os.path.join(folder, r) for r in {models!r}], test, out, device="cpu", log=None)
        problems = check_submission(out, test, task={manifest.get("task", "arena3")!r})  # the schema it wrote
        assert not problems, problems
print(json.dumps({{"src": src.__file__, "loaded": loaded, "blocked": {list(blocked)!r}}}))
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
Task: {task} (submission `id,winner_model_a,winner_model_b,winner_tie` for arena3, `id,winner` for binary).

Upload (subfolders need --dir-mode):

    kaggle datasets create -p {folder} --dir-mode zip      # first time
    kaggle datasets version -p {folder} --dir-mode zip -m "new weights"

In a Kaggle notebook with this dataset attached (Internet off), run
notebooks/kaggle_inference.ipynb, or:

    import sys; sys.path.insert(0, "/kaggle/input/<slug>/{src}")
    from src.pref.inference.submission import predict_file
    predict_file(["/kaggle/input/<slug>/models/m0"], "/kaggle/input/lmsys-chatbot-arena/test.csv",
                 "/kaggle/working/submission.csv")

Python packages it needs: {requires}.{bases}
"""


def export_runs(runs: Sequence[str | os.PathLike], out: str | os.PathLike, *, weights: Sequence[float] | None = None,
                kaggle_user: str | None = None, title: str | None = None, slug: str | None = None,
                license_name: str = "other", force: bool = False, verify: bool = True,
                base_dir: str | None = None, log=print) -> dict:
    """Write the export folder atomically (a temp folder renamed into place); returns the manifest.
    `base_dir`: for adapter runs, the path the notebook loads the base from (a Kaggle
    model) instead of a copy of the base in bases/."""
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
    if base_dir is not None:
        names = {str(m["base"]) for m in (read_meta(locate(r).best) for r in run_dirs) if m and m.get("lora")}
        if not names:
            raise UsageError("--base-dir is for adapter (LoRA) runs; these runs hold full weights")
        if len(names) > 1:
            raise UsageError(f"--base-dir names one base model; these runs use {len(names)}: {', '.join(sorted(names))}")
    task = runs_task(run_dirs)  # the submission schema the notebook writes and checks (arena3 | binary)
    created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with atomic_dir(out) as tmp:
        models, copied, stand_ins = [], {}, {}
        for k, run in enumerate(run_dirs):
            rel = f"models/m{k}"
            info = copy_model(run, tmp / rel)
            base = place_base(run, tmp / rel, tmp, copied, base_dir, log)
            if base is not None:
                info["base"] = base
                if base_dir is not None and not Path(base_dir).is_dir():  # a Kaggle path: check with the local base
                    stand_ins[rel] = str(local_base_folder(str(read_meta(locate(run).best)["base"]), run))
            models.append({"path": rel, "weight": 1.0 if weights is None else float(weights[k]), **info})
            log(f"[export] {run} -> {rel}" + (f" (adapter; base {base['dir']})" if base else ""))
        files = copy_source(tmp / SRC_DIR)
        requires = list(REQUIRES) + (list(ADAPTER_REQUIRES) if any("base" in m for m in models) else [])
        manifest = {"format": 1, "created": created, "git_commit": _git_commit(ROOT), "models": models,
                    "task": task, "tta": True, "src": SRC_DIR, "src_files": files, "requires": requires}
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        meta = dataset_metadata(title, user=kaggle_user, slug=slug, license_name=license_name)
        atomic_write_text(tmp / "dataset-metadata.json", json.dumps(meta, indent=2) + "\n")
        bases = sorted({m["base"]["dir"] for m in models if "base" in m})
        atomic_write_text(tmp / "README.md", EXPORT_README.format(
            title=title, created=created, task=task, weights=[m["weight"] for m in models],
            models=", ".join(m["path"] for m in models), folder=out.name, src=SRC_DIR,
            requires=", ".join(requires),
            bases=("" if not bases else "\nAdapter runs: base model loaded from " + ", ".join(bases)
                   + " (backbone.json `base_dir`, relative to the model folder)"
                   + ("; attach that model to the notebook." if base_dir else "."))))
        if verify:
            checked = verify_export(tmp, base_dirs=stand_ins)
            log(f"[export] checked: the copied code imports without {', '.join(checked['blocked'])} and "
                f"{len(checked['loaded'])} model(s) load offline"
                + (f" (base from a local stand-in for {base_dir})" if stand_ins else " and predict"))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"[export] wrote {out} ({size / 2**20:.1f} MiB, {len(files)} source files), dataset id {meta['id']}, "
        f"needs {', '.join(requires)}"
        + ("  <- set --kaggle-user or KAGGLE_USERNAME" if meta["id"].startswith(USER_PLACEHOLDER) else ""))
    log(f"[export] upload: kaggle datasets create -p {out} --dir-mode zip")
    return {**manifest, "dataset": meta, "out": str(out), "bytes": size}
