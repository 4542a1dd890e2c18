"""The export finds its code from the imports, and works with the README's relative --to."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from src.pref import export as ex

REPO = Path(__file__).resolve().parents[1]


def _write(root: Path, rel: str, text: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


def test_the_scan_follows_function_level_and_relative_imports(tmp_path, monkeypatch):
    """A module imported only inside a function (how load_pref_checkpoint reaches
    backbone -> models.tiny) is found without being listed; so is its package's __init__,
    a `from . import module`, and nothing that no reached file imports."""
    for rel, text in {
        "src/__init__.py": "",
        "src/entry.py": "import os\nfrom .pkg.helper import util\n\ndef run():\n    from .lazy import late\n    return late\n",
        "src/pkg/__init__.py": "",
        "src/pkg/helper.py": "from . import sibling\n\ndef util():\n    pass\n",
        "src/pkg/sibling.py": "import src.deep.leaf as leaf\n",
        "src/deep/__init__.py": "", "src/deep/leaf.py": "",
        "src/lazy.py": "late = 1\n",
        "src/unused.py": "import pandas\n",
    }.items():
        _write(tmp_path, rel, text)
    monkeypatch.setattr(ex, "ENTRY_MODULES", ("src.entry",))
    found = {f.relative_to(tmp_path).as_posix() for f in ex._scan_modules(tmp_path)}
    assert found == {"src/__init__.py", "src/entry.py", "src/pkg/__init__.py", "src/pkg/helper.py",
                     "src/pkg/sibling.py", "src/deep/__init__.py", "src/deep/leaf.py", "src/lazy.py"}


def test_the_real_entry_points_reach_the_lazily_imported_inference_code():
    """No hand-kept list: the two entry points alone reach what the adapter path imports lazily."""
    assert ex.ENTRY_MODULES == ("src.predict", "src.pref.inference.submission")
    found = {f.relative_to(ex.ROOT).as_posix() for f in ex.inference_modules()}
    assert {"src/models/tiny.py", "src/models/names.py", "src/pref/modeling/backbone.py",
            "src/pref/inputs/judge.py", "src/pref/registry.py", "src/pref/modeling/adapters.py"} <= found
    assert not any(f.startswith(("src/engine/loop", "src/tune/", "src/pref/train")) for f in found)  # training stays out


def _readme_export_command() -> str:
    lines = [ln for ln in (REPO / "README.md").read_text().splitlines() if ln.startswith("python -m src.export --run runs/")]
    assert lines, "README lost its export command"
    return lines[0]


@pytest.mark.slow
def test_the_readme_export_command_runs_verbatim_from_another_folder(tiny_run, tmp_path):
    """Before: `--to export/...` (relative) failed the check with "No module named 'src'":
    the check put the relative folder/prefpipe_src on sys.path but ran inside the folder."""
    command = _readme_export_command()
    argv = shlex.split(command)
    for i, a in enumerate(argv):
        if a == "--run":
            shutil.copytree(tiny_run, tmp_path / argv[i + 1])  # the README's run names, here
    to = argv[argv.index("--to") + 1]
    assert not os.path.isabs(to)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(command.replace("python ", f"{shlex.quote(sys.executable)} ", 1), shell=True, cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[export] checked" in out.stdout and (tmp_path / to / ex.MANIFEST).is_file()
    assert (tmp_path / to / ex.SRC_DIR / "src" / "models" / "tiny.py").is_file()
