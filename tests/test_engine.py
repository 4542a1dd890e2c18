"""The shared engine on a toy task: batch plans, accumulation, the non-finite guard."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from src.engine.batching import inference_batches, pad_fraction, plan_batches, shard
from src.engine.loop import NonFiniteLossError, TaskBase, make_accelerator, train
from src.engine.settings import TrainSettings


class ToyTask(TaskBase):
    """Linear regression; rows listed in `poison` produce a NaN loss."""
    monitor, monitor_mode = "val_mse", "min"

    def __init__(self, n=64, poison=()):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        self.poison = set(poison)
        self.saved = 0

    def lengths(self):
        return [1] * len(self.x)

    def collate(self, idx):
        return {"x": self.x[idx], "y": self.y[idx], "nan": any(i in self.poison for i in idx)}

    def count(self, batch):
        return len(batch["y"])

    def loss(self, model, batch):
        err = ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).sum()
        return (err * float("nan") if batch["nan"] else err), torch.tensor(float(len(batch["y"])))

    def stats(self, batch):
        return len(batch["y"]), len(batch["y"]), len(batch["y"])

    def evaluate(self, model, accelerator):
        return {"val_mse": float(((model(self.x).squeeze(-1) - self.y) ** 2).mean().detach())}

    def save_best(self, model, folder: Path):
        self.saved += 1


def _cfg(**kw):
    base = dict(epochs=3, batch_size=8, lr=0.05, warmup_ratio=0.0, schedule="constant", precision="fp32",
                progress=False, eval_every=4)
    base.update(kw)
    return TrainSettings(**base)


def test_toy_task_learns_and_keeps_the_best(tmp_path):
    torch.manual_seed(0)
    task, model = ToyTask(), torch.nn.Linear(4, 1)
    cfg = _cfg(epochs=6, lr=0.2)
    acc, _ = make_accelerator(cfg)
    before = task.evaluate(model, acc)["val_mse"]
    prog = train(cfg, task, model, tmp_path, acc)
    assert prog.done and prog.best < before / 4 and task.saved >= 1
    assert prog.step == 6 * 8  # 64 rows / batch 8 = 8 steps per epoch


def test_non_finite_steps_are_skipped_then_stop_the_run(tmp_path):
    torch.manual_seed(0)
    task, model = ToyTask(poison={5}), torch.nn.Linear(4, 1)
    cfg = _cfg(max_bad_steps=100)
    acc, _ = make_accelerator(cfg)
    prog = train(cfg, task, model, tmp_path / "a", acc)
    assert prog.bad_steps == 3  # the poisoned row's batch, once per epoch
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(NonFiniteLossError):
        train(_cfg(max_bad_steps=2), ToyTask(poison={5}), torch.nn.Linear(4, 1), tmp_path / "b", acc)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 300), bs=st.integers(1, 17), seed=st.integers(0, 5), epoch=st.integers(0, 3),
       world=st.integers(1, 3))
def test_batch_plans_cover_every_row_once_and_shards_line_up(n, bs, seed, epoch, world):
    lengths = np.random.default_rng(seed).integers(1, 500, size=n)
    plan = plan_batches(lengths, bs, seed=seed, epoch=epoch)
    assert sorted(i for b in plan for i in b) == list(range(n))
    assert plan == plan_batches(lengths, bs, seed=seed, epoch=epoch)  # a pure function: resume relies on it
    shards = [shard(plan, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # DDP ranks step together
    grouped = pad_fraction(lengths, plan)
    # With a handful of batches a random plan can beat sorting by luck: lengths 1, 50, 51, 100, 101 in
    # pairs sort into [1, 50] [51, 100] [101] while [50, 51] [100, 101] [1] pads almost nothing. From a
    # few batches on, grouping wins against the random plan of the same seed.
    assert grouped <= pad_fraction(lengths, plan_batches(lengths, bs, seed=seed, epoch=epoch, group_size=1)) + 1e-9 \
        or n < 4 * bs


def test_inference_batches_respect_the_token_budget():
    lengths = np.array([5, 300, 40, 41, 7, 299, 120])
    batches = inference_batches(lengths, max_tokens=600)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(lengths[b].max() * len(b) <= 600 for b in batches)


# --- the Task contract and the run log -------------------------------------------------------------

import json  # noqa: E402

from src.engine import plots  # noqa: E402
from src.engine.loop import param_groups, truncate_jsonl  # noqa: E402
from src.errors import UsageError  # noqa: E402


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_lines_every_log_every_steps_beside_the_evals(tmp_path):
    torch.manual_seed(0)
    cfg = _cfg(epochs=2, log_every=3, eval_every=4, lr=0.2)
    acc, _ = make_accelerator(cfg)
    train(cfg, ToyTask(), torch.nn.Linear(4, 1), tmp_path, acc)
    recs = _records(tmp_path)
    tr = [r for r in recs if r["kind"] == "train"]
    ev = [r for r in recs if r["kind"] == "eval"]
    assert [r["step"] for r in tr] == [3, 6, 9, 12, 15]  # 16 steps: 64 rows / batch 8, two epochs
    assert [r["step"] for r in ev] == [4, 8, 12, 16]
    for r in tr:
        assert np.isfinite(r["train_loss"]) and r["lr"] == pytest.approx(0.2)  # constant schedule, no warmup
        assert r["examples_per_s"] > 0 and r["tokens_per_s"] > 0 and 0 <= r["pad_fraction"] < 1
    assert tr[-1]["train_loss"] < tr[0]["train_loss"] / 2  # the curve shows the learning


def test_a_resumed_run_logs_the_same_curve(tmp_path):
    cfg = _cfg(epochs=2, log_every=3, eval_every=4)
    acc, _ = make_accelerator(cfg)
    torch.manual_seed(0)
    train(cfg, ToyTask(), torch.nn.Linear(4, 1), tmp_path / "full", acc)
    torch.manual_seed(0)
    part = _cfg(epochs=2, log_every=3, eval_every=4, stop_after_steps=7)  # inside a log window, off the eval grid
    assert not train(part, ToyTask(), torch.nn.Linear(4, 1), tmp_path / "parts", acc).done
    (tmp_path / "parts" / "metrics.jsonl").open("a").write('{"kind": "train", "step": 8, "tra')  # torn by a kill
    train(cfg, ToyTask(), torch.nn.Linear(4, 1), tmp_path / "parts", acc, resume=True)
    curve = lambda d: [(r["kind"], r["step"], round(r["train_loss"], 5), r["lr"]) for r in _records(d)]  # noqa: E731
    assert curve(tmp_path / "parts") == curve(tmp_path / "full")


def test_truncate_jsonl_drops_a_torn_tail_but_refuses_damage_inside(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "x')
    truncate_jsonl(p, 2)
    assert p.read_text() == '{"step": 1}\n{"step": 2}\n'
    p.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(UsageError, match="line 2"):
        truncate_jsonl(p, 5)


class TwoLayerTask(ToyTask):
    """The task, not the model, says which parameters learn at which rate."""

    def lr_multipliers(self):
        return {"0.": 0.0}  # the first layer frozen by a zero learning rate


def test_lr_multipliers_come_from_the_task(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    first, second = model[0].weight.detach().clone(), model[1].weight.detach().clone()
    cfg = _cfg(epochs=1)
    acc, _ = make_accelerator(cfg)
    train(cfg, TwoLayerTask(), model, tmp_path, acc)
    assert torch.equal(model[0].weight.detach(), first) and not torch.equal(model[1].weight.detach(), second)
    groups = param_groups(model, 0.01, 1e-3, {"0.": 10.0})
    assert sorted(g["lr"] for g in groups) == pytest.approx([1e-3, 1e-3, 1e-2, 1e-2])
    assert {g["weight_decay"] for g in groups if len(g["params"]) == 1 and g["params"][0].ndim == 1} == {0.0}


class HookedTask(ToyTask):
    def __init__(self):
        super().__init__()
        self.calls = []

    def after_eval(self, model, accelerator, step, metrics):
        self.calls.append((step, metrics["val_mse"], model.training, torch.is_inference_mode_enabled()))


def test_after_eval_runs_after_every_eval_with_the_step_and_metrics(tmp_path):
    torch.manual_seed(0)
    task, cfg = HookedTask(), _cfg(epochs=1, eval_every=3)
    acc, _ = make_accelerator(cfg)
    seen = []
    prog = train(cfg, task, torch.nn.Linear(4, 1), tmp_path, acc, trial_hook=lambda s, m: seen.append(s))
    assert [c[0] for c in task.calls] == [h["step"] for h in prog.history] == seen == [3, 6, 8]
    assert [c[1] for c in task.calls] == [h["val_mse"] for h in prog.history]
    assert all(not training and inference for _, _, training, inference in task.calls)


def test_report_to_tensorboard_logs_the_same_scalars_offline(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    torch.manual_seed(0)
    cfg = _cfg(epochs=1, log_every=2, eval_every=0, report_to="tensorboard")
    acc, _ = make_accelerator(cfg, tmp_path)
    train(cfg, ToyTask(), torch.nn.Linear(4, 1), tmp_path, acc)
    assert list((tmp_path / "tensorboard" / "prefpipe").glob("events.out.tfevents.*"))
    ea = EventAccumulator(str(tmp_path / "tensorboard" / "prefpipe"))
    ea.Reload()
    logged = [(e.step, e.value) for e in ea.Scalars("train/train_loss")]
    tr = [r for r in _records(tmp_path) if r["kind"] == "train"]
    assert [s for s, _ in logged] == [r["step"] for r in tr] == [2, 4, 6, 8]
    assert [v for _, v in logged] == pytest.approx([r["train_loss"] for r in tr], rel=1e-5)
    assert [e.step for e in ea.Scalars("eval/val_mse")] == [8]


def test_report_to_a_missing_tracker_is_one_clear_line(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UsageError, match=r"--report-to wandb needs the wandb package \(pip install wandb\)"):
        make_accelerator(_cfg(report_to="wandb"), tmp_path)


def test_loss_plot_shows_the_smoothed_step_curve_and_fills_its_figure(tmp_path):
    lines = [{"kind": "train", "step": 10 * i, "train_loss": 1.0 / i + 0.3 * (i % 2), "lr": 1e-3} for i in range(1, 31)]
    lines += [{"kind": "eval", "step": s, "val_log_loss": 0.9 - s / 1000} for s in (100, 200, 300)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    fig = plots.loss_figure(path, reference={"class prior": 1.05})
    ax = fig.axes[0]
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert "train loss, smoothed (EMA 0.9)" in labels and "val_log_loss" in labels
    smoothed = next(ln for ln in ax.get_lines() if ln.get_label().startswith("train loss, smoothed")).get_ydata()
    raw = [r["train_loss"] for r in lines if r["kind"] == "train"]
    assert np.std(np.diff(smoothed[5:])) < np.std(np.diff(raw[5:])) / 3  # smoothing removes the zig-zag
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    whole = fig.get_tightbbox(renderer)  # in inches, what bbox_inches="tight" saves
    axes = ax.get_window_extent(renderer).transformed(fig.dpi_scale_trans.inverted())
    assert axes.width > 0.75 * whole.width  # the prior's label no longer pushes the axes into the right half
    assert axes.x0 - whole.x0 < 0.2 * whole.width
    plots.loss_curves(path, tmp_path / "loss.png", reference={"class prior": 1.05})
    assert (tmp_path / "loss.png").stat().st_size > 10_000


def test_ema_is_debiased_and_skips_gaps():
    assert plots.ema([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])  # no pull towards 0 at the start
    out = plots.ema([1.0, float("nan"), 1.0])
    assert out == pytest.approx([1.0, 1.0, 1.0])


def test_a_fractional_run_says_its_fraction_at_the_end(tmp_path):
    """--epochs 0.5: the final eval line said epoch=1."""
    torch.manual_seed(0)
    cfg = _cfg(epochs=0.5, eval_every=0)
    acc, _ = make_accelerator(cfg)
    train(cfg, ToyTask(), torch.nn.Linear(4, 1), tmp_path, acc)
    ev = [r for r in _records(tmp_path) if r["kind"] == "eval"]
    assert [r["epoch"] for r in ev] == [0.5]


def test_a_one_point_train_loss_is_a_marker_and_a_short_run_is_barely_smoothed(tmp_path):
    """One logged point: the legend listed a line that drew nothing. Four falling points:
    the EMA-0.9 line (the mean of all four) sat far above the last loss."""
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"kind": "train", "step": 1, "train_loss": 1.0}) + "\n")
    one = next(ln for ln in plots.loss_figure(path).axes[0].get_lines() if ln.get_label().startswith("train loss"))
    assert one.get_marker() == "o"
    losses = [1.2, 1.0, 0.8, 0.6]
    path.write_text("".join(json.dumps({"kind": "train", "step": i + 1, "train_loss": v}) + "\n"
                            for i, v in enumerate(losses)))
    lines = plots.loss_figure(path).axes[0].get_lines()
    smoothed = [ln for ln in lines if "smoothed" in ln.get_label()]
    assert len(smoothed) == 1
    assert abs(smoothed[0].get_ydata()[-1] - losses[-1]) < 0.1  # at 0.9 it was 0.85 against 0.6


def test_a_time_estimate_is_printed_once_after_the_first_timed_steps(tmp_path, capsys):
    from src.engine.loop import evals_planned, time_estimate
    assert time_estimate(1.5, 40, 2) == "[time] ~1.0 min of training left: 40 steps at 1.50 s/step (+ 2 evals)"
    assert "h of training left" in time_estimate(10.0, 1000, 1)
    assert evals_planned(_cfg(eval_every=0), 2, 16, 2) == 2 and evals_planned(_cfg(eval_every=4), 1, 8, 0) == 2
    torch.manual_seed(0)
    cfg = _cfg(epochs=2)
    acc, _ = make_accelerator(cfg)
    train(cfg, ToyTask(), torch.nn.Linear(4, 1), tmp_path, acc)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[time]")]
    assert len(lines) == 1 and "14 steps at" in lines[0]  # 16 steps: printed after the 2nd


@pytest.mark.parametrize("release", [True, False])
def test_a_cpu_run_releases_freed_heap_once_per_optimizer_step_unless_told_not_to(tmp_path, monkeypatch, release):
    import src.engine.loop as loop
    calls = []
    monkeypatch.setattr(loop, "heap_releaser", lambda device: (lambda force=False: calls.append((device, force))))
    cfg = _cfg(epochs=1, grad_accum=2, release_memory=release)
    acc, _ = make_accelerator(cfg)
    prog = train(cfg, ToyTask(), torch.nn.Linear(4, 1), tmp_path, acc)
    assert prog.step == 4  # 8 batches of 8 rows, 2 per optimizer step
    assert calls == ([("cpu", False)] * 4 + [("cpu", False), ("cpu", True)] if release else [])  # steps, the epoch's eval, the end
