"""Every step of a killed run survives: crash-safe checkpoint folders, torn metrics lines,
checkpoints between evals, a full disk, and real `kill -9` of a training process at named
and random points followed by `--resume` (src/engine/crashtest.py; many more points:
scripts/fault_inject.py)."""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from src.engine import checkpoint as ck
from src.engine.checkpoint import atomic_dir, complete_dir, latest_complete, load_resume_state, recover_dir
from src.engine.crashtest import Harness, ToyRegression, harness_seed, kill_points
from src.engine.loop import _truncate_metrics, make_accelerator, train
from src.engine.settings import TrainSettings
from src.errors import UsageError, run_cli


def _cfg(**kw) -> TrainSettings:
    base = dict(epochs=2, batch_size=8, lr=0.05, warmup_ratio=0.0, schedule="constant", precision="fp32",
                device="cpu", progress=False, eval_every=0)
    base.update(kw)
    return TrainSettings(**base)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))


def _train(run_dir, resume=False, task=None, **kw):
    cfg = _cfg(**kw)
    acc, _ = make_accelerator(cfg)
    return train(cfg, task or ToyRegression(), _model(), Path(run_dir), acc, resume=resume)


def _steps(run_dir) -> list[int]:
    records = [json.loads(ln) for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if r.get("kind", "eval") == "eval"]  # the evals, not the train log lines


# --- item 2: a torn last line of metrics.jsonl ---------------------------------------------------

def test_a_torn_last_metrics_line_is_dropped_with_a_note_naming_the_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "val": s / 10}) for s in (4, 8, 12)]
    path.write_text("\n".join(lines) + "\n" + '{"step": 16, "val": 0.', encoding="utf-8")  # kill -9 mid-append
    notes = []
    _truncate_metrics(path, 8, notes.append)
    assert path.read_text(encoding="utf-8") == lines[0] + "\n" + lines[1] + "\n"
    assert len(notes) == 1 and str(path) in notes[0] and "torn" in notes[0]


def test_a_damaged_line_that_is_not_the_last_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    body = '{"step": 4}\n{"step": 8, "va\n{"step": 12}\n'
    path.write_text(body, encoding="utf-8")
    with pytest.raises(UsageError, match=r"metrics\.jsonl: line 2 is not JSON"):
        _truncate_metrics(path, 8)
    assert path.read_text(encoding="utf-8") == body  # nothing rewritten


