"""One classifier run: data -> split -> encoder + head -> engine -> run dir.

`run(cfg)` is what the CLI and the sweep call. It writes the run dir named
in `engine/rundir.py` (config.yaml, data_report.json, prior.json,
metrics.jsonl, metrics.json, checkpoint/best|last, val_predictions.csv,
plots/). With `folds=K, fold=-1` it trains every fold in fold<i>/ and writes
out-of-fold predictions and the CV log loss at the top.

Checks that need no data or weights (precision for the model, --max-len
against the encoder's positions) run first, before anything is written.
metrics.json and the run summary give the process's peak resident memory.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import save_yaml
from ..data.arena import read_pairs
from ..data.records import LABEL_NAMES, PairRecord
from ..data.sources import limit_rows
from ..data.tasks import per_language, task_metrics, training_records
from ..data.split import fold_ids, prompt_group, train_val_split
from ..device import DeviceChoice, check_precision, torch_dtype
from ..engine import plots
from ..engine.interrupt import TrainingInterrupted
from ..engine.rundir import RunDir, Start, is_main_process
from ..errors import UsageError
from ..engine.loop import check_engine_device, make_accelerator, run_summary, train
from ..engine.memory import decide_recompute, set_attention_dropout
from ..engine.recompute import enable_activation_recompute
from ..files import atomic_write_text, write_json
from .inference.calibration import (average_probs, choose_temperature, fit_temperature, floor_probs, log_loss,
                                    temperature_bounds)
from .checkpoint import build_pref_model, init_from_run, load_pref_checkpoint, write_prior
from .config import PrefConfig
from .inputs.encode import encode_pairs
from .inputs.training_data import TrainingSources, load_extra_sources, training_rows
from ..models import resolve
from .registry import check_max_len, encoder_config, load_encoder
from .task import PrefTask


def default_run_dir(cfg: PrefConfig) -> Path:
    return Path("runs") / f"{Path(cfg.model).name}-{time.strftime('%Y%m%d-%H%M%S')}"


def load_records(cfg: PrefConfig, run_dir: Path) -> list[PairRecord]:
    from ..data.synthetic import demo_csv
    path = cfg.data or str(demo_csv(cfg.demo_rows, seed=cfg.seed))
    result = read_pairs(path)
    report = result.report()
    kept, report["task"] = training_records(result.records, cfg.task, cfg.ties)  # binary: ties dropped/softened
    if is_main_process():  # every rank reads the data; one writes what it found
        write_json(RunDir(run_dir).data_report, report)
    records = [r for r in kept if r.label is not None or r.target is not None]
    if len(records) < len(kept):
        raise UsageError(f"{path}: {len(kept) - len(records)} rows have no label: "
                         "training needs winner_model_a/winner_model_b/winner_tie (one-hot or probabilities)")
    if result.quarantine:
        print(f"[data] {path}: {len(result.quarantine)} of {result.rows} rows quarantined "
              f"(see {RunDir(run_dir).data_report})")
    if cfg.max_rows:
        records = limit_rows(records, cfg.max_rows, cfg.max_rows_pick, seed=cfg.seed)
    if len(records) < 10:
        raise UsageError(f"{path}: only {len(records)} usable labelled rows; need at least 10")
    return records


def build(cfg: PrefConfig, device: str = "cpu", precision: str = "fp32", log=print):
    """Model + tokenizer; `precision` is the run's (a quantised base computes in it)."""
    torch.manual_seed(cfg.seed)  # the head's initialisation is part of the run's config
    recompute, why = decide_recompute(cfg.gradient_checkpointing, lambda: planned_peak_gib(cfg, precision), device)
    if log is not None and cfg.gradient_checkpointing is None:
        log(f"[memory] gradient checkpointing {why}")
    if _uses_backbone_loader(cfg):  # decoders, LoRA, quantisation: pref/modeling/backbone.py
        from .modeling.backbone import backbone_from_config, lr_multipliers
        b = backbone_from_config(replace(cfg, gradient_checkpointing=recompute), device=device,
                                 compute_dtype=torch_dtype(precision))
        model = build_pref_model(b.model, cfg)
        model.lr_multipliers = lr_multipliers(model, cfg.head_lr_mult, cfg.lora_lr_mult)
        if cfg.head == "lm":
            from .modeling.lm_head import init_answer_head, lr_multipliers_lm
            init_answer_head(model, b.path, b.tokenizer)
            model.lr_multipliers = lr_multipliers_lm(model.lr_multipliers, cfg.head_lr_mult)
        tokenizer = b.tokenizer
    else:
        encoder, tokenizer = load_encoder(cfg.model, trust_remote_code=cfg.trust_remote_code)
        if recompute:
            enable_activation_recompute(encoder)
        model = build_pref_model(encoder, cfg)
    if cfg.attention_dropout >= 0:
        set_attention_dropout(model, cfg.attention_dropout)
    if cfg.init_from:  # stage 2 from stage 1: its weights, this run's fresh optimizer and schedule
        init_from_run(model, cfg.init_from, cfg)
    return model, tokenizer


