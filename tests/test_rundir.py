"""Run-dir states (refuse, resume, interrupt, fail cleanly), lighter finished runs, and the
one owner of run-dir file names and of atomic writes."""
from __future__ import annotations

import ast
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml

from src.engine import rundir as rd_mod
from src.engine.checkpoint import load_resume_state
from src.engine.loop import make_accelerator, train
from src.engine.rundir import RunDir
from src.errors import TrainingInterrupted, UsageError, run_cli
from tests.test_engine import ToyTask, _cfg

SRC = Path(__file__).resolve().parents[1] / "src"


# --- one owner ----------------------------------------------------------------------------

def _string_constants(tree: ast.AST):
    """String literals that are not docstrings (a docstring may describe the layout)."""
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node


def test_run_dir_file_names_are_spelled_only_in_rundir():
    files = set(rd_mod.RUN_FILES) | {rd_mod.RESUME_STATE, "checkpoint/best", "checkpoint/last"}
    folders = {rd_mod.CHECKPOINT, rd_mod.PLOTS}  # common words: flagged only where joined as a path
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path == Path(rd_mod.__file__).resolve():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        joined = {id(n.right) for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)}
        for node in _string_constants(tree):
            if node.value in files or (node.value in folders and id(node) in joined):
                found.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: {node.value!r}")
    assert found == [], "run-dir file names belong to src/engine/rundir.py:\n" + "\n".join(found)


def _imports(path: Path, module: str) -> set[str]:
    """Every src.* module `path` imports, at the top or inside a function."""
    out = set()
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("src"):
                out.add(target)
                out.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("src"))
    return out


def test_checkpoint_and_adapters_do_not_import_each_other():
    mods = {"src.pref.checkpoint": SRC / "pref" / "checkpoint.py",
            "src.pref.modeling.adapters": SRC / "pref" / "modeling" / "adapters.py"}
    imports = {m: _imports(p, m) for m, p in mods.items()}
    assert "src.pref.modeling.adapters" in imports["src.pref.checkpoint"]  # the one direction that stays
    assert not any(i.startswith("src.pref.checkpoint") for i in imports["src.pref.modeling.adapters"])


