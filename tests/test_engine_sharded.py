"""--resume under FSDP: every rank saves its weight and optimizer shards (accelerate save_state)
inside the crash-safe checkpoint protocol, and an interrupted + resumed run ends where an
uninterrupted one does, Adam moments included.

accelerate turns FSDP on only for GPU-like process groups (its state maps CPU + torchrun to
MULTI_CPU, and `accelerate launch` refuses --cpu with --use_fsdp), while torch's FSDP2
(`fully_shard`) itself runs on CPU over gloo. So each forked rank builds the engine's usual
Accelerator and then marks its state FSDP with an FSDP2 plugin: prepare/save_state/load_state
then take accelerate's real FSDP code paths (DTensor shards, torch.distributed.checkpoint).
FSDP1 cannot be tried this way: its wrapper refuses CPU ("Inconsistent compute device and
`device_id` on rank 0: cpu vs cpu:0"), so configs/accelerate/fsdp.yaml (fsdp_version 1) runs
the same save_state/load_state calls untested here; DeepSpeed is not installed here either."""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
import torch

from src.engine.checkpoint import SHARDED_STATE, last_dir
from src.engine.loop import TaskBase, make_accelerator, train
from src.errors import UsageError
from src.engine.settings import TrainSettings


class WideToyTask(TaskBase):
    """Regression through a hidden layer (FSDP shards each parameter along dim 0)."""
    monitor, monitor_mode = "val_mse", "min"

    def __init__(self, n=64):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = torch.sin(self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]))

    def lengths(self):
        return [1] * len(self.x)

    def collate(self, idx):
        return {"x": self.x[idx], "y": self.y[idx]}

    def count(self, batch):
        return len(batch["y"])

    def loss(self, model, batch):
        return ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).sum(), torch.tensor(float(len(batch["y"])))

    def stats(self, batch):
        return len(batch["y"]), len(batch["y"]), len(batch["y"])

    def evaluate(self, model, accelerator):
        return {"val_mse": float(((model(self.x).squeeze(-1) - self.y) ** 2).mean().detach())}

    def save_best(self, model, folder: Path):
        pass


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _cfg(**kw):
    base = dict(epochs=1, batch_size=4, lr=0.05, warmup_ratio=0.0, schedule="linear", precision="fp32",
                progress=False, eval_every=0, seed=3)
    base.update(kw)
    return TrainSettings(**base)


def _fsdp_rank(rank: int, port: int, cfg: TrainSettings, run_dir: Path, resume: bool, err: Path) -> None:
    import traceback
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    try:
        from accelerate.state import AcceleratorState, PartialState
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
        AcceleratorState._reset_state(reset_partial_state=True)
        acc, _ = make_accelerator(cfg)
        # both states: AcceleratorState() copies PartialState's fields again each time it is built
        PartialState().distributed_type = acc.state.distributed_type = DistributedType.FSDP
        acc.state.fsdp_plugin = FullyShardedDataParallelPlugin(fsdp_version=2)
        train(cfg, WideToyTask(), _model(), run_dir, acc, resume=resume)
        assert type(acc._models[0]).__name__.startswith("FSDP")  # really sharded
    except BaseException:
        err.write_text(f"rank {rank}:\n{traceback.format_exc()}")
        os._exit(1)
    os._exit(0)


def _two_ranks(tmp_path: Path, cfg: TrainSettings, run_dir: Path, resume: bool = False) -> None:
    from tests.test_lora_train import _free_port
    port = _free_port()
    ctx = multiprocessing.get_context("fork")
    errs = [tmp_path / f"{run_dir.name}-{resume}-rank{r}.err" for r in (0, 1)]
    procs = [ctx.Process(target=_fsdp_rank, args=(r, port, cfg, run_dir, resume, errs[r])) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0], "".join(e.read_text()[-1500:] for e in errs if e.exists())


def _full_state(run_dir: Path, tmp_path: Path) -> dict:
    """The sharded checkpoint gathered into one dict (no process group needed)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    out = {}
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):
        dest = tmp_path / f"{run_dir.name}-{part}.pt"
        dcp_to_torch_save(last_dir(run_dir) / SHARDED_STATE / part, dest)
        out[part] = torch.load(dest, weights_only=True)
    return out


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}/")
        elif torch.is_tensor(v):
            yield f"{prefix}{k}", v


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs gloo")
@pytest.mark.slow  # FSDP across forked ranks
def test_fsdp_resume_restores_the_sharded_optimizer_state(tmp_path):
    # 64 rows / (2 ranks x 4) = 8 optimizer steps; the interrupted run stops after 3
    _two_ranks(tmp_path, _cfg(), tmp_path / "full")
    _two_ranks(tmp_path, _cfg(stop_after_steps=3), tmp_path / "parts")
    last = last_dir(tmp_path / "parts")
    assert (last / "training_state.pt").is_file() and not (last / "model.safetensors").exists()
    assert not list(last.parent.glob(".last.*"))  # the shared temp folder was swapped in, nothing left over
    mid = dict(_flat(_full_state(tmp_path / "parts", tmp_path)["optimizer_0"]))
    moments = [k for k in mid if k.endswith("exp_avg")]
    assert moments and all(float(mid[k].abs().max()) > 0 for k in moments)  # there is something to restore
    _two_ranks(tmp_path, _cfg(), tmp_path / "parts", resume=True)

    a, b = (dict(_flat(_full_state(tmp_path / d, tmp_path))) for d in ("full", "parts"))
    assert a.keys() == b.keys() and any(k.endswith("exp_avg_sq") for k in a)
    steps = {float(v) for k, v in b.items() if k.endswith("/step")}
    assert steps == {8.0}  # Adam's step count continued from 3: the moments were loaded, not restarted
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)

    # a sharded checkpoint resumed without FSDP/DeepSpeed: one clear line, the checkpoint untouched
    acc, _ = make_accelerator(_cfg())
    before = sorted(p.name for p in last_dir(tmp_path / "parts").rglob("*"))
    with pytest.raises(UsageError, match="saved under DeepSpeed/FSDP"):
        train(_cfg(), WideToyTask(), _model(), tmp_path / "parts", acc, resume=True)
    assert sorted(p.name for p in last_dir(tmp_path / "parts").rglob("*")) == before