def planned_peak_gib(cfg: PrefConfig, precision: str) -> float | None:
    """The memory plan's training peak for this run WITHOUT recomputation (None: no plan for it)."""
    from .modeling import memplan as mp
    try:
        config = mp.load_config(cfg.model)
    except UsageError:  # an encoder alias or hub id: its own config (cached, offline)
        config = encoder_config(cfg.model, trust_remote_code=cfg.trust_remote_code)
    bits = "4bit" if cfg.load_in_4bit else "8bit" if cfg.load_in_8bit else None
    pin = mp.PlanInput(model=cfg.model, lora=cfg.lora, lora_r=cfg.lora_r, bits=bits,
                       precision=precision if precision in mp.DTYPE_BYTES else "fp32", max_len=cfg.max_len,
                       batch_size=cfg.batch_size, arch=cfg.arch, gradient_checkpointing=False,
                       head_hidden=cfg.head_hidden)
    return mp.plan(pin, config, runtime_gib=0.0).total_gib


def _uses_backbone_loader(cfg: PrefConfig) -> bool:
    from ..models.tiny import is_tiny_decoder
    from .modeling.backbone import is_decoder_config
    if cfg.lora or cfg.load_in_4bit or cfg.load_in_8bit or cfg.attn or is_tiny_decoder(cfg.model):
        return True
    return is_decoder_config(encoder_config(cfg.model, trust_remote_code=cfg.trust_remote_code))


def check_before_work(cfg: PrefConfig) -> None:
    """What can be refused from the config and the encoder's config alone (no data, no weights)."""
    from ..models.tiny import is_tiny_decoder
    from .modeling.backbone import check_quantization
    from .modeling.backbone import check_padding_free
    choice = DeviceChoice.resolve(cfg.device, cfg.precision)
    check_quantization(cfg.load_in_4bit, cfg.load_in_8bit, choice.device)
    check_engine_device(cfg, choice.device)  # DeepSpeed on CPU, --optim adamw8bit where bitsandbytes cannot run
    check_precision(choice.precision, cfg.model)  # by name: tiny-gemma2, gemma-2-9b-it
    if is_tiny_decoder(cfg.model):
        check_padding_free(cfg, None, choice.device)
        return
    enc_cfg = encoder_config(cfg.model, trust_remote_code=cfg.trust_remote_code)
    check_precision(choice.precision, enc_cfg.model_type)  # a local Gemma-2 folder of any name
    check_padding_free(cfg, enc_cfg, choice.device)
    if cfg.head == "lm":
        from .modeling.lm_head import check_decoder
        check_decoder(enc_cfg, cfg.model)
    check_max_len(enc_cfg, cfg.max_len, what=f"--model {cfg.model}")


def _write_predictions(path: Path, records: list[PairRecord], probs: np.ndarray) -> None:
    """Written predictions carry the probability floor (NaN rows, e.g. unfilled OOF, stay NaN)."""
    df = pd.DataFrame(floor_probs(probs), columns=list(LABEL_NAMES))
    df.insert(0, "id", [r.id for r in records])
    df["label"] = [r.label for r in records]
    atomic_write_text(path, df.to_csv(index=False))


