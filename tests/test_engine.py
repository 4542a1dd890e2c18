"""The shared engine on a toy task: batch plans, accumulation, the non-finite guard."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from src.engine.batching import inference_batches, pad_fraction, plan_batches, shard
from src.engine.loop import NonFiniteLossError, make_accelerator, train
from src.engine.settings import TrainSettings


class ToyTask:
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
    assert grouped <= pad_fraction(lengths, plan_batches(lengths, bs, seed=seed, epoch=epoch, group_size=1)) + 1e-9 \
        or n <= bs


def test_inference_batches_respect_the_token_budget():
    lengths = np.array([5, 300, 40, 41, 7, 299, 120])
    batches = inference_batches(lengths, max_tokens=600)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(lengths[b].max() * len(b) <= 600 for b in batches)