def test_no_import_cycle_in_src():
    """Imports inside functions count too: a lazy import hides a cycle, it does not remove it."""
    mods = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        mods[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    graph = {m: {i for i in _imports(p, m) if i in mods and i != m} for m, p in mods.items()}
    # strongly connected components (Tarjan): every one with more than one module is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        for n in graph[m]:
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            comp = []
            while not comp or comp[-1] != m:
                comp.append(stack.pop())
            if len(comp) > 1:
                cycles.append(sorted(comp))
    for m in sorted(graph):
        if m not in index:
            visit(m)
    assert cycles == []


def test_files_module_imports_no_stage():
    imports = _imports(SRC / "files.py", "src.files")
    assert {i for i in imports if i.startswith(("src.pref", "src.gen", "src.tune", "src.data", "src.config"))} == set()


# --- invocation knobs are not part of the run ----------------------------------------------

def test_stop_after_steps_and_skip_batches_are_not_saved_in_config_yaml(tmp_path):
    from src.config import from_dict, load_yaml, save_yaml
    from src.pref.config import PrefConfig
    cfg = from_dict(PrefConfig, {"stop_after_steps": 3, "skip_batches": 2, "lr": 1e-4})
    save_yaml(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "stop_after_steps" not in text and "skip_batches" not in text
    back = from_dict(PrefConfig, load_yaml(tmp_path / "config.yaml"))
    assert back.stop_after_steps == 0 and back.skip_batches == 0 and back.lr == pytest.approx(1e-4)


# --- lighter finished runs -----------------------------------------------------------------

@pytest.mark.parametrize("keep_last", [False, True])
def test_a_finished_run_drops_last_optimizer_state_unless_keep_last(tmp_path, keep_last):
    cfg = _cfg(epochs=1, keep_last=keep_last)
    acc, _ = make_accelerator(cfg)
    assert train(cfg, ToyTask(), torch.nn.Linear(4, 1), tmp_path, acc).done
    state = load_resume_state(RunDir(tmp_path).last)
    assert bool(state["optimizer"]) is keep_last
    assert state["progress"]["done"]


def test_an_unfinished_run_keeps_optimizer_state_and_resumes_to_the_uninterrupted_result(tmp_path):
    cfg = _cfg(epochs=2)
    acc, _ = make_accelerator(cfg)
    torch.manual_seed(0)
    full = torch.nn.Linear(4, 1)
    train(cfg, ToyTask(), full, tmp_path / "full", acc)
    torch.manual_seed(0)
    assert not train(_cfg(epochs=2, stop_after_steps=5), ToyTask(), torch.nn.Linear(4, 1), tmp_path / "p", acc).done
    assert load_resume_state(RunDir(tmp_path / "p").last)["optimizer"]  # a resume needs it
    resumed = torch.nn.Linear(4, 1)
    train(cfg, ToyTask(), resumed, tmp_path / "p", acc, resume=True)
    torch.testing.assert_close(resumed.weight, full.weight)


# --- Ctrl-C / SIGTERM ------------------------------------------------------------------------

class SignalAt(ToyTask):
    """Sends itself `signals` (one per loss call) from the loss of optimizer step `at` on."""

    def __init__(self, at: int, signals=(signal.SIGINT,)):
        super().__init__()
        self.at, self.signals, self.calls = at, list(signals), 0

    def loss(self, model, batch):
        self.calls += 1
        if self.calls >= self.at and self.signals:
            os.kill(os.getpid(), self.signals.pop(0))
        return super().loss(model, batch)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_last_at_the_step_boundary_and_resume_finishes_the_same_run(tmp_path, sig):
    cfg = _cfg(epochs=2, eval_every=0)  # no eval inside the epoch: only the interrupt saves mid-epoch
    acc, _ = make_accelerator(cfg)
    torch.manual_seed(0)
    full = torch.nn.Linear(4, 1)
    train(cfg, ToyTask(), full, tmp_path / "full", acc)
    torch.manual_seed(0)
    with pytest.raises(TrainingInterrupted, match=f"{sig.name}.*step 3.*checkpoint saved") as e:
        train(cfg, SignalAt(3, [sig]), torch.nn.Linear(4, 1), tmp_path / "cut", acc)
    assert e.value.step == 3
    assert load_resume_state(RunDir(tmp_path / "cut").last)["progress"]["step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers put back
    resumed = torch.nn.Linear(4, 1)
    train(cfg, ToyTask(), resumed, tmp_path / "cut", acc, resume=True)
    torch.testing.assert_close(resumed.weight, full.weight)


def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path):
    cfg = _cfg(epochs=2, eval_every=0, grad_accum=2)  # two loss calls per step: both signals in step 1
    acc, _ = make_accelerator(cfg)
    with pytest.raises(KeyboardInterrupt) as e:
        train(cfg, SignalAt(1, [signal.SIGINT, signal.SIGINT]), torch.nn.Linear(4, 1), tmp_path, acc)
    assert not isinstance(e.value, TrainingInterrupted)
    assert not RunDir(tmp_path).last.exists()


def test_cli_prints_one_line_and_exits_130_on_a_saved_interrupt(capsys):
    def body():
        raise TrainingInterrupted("interrupted (SIGINT) at step 3: checkpoint saved in R/checkpoint/last; "
                                  "continue with: python -m src.train_pref --config R/config.yaml --resume", 3)
    assert run_cli(body) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0]


# --- RunDir.start ----------------------------------------------------------------------------

def test_resume_without_a_checkpoint_is_refused_and_creates_nothing(tmp_path):
    with pytest.raises(UsageError, match="nothing to resume"):
        with RunDir(tmp_path / "r").start(resume=True):
            pass
    assert not (tmp_path / "r").exists()


def test_a_folder_holding_a_run_is_refused_unless_overwrite(tmp_path):
    run = RunDir(tmp_path / "r")
    run.root.mkdir()
    run.config.write_text("model: x\n")
    (run.root / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="already holds a run.*--overwrite"):
        with run.start(resume=False):
            pass
    assert run.config.read_text() == "model: x\n"
    with run.start(resume=False, overwrite=True):
        assert not run.config.exists()  # the old run's files are gone...
    assert (run.root / "notes.txt").read_text() == "mine"  # ...and nothing else was touched


def test_a_failed_start_leaves_the_folder_as_it_found_it(tmp_path):
    run = RunDir(tmp_path / "new")
    with pytest.raises(UsageError):
        with run.start(resume=False):
            run.root.mkdir()
            run.data_report.write_text("{}")
            raise UsageError("data: only 0 usable labelled rows")
    assert not run.root.exists()
    other = RunDir(tmp_path / "existing")
    other.root.mkdir()
    (other.root / "keep.txt").write_text("x")
    with pytest.raises(UsageError):
        with other.start(resume=False):
            other.data_report.write_text("{}")
            raise UsageError("bad")
    assert sorted(p.name for p in other.root.iterdir()) == ["keep.txt"]


def test_a_failure_after_training_began_keeps_the_folder(tmp_path):
    run = RunDir(tmp_path / "r")
    with pytest.raises(RuntimeError):
        with run.start(resume=False) as started:
            run.root.mkdir()
            run.config.write_text("x")
            started.begun()
            raise RuntimeError("crash mid-training")
    assert run.config.exists()


def test_only_the_main_process_of_a_launched_job_checks_and_cleans_up(tmp_path, monkeypatch):
    """Under torchrun every rank runs the same command: rank 0 alone refuses or undoes, so another
    rank neither refuses because rank 0 already wrote config.yaml nor deletes rank 0's folder."""
    run = RunDir(tmp_path / "r")
    run.root.mkdir()
    run.config.write_text("written by rank 0")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(RuntimeError):
        with run.start(resume=False):
            raise RuntimeError("rank 1 failed before training")
    assert run.config.read_text() == "written by rank 0"
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UsageError, match="already holds a run"):
        with run.start(resume=False):
            pass


# --- the CLIs --------------------------------------------------------------------------------