def train_split(cfg: PrefConfig, records: list[PairRecord], train_idx: list[int], val_idx: list[int],
                run_dir: Path, *, resume: bool = False, trial_hook=None,
                extras: TrainingSources | None = None, started: Start | None = None) -> dict:
    """Train on train_idx (+ the extra sources), validate on the HARD rows of val_idx;
    returns the final metrics dict. `started` (RunDir.start) is told when training begins."""
    rd = RunDir(run_dir)
    rd.root.mkdir(parents=True, exist_ok=True)
    _save_config(cfg, rd)
    accelerator, choice = make_accelerator(cfg.train, run_dir)
    from ..models.tiny import is_tiny_decoder
    check_precision(choice.precision, cfg.model)
    if not is_tiny_decoder(cfg.model):  # tiny decoders are built in-process, not resolved
        check_precision(choice.precision, resolve(cfg.model))
    rows = training_rows(cfg, records, train_idx, val_idx, run_dir, extras, main_process=accelerator.is_main_process)
    train_records, select_records, val_records = rows.train, rows.select, rows.val
    model, tokenizer = build(cfg, choice.device, choice.precision, log=accelerator.print)
    enc_kw = dict(arch=cfg.arch, max_len=cfg.max_len, prompt_budget=cfg.prompt_budget, keep=cfg.keep,
                  judge=cfg.head == "lm", privileged=cfg.privileged)
    train_enc = encode_pairs(train_records, tokenizer, both_orders=cfg.swap_aug, **enc_kw)
    val_enc = encode_pairs(val_records, tokenizer, both_orders=cfg.swap_aug, **enc_kw)
    select_enc = encode_pairs(select_records, tokenizer, both_orders=cfg.swap_aug, **enc_kw) if select_records else None
    model.set_style_stats(torch.from_numpy(train_enc.style))
    drawn = rows.drawn(0)  # one epoch's rows after the source weights (the counts are the same every epoch)
    if cfg.head_init == "prior" and not cfg.init_from:  # every rank: the same numbers, no file read
        counts = train_enc.targets[drawn].astype(np.float64).sum(0)[:3]
        model.start_at_prior((counts + 1.0) / (counts.sum() + 3.0))
    if accelerator.is_main_process:
        # the class prior of every non-validation row the run used: training rows and the selection slice
        sel = np.eye(3)[select_enc.labels] if select_enc is not None else np.zeros((0, 3))
        write_prior(run_dir, np.concatenate([train_enc.targets[drawn], sel]))
    task = PrefTask(cfg, train_enc, val_enc, tokenizer, accelerator.device.type, select=select_enc,
                    epoch_rows=rows.epoch_rows,
                    lr_mults=getattr(model, "lr_multipliers", None),  # LoRA: --lora-lr-mult for the adapters
                    groups={"select": np.array([prompt_group(r) for r in select_records]),
                            "val": np.array([prompt_group(r) for r in val_records])})
    accelerator.print(f"[run] {run_dir}: {len(train_records)} train / {len(select_records)} select / "
                      f"{len(val_records)} val pairs, "
                      f"{choice.device} {choice.precision}, {accelerator.num_processes} process(es), {cfg.model} {cfg.arch}")
    if started is not None:
        started.begun()  # from here on a failure keeps the folder: it holds what --resume needs
    progress = train(cfg.train, task, model, run_dir, accelerator, resume=resume, trial_hook=trial_hook, hparams=cfg)
    if not progress.done:  # stopped early on purpose (--stop-after-steps): resume later
        return {"stopped_at_step": progress.step}

    # Final metrics from the best checkpoint, re-predicted so files and numbers agree.
    best, temperature = _best_model(model, run_dir, accelerator.device)
    ab, ba = task.predict(best, accelerator, val_enc)
    y = val_enc.labels
    probs, raw = floor_probs(average_probs(ab, ba, temperature)), floor_probs(average_probs(ab, ba))
    summary = run_summary(progress, cfg.train, task.lengths())
    metrics = {
        "val_log_loss": log_loss(probs, y), "val_log_loss_uncalibrated": log_loss(raw, y),
        "val_accuracy": float((probs.argmax(1) == y).mean()), "temperature": temperature,
        **summary, "train_pairs_per_s": summary["train_examples_per_s"],
        "n_train": len(drawn), "n_train_distinct": len(train_records), "n_val": len(val_records),
        "n_select": len(select_records),
        "val_log_loss_in_sample_calibrated": log_loss(floor_probs(average_probs(ab, ba, fit_temperature(ab, ba, y))), y),
        "figures": _figures(bool(select_records)),
        # of --data's own training rows: extra (pseudo-labelled) sources do not move the baseline of the same val rows
        "val_log_loss_class_prior": _prior_log_loss(train_enc.targets[_primary(drawn, rows.source)], y),
    }
    metrics.update(_task_figures(cfg.task, val_records, probs, raw, y))
    fit_rows = (ab, ba, y)
    if select_enc is not None:  # the selection slice's own figure (in-sample for temperature and checkpoint)
        sab, sba = task.predict(best, accelerator, select_enc)
        metrics["select_log_loss"] = log_loss(floor_probs(average_probs(sab, sba, temperature)), select_enc.labels)
        fit_rows = (sab, sba, select_enc.labels)
    if cfg.calibrate:
        choice = task.best_temperature_choice or choose_temperature(
            *fit_rows, task.groups.get("select" if select_enc is not None else "val"))  # a resume that saved no new best
        metrics["temperature_fit"] = {**_temperature_fit(*fit_rows, temperature, "select" if select_enc is not None else "val"),
                                      "kept_t1": choice.reason, "fitted": choice.fitted,
                                      "cross_fitted_log_loss": choice.cross_fitted_log_loss,
                                      "cross_fitted_log_loss_t1": choice.cross_fitted_log_loss_t1}
        metrics["temperature_note"] = choice.describe()
    metrics["calibration_hurt"] = bool(metrics["val_log_loss"] > metrics["val_log_loss_uncalibrated"])
    bayes = _bayes_log_loss(val_records)
    if bayes is not None:
        metrics["val_bayes_log_loss"] = bayes
    if accelerator.is_main_process:
        _write_predictions(rd.val_predictions, val_records, probs)
        write_json(rd.metrics, metrics)
        ref = {"class prior": metrics["val_log_loss_class_prior"]}
        if bayes is not None:
            ref["best possible"] = bayes
        plots.loss_curves(rd.metrics_log, rd.plot("loss_curves.png"), reference=ref)
        plots.reliability(probs, y, rd.plot("reliability.png"))
        plots.confusion(probs, y, rd.plot("confusion_matrix.png"))
    accelerator.print(f"[done] val_log_loss {metrics['val_log_loss']:.4f} (uncalibrated "
                      f"{metrics['val_log_loss_uncalibrated']:.4f}, prior {metrics['val_log_loss_class_prior']:.4f}"
                      + (f", best possible {bayes:.4f}" if bayes is not None else "") + "), "
                      f"accuracy {metrics['val_accuracy']:.3f}, {metrics['train_pairs_per_s']:.1f} pairs/s, "
                      f"peak memory {metrics['peak_rss_mb'] / 1024:.2f} GiB"
                      + (f", {metrics['temperature_note']}" if "temperature_note" in metrics else "") + f" -> {run_dir}")
    if metrics["calibration_hurt"]:
        accelerator.print(f"[warn] calibrated val_log_loss {metrics['val_log_loss']:.4f} is worse than uncalibrated "
                          f"{metrics['val_log_loss_uncalibrated']:.4f} (T = {temperature:.3g}): "
                          f"python -m src.predict --uncalibrated predicts with T = 1")
    return metrics