def test_resume_after_a_torn_metrics_line_continues_the_run(tmp_path, capsys):
    _train(tmp_path / "a", eval_every=2, stop_after_steps=3)  # checkpoint at step 3, evals at 2
    with open(tmp_path / "a" / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 4, "epoch": 0.5, "train_lo')
    prog = _train(tmp_path / "a", resume=True, eval_every=2)
    assert prog.done and prog.step == 16
    assert _steps(tmp_path / "a") == [2, 4, 6, 8, 10, 12, 14, 16]
    assert "dropped a torn last line" in capsys.readouterr().out


# --- item 3: crash windows of a checkpoint save ----------------------------------------------------

def _write(folder: Path, version: int) -> None:
    (folder / "a.bin").write_bytes(bytes([version]) * (100 + version))
    (folder / "state.json").write_text(json.dumps({"version": version}))


def _version(folder: Path | None) -> int | None:
    return None if folder is None else json.loads((folder / "state.json").read_text())["version"]


class _Crash(BaseException):
    """Stands in for SIGKILL at a fault point: nothing after it runs (atomic_dir's own
    clean-up is for exceptions raised *inside* its block, which a kill never is)."""


def _save_and_crash_at(monkeypatch, final: Path, version: int, point: str | None) -> None:
    def maybe_crash(name):
        if name == point:
            raise _Crash(name)
    monkeypatch.setattr(ck.faults, "point", maybe_crash)
    try:
        with atomic_dir(final) as tmp:
            _write(tmp, version)
            if point == "in-body":  # killed while writing: a temp folder without a marker
                (tmp / "a.bin").write_bytes(b"half")
                raise _Crash(point)
    except _Crash:
        if point == "in-body":  # undo atomic_dir's exception clean-up: a kill runs none
            leftover = final.parent / f".{final.name}.tmp-dead0000"
            leftover.mkdir()
            (leftover / "a.bin").write_bytes(b"half")
    monkeypatch.undo()


CRASH_POINTS = [None, "in-body", "ckpt-marked", "ckpt-swap", "ckpt-swapped"]


@settings(max_examples=40, deadline=None)
@given(plan=st.lists(st.sampled_from(CRASH_POINTS), min_size=1, max_size=6))
def test_a_checkpoint_is_never_lost_and_recovery_finds_the_newest_complete_one(tmp_path_factory, plan):
    """A run of saves, each maybe cut at a crash point: after each, resume finds the version
    just saved (if its marker was written) or the one before, never an older or no version,
    and leaves no leftovers beside it."""
    mp = pytest.MonkeyPatch()
    final = tmp_path_factory.mktemp("ck") / "last"
    done = prev = None  # newest version whose save reached its marker, and the one before
    for version, point in enumerate(plan, start=1):
        _save_and_crash_at(mp, final, version, point)
        if point != "in-body":
            done, prev = version, done
        # a reader beside the writer sees a complete version: the new one, or the old one
        # while the new one still waits in its temp folder
        assert _version(complete_dir(final)) in ({done, prev} if point == "ckpt-marked" else {done})
        assert _version(recover_dir(final)) == done
        assert sorted(p.name for p in final.parent.iterdir()) == ([] if done is None else ["last"])


def test_resume_after_a_kill_between_the_two_renames_continues_instead_of_restarting(tmp_path, capsys):
    run = tmp_path / "run"
    _train(run, eval_every=2, stop_after_steps=5)  # last checkpoint at step 5
    ckdir = run / "checkpoint"
    # what kill -9 between atomic_dir's renames leaves: the complete old checkpoint moved aside,
    # the new one not yet in place; plus a temp folder of a save killed mid-write
    (ckdir / "last").rename(ckdir / ".last.old-1a2b3c4d")
    (ckdir / ".last.tmp-5e6f7a8b").mkdir()
    (ckdir / ".last.tmp-5e6f7a8b" / "model.safetensors").write_bytes(b"\0" * 10)
    prog = _train(run, resume=True, eval_every=2)
    out = capsys.readouterr().out
    assert "[resume] step 5" in out and "starting from scratch" not in out
    assert prog.done and _steps(run) == [2, 4, 6, 8, 10, 12, 14, 16]  # each eval once
    assert sorted(p.name for p in ckdir.iterdir()) == ["best", "last"]  # leftovers cleaned


def test_latest_complete_names_the_resumable_checkpoint_or_none(tmp_path):
    assert latest_complete(tmp_path) is None
    _train(tmp_path, stop_after_steps=2)
    ckdir = tmp_path / "checkpoint"
    (ckdir / "last").rename(ckdir / ".last.old-00000000")
    found = latest_complete(tmp_path)
    assert found == ckdir / "last" and load_resume_state(found)["progress"]["step"] == 2


def test_gen_stage_sees_the_resume_state_of_a_save_cut_between_its_renames(tmp_path):
    from src.gen.checkpoint import has_resume_state, steps_done
    _train(tmp_path, stop_after_steps=4)
    ckdir = tmp_path / "checkpoint"
    (ckdir / "last").rename(ckdir / ".last.old-00000000")
    # read-only: gen checks this on every process before the engine's trainer recovers it
    assert has_resume_state(tmp_path) and steps_done(tmp_path) == 4
    assert not (ckdir / "last").exists()


# --- disk full -------------------------------------------------------------------------------------

def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint_and_is_one_line(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _train(run, stop_after_steps=3)
    before = (run / "checkpoint" / "last" / "training_state.pt").read_bytes()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(ck.torch, "save", full)
    with pytest.raises(UsageError) as err:
        _train(run, resume=True, stop_after_steps=2)
    msg = str(err.value)
    assert "\n" not in msg and "no space left" in msg and "checkpoint/last" in msg and "previous" in msg
    assert (run / "checkpoint" / "last" / "training_state.pt").read_bytes() == before
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["last"]
    assert run_cli(lambda: _train(run, resume=True, stop_after_steps=2)) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    monkeypatch.undo()
    assert load_resume_state(run / "checkpoint" / "last")["progress"]["step"] == 3


# --- item 4: checkpoints between evals ---------------------------------------------------------------

class _DiesAtStep(ToyRegression):
    """Raises in the collate of optimizer step `n` (1-based): a crash between evals."""
    def __init__(self, n):
        super().__init__()
        self.n, self.calls = n, 0

    def collate(self, idx):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("crash")
        return super().collate(idx)


@pytest.mark.parametrize("every", [dict(save_every_steps=3), dict(save_every_minutes=1e-9)])
def test_checkpoints_between_evals_bound_the_lost_work_and_keep_one_folder(tmp_path, every):
    # default eval_every 0: the only evals are at epoch ends (8 steps); crash in step 7
    with pytest.raises(RuntimeError, match="crash"):
        _train(tmp_path, task=_DiesAtStep(7), **every)
    step = load_resume_state(tmp_path / "checkpoint" / "last")["progress"]["step"]
    assert step == 6  # saved every 3 steps / every step (M ~ 0), not only at the epoch end (8)
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["last"]  # bounded disk
    prog = _train(tmp_path, resume=True, **every)
    assert prog.done and _steps(tmp_path) == [8, 16]


def test_save_every_minutes_waits_for_the_interval(tmp_path):
    with pytest.raises(RuntimeError, match="crash"):
        _train(tmp_path, task=_DiesAtStep(7), save_every_minutes=60.0)
    assert not (tmp_path / "checkpoint" / "last").exists()  # an hour has not passed


def test_a_run_saved_between_evals_resumes_to_the_uninterrupted_result(tmp_path):
    ref = _train(tmp_path / "ref", save_every_steps=3)
    with pytest.raises(RuntimeError):
        _train(tmp_path / "cut", task=_DiesAtStep(11), save_every_steps=3)
    got = _train(tmp_path / "cut", resume=True, save_every_steps=3)
    assert got.history == ref.history
    a = ck.load_file(str(tmp_path / "ref" / "checkpoint" / "last" / "model.safetensors"))
    b = ck.load_file(str(tmp_path / "cut" / "checkpoint" / "last" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- real kill -9 of a training process --------------------------------------------------------------

@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    h = Harness(tmp_path_factory.mktemp("crash"))
    h.run_reference()
    return h


@pytest.mark.slow  # spawns the training children of the kill -9 harness
def test_reference_run_passes_every_fault_point(harness):
    assert set(harness.passes) == {"step", "ckpt-write", "ckpt-marked", "ckpt-swap", "ckpt-swapped", "metrics-append"}
    assert harness.passes["step"] == 24 and harness.passes["metrics-append"] == len(harness.reference["metrics"])
    assert harness.reference["checkpoint_folder"] == ["best", "last"]


@pytest.mark.slow  # kills and resumes real training processes
def test_kill_9_at_named_and_random_points_then_resume_equals_the_uninterrupted_run(harness):
    seed = harness_seed()  # pinned: FAULT_SEED=N to vary it
    trials = [harness.trial(name, fault, at) for name, fault, at in kill_points(harness.passes, 9, seed=seed)]
    # killed again during its own resume (at a checkpoint swap), then resumed once more
    rng = random.Random(seed)
    trials.append(harness.trial("twice", f"step:{rng.randint(2, 20)}",
                                resume_fault=f"ckpt-swap:{rng.randint(1, 3)}"))
    failed = [t for t in trials if not t.survived]
    assert not failed, f"FAULT_SEED={seed}: {failed}"
    named = [t for t in trials if ":" in t.name or t.name == "twice"]
    assert named and all(t.killed for t in named)  # named points always fire


def test_the_harness_seed_is_pinned_and_varied_only_through_its_variable(monkeypatch):
    """A failing kill plan reproduces on the next run; FAULT_SEED picks another one, and a
    seed that is not a number is one clear line instead of a silently random plan."""
    monkeypatch.delenv("FAULT_SEED", raising=False)
    assert harness_seed() == harness_seed() == 0
    passes = {"step": 24, "ckpt-swap": 3, "metrics-append": 6}
    assert kill_points(passes, 9, seed=harness_seed()) == kill_points(passes, 9, seed=harness_seed())
    monkeypatch.setenv("FAULT_SEED", " 7 ")
    assert harness_seed() == 7
    assert kill_points(passes, 9, seed=harness_seed()) != kill_points(passes, 9, seed=0)
    monkeypatch.setenv("FAULT_SEED", "seven")
    with pytest.raises(UsageError, match="FAULT_SEED must be an integer seed, got 'seven'"):
        harness_seed()
