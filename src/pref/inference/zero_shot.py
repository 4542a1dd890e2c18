"""An untrained LM-head judge as a run: `python -m src.predict --zero-shot --model NAME`.

    run = zero_shot_run("smollm2-135m-instruct", calibrate=labelled_records, scored=test_records)
    pred = predict_records(run, test_records)

The base decoder reads the judge prompt (pref/inputs/judge.py); the LM head's logits of
the answer tokens A / B / tie at its last position, averaged over both A/B orders, are
the probabilities (pref/modeling/lm_head.py). Nothing trains. One temperature is fitted
on `calibrate`, labelled rows that must share neither an id nor a prompt with the
scored rows (a temperature fitted on the rows it is scored on flatters the score); with
no calibration rows T = 1. The class prior (for rows predict cannot parse) is the
calibration rows' add-one smoothed label counts, uniform without them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.records import PairRecord
from ...errors import UsageError
from ..config import PrefConfig
from .calibration import fit_temperature
from .ensemble import UNIFORM, LoadedRun

DEFAULT_MAX_LEN = 1024


def check_disjoint(calibrate: list[PairRecord], scored: list[PairRecord], where: str = "--calibrate-on") -> None:
    """One line when a calibration row is also scored (same id or same prompt)."""
    ids = {r.id for r in scored if r.id is not None}
    prompts = {tuple(r.prompt) for r in scored}
    for k, r in enumerate(calibrate):
        if r.id is not None and r.id in ids:
            raise UsageError(f"{where}: row {k + 1} (id {r.id}) is also a row to predict: the temperature must be "
                             "fitted on rows that are never scored")
        if tuple(r.prompt) in prompts:
            raise UsageError(f"{where}: row {k + 1} (id {r.id}) shares its prompt with a row to predict: the "
                             "temperature must be fitted on rows (and prompts) that are never scored")


def zero_shot_model(name: str, *, max_len: int = DEFAULT_MAX_LEN, prompt_budget: int = 256, device: str = "cpu",
                    attn: str | None = None, log=print):
    """(PrefModel with the LM head's answer rows, tokenizer, cfg) for base decoder `name`."""
    from ..checkpoint import build_pref_model
    from ..modeling.backbone import load_backbone
    from ..modeling.lm_head import check_decoder, init_answer_head
    from ..registry import encoder_config
    from ...models.tiny import is_tiny_decoder
    cfg = PrefConfig(model=name, arch="cross", head="lm", max_len=max_len, prompt_budget=prompt_budget,
                     style_features=False, swap_aug=True, attn=attn or "")
    if not is_tiny_decoder(name):  # an encoder is refused from its config, before any weights load
        check_decoder(encoder_config(name), name)
    b = load_backbone(name, device=device, attn=attn, log=log)
    model = build_pref_model(b.model, cfg)
    init_answer_head(model, b.path, b.tokenizer, log=log)
    return model.eval(), b.tokenizer, cfg


def zero_shot_run(name: str, *, calibrate: list[PairRecord] | None = None, scored: list[PairRecord] | None = None,
                  max_len: int = DEFAULT_MAX_LEN, device: str = "auto", precision: str = "auto",
                  log=print, **kw) -> LoadedRun:
    """A LoadedRun (predict_records / predict_file take it like a trained run) whose temperature
    is fitted on `calibrate` (labelled, disjoint from `scored`)."""
    from .predict import predict_on_devices, resolve_devices
    from ...device import choose_precision
    from ..inputs.encode import encode_pairs
    calibrate = [r for r in (calibrate or []) if r.label is not None]
    if scored is not None and calibrate:
        check_disjoint(calibrate, scored)
    model, tok, cfg = zero_shot_model(name, max_len=max_len, log=log, **kw)
    temperature, prior, source = 1.0, UNIFORM.copy(), "uniform (zero-shot, no calibration rows)"
    if calibrate:
        y = np.array([r.label for r in calibrate])
        enc = encode_pairs(calibrate, tok, arch="cross", max_len=max_len, prompt_budget=cfg.prompt_budget,
                           keep=cfg.keep, both_orders=True, judge=True)
        devices = resolve_devices(device, data_parallel=False)
        prec, _ = choose_precision(devices[0], precision, model=model.encoder.config.model_type)
        out = predict_on_devices(model, enc, devices=devices[:1], precision=prec, budget=cfg.eval_max_tokens)
        temperature = fit_temperature(out.ab, out.ba, y)
        counts = np.bincount(y, minlength=3).astype(float)
        prior = (counts + 1.0) / (counts.sum() + 3.0)
        source = f"zero-shot calibration rows' labels {counts.astype(int).tolist()}"
        if log:
            log(f"[zero-shot] temperature {temperature:.3f} fitted on {len(calibrate)} labelled calibration rows "
                "(none of them scored)")
    return LoadedRun(Path(f"zero-shot:{name}"), model, tok, cfg, float(temperature), prior, source)