def _best_model(trained, run_dir: Path, device) -> tuple[torch.nn.Module, float]:
    """The best checkpoint as the model the run's evals scored. An adapter run fills its best
    adapters + head into the model it trained: the base stays the one training used (a
    quantised run's 4/8-bit base; a reload from the base's name would give the full-precision
    base, other numbers than the evals saw) and is not loaded a second time (peak memory)."""
    from .checkpoint import best_folder, read_temperature
    from .modeling import adapters
    if adapters.is_lora_model(trained):
        folder = best_folder(run_dir)
        adapters.load_own_weights(trained, folder / "model.safetensors")
        return trained.eval(), read_temperature(folder)
    best, _, _, temperature = load_pref_checkpoint(run_dir)
    return best.to(device), temperature


def _task_figures(task: str, records: list[PairRecord], probs: np.ndarray, raw: np.ndarray, y: np.ndarray) -> dict:
    """The task's metric (binary: accuracy and 2-way log loss, calibrated and not) and per-language figures."""
    out: dict = {"task": task}
    if task == "binary":
        cal, unc = task_metrics(task, probs, y), task_metrics(task, raw, y)
        out.update(val_binary_accuracy=cal["accuracy"], val_binary_log_loss=cal["log_loss"],
                   val_binary_error=1.0 - cal["accuracy"],  # a sweep's default is val_binary_log_loss (data/tasks.py SWEEP_METRICS)
                   val_binary_accuracy_uncalibrated=unc["accuracy"], val_binary_log_loss_uncalibrated=unc["log_loss"])
    langs = per_language(task, records, probs, y)
    if langs:
        out["per_language"] = langs
    return out


