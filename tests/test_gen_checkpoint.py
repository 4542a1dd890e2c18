"""gen/checkpoint.py: the run-dir layout, and a checkpoint never switches on remote code by itself."""
from __future__ import annotations

import pytest
import transformers

from src.gen import checkpoint as K
from src.gen.model import ensure_pad_token, load_base
from src.models.tiny import build_tiny_tokenizer


@pytest.fixture()
def full_checkpoint(tmp_path):
    tok = build_tiny_tokenizer()
    model = load_base("tiny", tok)
    ensure_pad_token(model, tok)
    folder = K.best_dir(tmp_path / "run")
    # A checkpoint whose meta asks for remote code (as a downloaded, untrusted folder might).
    K.save_checkpoint(model, tok, folder, {"base_model": "tiny", "finetune": "full", "trust_remote_code": True})
    return tmp_path / "run", folder


def _record_from_pretrained(monkeypatch) -> list[dict]:
    calls: list[dict] = []
    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **{**kwargs, "trust_remote_code": False})
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    return calls


def test_stored_trust_remote_code_is_not_used_unless_the_caller_asks(full_checkpoint, monkeypatch):
    run_dir, folder = full_checkpoint
    calls = _record_from_pretrained(monkeypatch)
    model, tok, meta = K.load_checkpoint(folder)  # the caller passes nothing: today's main used the meta's True
    assert meta["trust_remote_code"] is True and calls[-1]["trust_remote_code"] is False
    K.load_for_generation(str(run_dir))  # generate's path through a run dir
    assert calls[-1]["trust_remote_code"] is False
    K.load_checkpoint(folder, trust_remote_code=True)  # asked for explicitly: passed on
    assert calls[-1]["trust_remote_code"] is True
    K.load_for_generation(str(run_dir), trust_remote_code=True)
    assert calls[-1]["trust_remote_code"] is True


def test_run_dir_layout_is_found_through_one_owner(full_checkpoint):
    run_dir, folder = full_checkpoint
    assert K.find_checkpoint(run_dir) == folder == K.find_checkpoint(folder)
    assert K.find_checkpoint(run_dir / "nothing") is None
    assert not K.has_resume_state(run_dir) and K.steps_done(run_dir) == 0
    assert K.last_dir(run_dir).parent == K.best_dir(run_dir).parent


def test_missing_local_run_is_one_line(tmp_path, capsys):
    from src.errors import UsageError
    from src.generate import main
    with pytest.raises(UsageError, match="no such run dir"):
        K.load_for_generation(str(tmp_path / "nope"))
    assert main(["--run", str(tmp_path / "nope"), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no such run dir" in err and len(err.splitlines()) == 1


def test_resume_state_found_when_a_save_was_cut_between_its_renames(tmp_path):
    """gen/train decides before training whether it resumes (keep samples.jsonl, skip the
    initial eval, part order): it must see the complete `.last.old-*` a crash left."""
    import torch

    from src.engine.checkpoint import save_resumable
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    run_dir = tmp_path / "run"
    save_resumable(run_dir, model=model, optimizer=opt, scheduler=sched, progress={"step": 7})
    assert K.has_resume_state(run_dir) and K.steps_done(run_dir) == 7
    last = K.last_dir(run_dir)
    last.rename(last.parent / f".{last.name}.old-1234abcd")  # killed after the first rename of a save
    assert not last.exists()
    assert K.has_resume_state(run_dir) and K.steps_done(run_dir) == 7


@pytest.fixture()
def lora_run(tmp_path):
    """A tiny LoRA run dir (checkpoint/best with adapter and base), as train_gen writes it."""
    from src.gen.model import apply_lora
    from src.gen.config import GenConfig
    tok = build_tiny_tokenizer()
    base = load_base("tiny", tok)
    ensure_pad_token(base, tok)
    model = apply_lora(base, GenConfig(lora_r=2), [])
    K.save_checkpoint(model, tok, K.best_dir(tmp_path / "run"), {"base_model": "tiny", "finetune": "lora"},
                      base=model.get_base_model())
    return tmp_path / "run"


def test_merge_refuses_an_existing_merged_folder_unless_overwrite(lora_run, capsys):
    from src.train_gen import main
    assert main(["--merge", str(lora_run)]) == 0
    merged = lora_run / "merged"
    meta = merged / K.CHECKPOINT_META
    meta.write_text(meta.read_text() + " ")  # a mark: was it replaced?
    before = sorted(p.name for p in merged.iterdir())
    capsys.readouterr()
    assert main(["--merge", str(lora_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" in err and "--overwrite" in err
    assert sorted(p.name for p in merged.iterdir()) == before and meta.read_text().endswith(" ")
    assert main(["--merge", str(lora_run), "--overwrite"]) == 0
    assert not meta.read_text().endswith(" ")  # replaced by a fresh merge
    assert K.load_checkpoint(merged)[2]["finetune"] == "full"