@pytest.fixture
def pref_cli(monkeypatch):
    from src import train_pref
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return train_pref.main


def test_train_pref_resume_on_a_run_dir_without_checkpoint_is_exit_2(tmp_path, pref_cli, capsys):
    assert pref_cli(["--out", str(tmp_path / "none"), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to resume" in err[0]
    assert not (tmp_path / "none").exists()


def test_train_pref_into_a_folder_holding_a_run_is_exit_2(tmp_path, pref_cli, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"model": "tiny-llama", "lora": True}))
    assert pref_cli(["--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run" in err[0] and "--overwrite" in err[0]
    assert yaml.safe_load((run / "config.yaml").read_text()) == {"model": "tiny-llama", "lora": True}


@pytest.mark.parametrize("case", ["missing_path", "empty_file", "missing_column", "too_few_rows"])
def test_train_pref_bad_data_is_exit_2_and_leaves_no_run_dir(tmp_path, pref_cli, capsys, case):
    from src.data.synthetic import make_rows
    data = tmp_path / "train.csv"
    if case == "empty_file":
        data.write_text("")
    elif case == "missing_column":
        make_rows(20, seed=0).drop(columns=["response_b"]).to_csv(data, index=False)
    elif case == "too_few_rows":
        make_rows(5, seed=0).to_csv(data, index=False)
    out = tmp_path / "run"
    assert pref_cli(["--data", str(data), "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()


def test_train_gen_resume_without_checkpoint_and_existing_run_are_exit_2(tmp_path, capsys):
    from src import train_gen
    assert train_gen.main(["--model", "tiny", "--out", str(tmp_path / "g"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()
    run = tmp_path / "held"
    run.mkdir()
    (run / "metrics.json").write_text("{}")
    assert train_gen.main(["--model", "tiny", "--out", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "metrics.json").read_text() == "{}"


def test_train_gen_bad_data_leaves_no_run_dir(tmp_path, capsys):
    from src import train_gen
    out = tmp_path / "g"
    assert train_gen.main(["--model", "tiny", "--data", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()


# --- the merge refuses an existing output before any work ------------------------------------

def test_merge_run_refuses_an_existing_output_before_loading_or_writing(tmp_path, monkeypatch):
    from src.pref import checkpoint as pck
    run = RunDir(tmp_path / "lora-run")
    run.best.mkdir(parents=True)
    (run.best / "model.safetensors").write_bytes(b"")
    (run.best / "config.yaml").write_text("model: tiny-qwen2\n")
    (run.best / "backbone.json").write_text('{"lora": {"r": 2}}')
    run.merged.mkdir()
    (run.merged / "mine.txt").write_text("keep")

    def must_not_load(*a, **k):
        raise AssertionError("the checkpoint was loaded before the output was checked")
    monkeypatch.setattr(pck, "load_pref_checkpoint", must_not_load)
    with pytest.raises(UsageError, match="merged exists"):
        pck.merge_run(run.root)
    assert sorted(p.name for p in run.root.iterdir()) == ["checkpoint", "merged"]
    assert [p.name for p in run.merged.iterdir()] == ["mine.txt"]


def test_merge_folder_refuses_an_existing_output_before_merging_or_writing(tmp_path):
    from src.pref.modeling import adapters

    class Untouchable:
        encoder = None

        def __getattr__(self, name):
            raise AssertionError(f"the model was used ({name}) before the output was checked")
    out = tmp_path / "merged"
    out.mkdir()
    with pytest.raises(UsageError, match="exists"):
        adapters.merge_folder(Untouchable(), None, out)
    assert list(out.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


@pytest.mark.slow
def test_train_gen_ctrl_c_saves_prints_the_resume_command_and_resume_finishes(tmp_path, monkeypatch, capsys):
    """SIGINT after optimizer step 2 of a tiny run: exit 130 with one line naming the resume
    command; that command finishes the run from step 2."""
    from src import train_gen
    from src.engine import loop
    real = loop.count_step
    seen = {"n": 0}

    def count_then_signal(progress, *a, **k):
        real(progress, *a, **k)
        seen["n"] += 1
        if seen["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(loop, "count_step", count_then_signal)
    out = tmp_path / "g"
    flags = ["--model", "tiny", "--device", "cpu", "--precision", "fp32", "--num-threads", "1", "--no-progress",
             "--batch-size", "8", "--max-len", "64", "--synthetic-episodes", "40", "--sample-count", "0",
             "--epochs", "1", "--out", str(out)]
    assert train_gen.main(flags) == 130
    err = capsys.readouterr().err
    stopped = [ln for ln in err.splitlines() if ln.startswith("[stopped]")]  # stderr also holds progress bars
    assert "Traceback" not in err and len(stopped) == 1
    assert f"--config {out / 'config.yaml'} --resume" in stopped[0] and "step 2" in stopped[0]
    assert load_resume_state(RunDir(out).last)["progress"]["step"] == 2
    assert train_gen.main(["--config", str(out / "config.yaml"), "--resume"]) == 0
    assert load_resume_state(RunDir(out).last)["progress"]["done"]
    assert RunDir(out).metrics.exists()