def _primary(drawn: np.ndarray, source: np.ndarray | None) -> np.ndarray:
    """The drawn training rows that come from --data itself (source 0), not from --extra-data."""
    return drawn if source is None else drawn[np.asarray(source)[drawn] == 0]


def _temperature_fit(ab: np.ndarray, ba: np.ndarray | None, y: np.ndarray, temperature: float, rows: str) -> dict:
    """How the saved temperature was fitted: on which rows, how many, in which range, and
    whether the floor bound stopped it (then sharper would have fitted those rows better), and
    their label counts (a slice without ties fits a temperature that also scales the tie logit)."""
    low, high = temperature_bounds(ab, ba)
    return {"rows": rows, "n": int(len(y)), "label_counts": np.bincount(y, minlength=3).tolist(),  # ties seen?
            "bounds": [low, high],
            "at_lower_bound": bool(abs(temperature - low) <= 1e-3 * max(low, 1e-9) + 1e-4),
            "log_loss_fitted": log_loss(average_probs(ab, ba, temperature), y),
            "log_loss_t1": log_loss(average_probs(ab, ba), y)}


def _figures(held_out: bool) -> dict[str, str]:
    """What each validation number in metrics.json is: honest names for calibrated vs not, in- vs out-of-sample."""
    where = ("the selection slice held out of training (select_log_loss)" if held_out
             else "the validation rows themselves (in-sample: --select-frac 0)")
    return {
        "val_log_loss": f"calibrated; temperature fitted and checkpoint chosen on {where}"
                        + ("; held out from both" if held_out else ""),
        "val_log_loss_uncalibrated": "temperature 1; checkpoint chosen on " + where,
        "val_log_loss_in_sample_calibrated": "temperature refitted on the validation rows themselves (optimistic; "
                                             "the figure older runs reported as val_log_loss)",
        **({"select_log_loss": "in-sample: the rows the temperature was fitted and the checkpoint chosen on"}
           if held_out else {}),
    }


def _prior_log_loss(train_targets: np.ndarray, val_labels: np.ndarray) -> float:
    """The training rows' mean target distribution (soft rows count with their probabilities)."""
    prior = np.asarray(train_targets, dtype=np.float64).mean(0)
    return log_loss(np.tile(prior, (len(val_labels), 1)), val_labels)


def _bayes_log_loss(records: list[PairRecord]) -> float | None:
    """Synthetic data carries its true probabilities: the best achievable loss."""
    try:
        p = np.array([[float(r.extra[k]) for k in ("p_a", "p_b", "p_tie")] for r in records])
    except (KeyError, ValueError):
        return None
    return log_loss(p, np.array([r.label for r in records]))


def _too_few_for_folds(records: list[PairRecord], what: str, way_out: str = "fewer --folds") -> UsageError:
    """sklearn's "n_splits=K cannot be greater than the number of members in each class",
    said in terms of this data and these flags."""
    counts = np.bincount([r.label for r in records], minlength=3)
    per = ", ".join(f"{n} {name}" for n, name in zip(counts, ("A wins", "B wins", "ties")))
    return UsageError(f"{len(records)} labelled rows ({per}) are too few per class for {what}: "
                      f"use more rows (--data, --demo-rows, --max-rows) or {way_out}")


def split(cfg: PrefConfig, records: list[PairRecord]) -> tuple[list[int], list[int]]:
    """(train, val) row indices for this run's --folds/--fold or --val-frac."""
    try:
        if cfg.folds:
            return train_val_split(records, n_folds=cfg.folds, fold=cfg.fold, seed=cfg.seed)
        return train_val_split(records, val_frac=cfg.val_frac, seed=cfg.seed)
    except ValueError as e:
        if "n_splits" not in str(e):
            raise
        if cfg.folds:
            raise _too_few_for_folds(records, f"--folds {cfg.folds}") from None
        raise _too_few_for_folds(records, f"a grouped --val-frac {cfg.val_frac:g} hold-out (one fold of "
                                 f"{round(1 / cfg.val_frac)})", "a larger --val-frac") from None


def _save_config(cfg: PrefConfig, rd: RunDir) -> None:
    if is_main_process():
        save_yaml(cfg, rd.config, header=f"# python -m src.train_pref --config {rd.config}")


def run(cfg: PrefConfig, *, resume: bool = False, overwrite: bool = False, trial_hook=None) -> dict:
    """One run (or all folds) into cfg.out. A folder that holds a run is refused unless
    `overwrite` or `resume`; a start that fails (bad data, a model that does not load) leaves
    no folder behind; Ctrl-C / SIGTERM saves checkpoint/last and says how to resume."""
    check_before_work(cfg)
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    if not cfg.out:
        cfg.out = str(run_dir)
    rd = RunDir(run_dir)
    try:
        with rd.start(resume=resume, overwrite=overwrite) as started:
            run_dir.mkdir(parents=True, exist_ok=True)
            records = load_records(cfg, run_dir)
            extras = load_extra_sources(cfg)
            if not cfg.folds or cfg.fold >= 0:
                tr, va = split(cfg, records)
                return train_split(cfg, records, tr, va, run_dir, resume=resume, trial_hook=trial_hook,
                                   extras=extras, started=started)
            return run_all_folds(cfg, records, run_dir, resume=resume, extras=extras, started=started)
    except TrainingInterrupted as e:
        raise TrainingInterrupted(f"{e}; continue with: python -m src.train_pref --config {rd.config} --resume",
                                  e.step) from None


def run_all_folds(cfg: PrefConfig, records: list[PairRecord], run_dir: Path, *, resume: bool,
                  extras: TrainingSources | None = None, started: Start | None = None) -> dict:
    rd = RunDir(run_dir)
    try:
        folds = fold_ids(records, cfg.folds, cfg.seed)
    except ValueError as e:
        if "n_splits" not in str(e):
            raise
        raise _too_few_for_folds(records, f"--folds {cfg.folds}") from None
    _save_config(cfg, rd)
    oof = np.full((len(records), 3), np.nan)
    per_fold = []
    for k in range(cfg.folds):
        fold = rd.fold(k)
        if resume and fold.metrics.exists():
            m = json.loads(fold.metrics.read_text())
        else:
            tr = [i for i, f in enumerate(folds) if f != k]
            va = [i for i, f in enumerate(folds) if f == k]
            m = train_split(replace(cfg, fold=k, out=str(fold.root)), records, tr, va, fold.root, resume=resume,
                            extras=extras, started=started)
            if "stopped_at_step" in m:
                return m
        per_fold.append(m)
        pred = pd.read_csv(fold.val_predictions, dtype={"id": str})
        pos = {r.id: i for i, r in enumerate(records)}
        oof[[pos[i] for i in pred["id"]]] = pred[list(LABEL_NAMES)].to_numpy()
    hard = np.array([r.label is not None for r in records])  # validation scores hard rows only
    y = np.array([-1 if r.label is None else r.label for r in records])
    metrics = {"cv_log_loss": log_loss(oof[hard], y[hard]), "cv_accuracy": float((oof[hard].argmax(1) == y[hard]).mean()),
               "fold_val_log_loss": [m["val_log_loss"] for m in per_fold],
               "train_pairs_per_s": float(np.mean([m["train_pairs_per_s"] for m in per_fold])),
               "folds": cfg.folds, "cv_rows": int(hard.sum())}
    metrics["val_log_loss"] = metrics["cv_log_loss"]
    if cfg.task == "binary":  # the OOF rows scored as the binary task (ties are not in them)
        b = task_metrics("binary", oof[hard], y[hard])
        metrics.update(task="binary", cv_binary_accuracy=b["accuracy"], cv_binary_log_loss=b["log_loss"])
    langs = per_language(cfg.task, [r for r, h in zip(records, hard) if h], oof[hard], y[hard])
    if langs:
        metrics["per_language"] = langs
    _write_predictions(rd.oof_predictions, records, oof)
    write_json(rd.metrics, metrics)
    print(f"[cv] {cfg.folds}-fold log loss {metrics['cv_log_loss']:.4f} "
          f"(folds: {', '.join(f'{v:.4f}' for v in metrics['fold_val_log_loss'])})")
    return metrics
