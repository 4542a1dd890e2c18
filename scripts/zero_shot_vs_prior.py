"""Zero-shot LM-head judge vs the class prior on prompt-grouped slices of a labelled file.

    python scripts/zero_shot_vs_prior.py --model smollm2-135m-instruct --data ../shared/data/real_pairs_dev.csv \
        --n 200 --calib 100 --max-len 256 --max-tokens 2048      # the README's figures

Prompt groups are shuffled with --seed; the first groups make the SCORED rows (about --n),
the next ones the CALIBRATION rows (about --calib): the temperature and the class prior
are fitted on the calibration rows only, never on a scored row or prompt. Printed: log
loss on the scored rows uncalibrated (T = 1) and calibrated, the class prior's log loss
(calibration-slice prior, and the prior of every labelled row outside the scored slice),
accuracy, accuracy on non-tie rows, and the wall time of the model passes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.arena import read_pairs  # noqa: E402
from src.device import choose_precision  # noqa: E402
from src.pref.inference.calibration import average_probs, fit_temperature, floor_probs, log_loss  # noqa: E402
from src.pref.inference.predict import predict_on_devices  # noqa: E402
from src.pref.inference.zero_shot import check_disjoint, zero_shot_model  # noqa: E402
from src.pref.inputs.encode import encode_pairs  # noqa: E402


def grouped_slices(records, n: int, calib: int, seed: int):
    """(scored, calibration, rest): whole prompt groups in a seeded order."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(tuple(r.prompt), []).append(i)
    order = np.random.default_rng(seed).permutation(len(groups))
    keys = list(groups)
    scored, cal = [], []
    for g in order:
        target = scored if len(scored) < n else cal if len(cal) < calib else None
        if target is None:
            break
        target += groups[keys[g]]
    taken = set(scored)
    return ([records[i] for i in scored], [records[i] for i in cal],
            [r for i, r in enumerate(records) if i not in taken])


def prior_of(records) -> np.ndarray:
    counts = np.bincount([r.label for r in records], minlength=3).astype(float)
    return (counts + 1.0) / (counts.sum() + 3.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--calib", type=int, default=150)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=4096, help="padded tokens per batch")
    ap.add_argument("--precision", default="auto", help="auto (bf16 where the CPU/GPU has it natively) | fp32 | bf16")
    args = ap.parse_args()
    records = [r for r in read_pairs(args.data).records if r.label is not None]
    scored, cal, rest = grouped_slices(records, args.n, args.calib, args.seed)
    check_disjoint(cal, scored)
    t0 = time.perf_counter()
    model, tok, cfg = zero_shot_model(args.model, max_len=args.max_len)
    t_load = time.perf_counter() - t0
    precision, why = choose_precision("cpu", args.precision, model=model.encoder.config.model_type)

    def logits(recs):
        enc = encode_pairs(recs, tok, arch="cross", max_len=args.max_len, prompt_budget=cfg.prompt_budget,
                           both_orders=True, judge=True)
        out = predict_on_devices(model, enc, devices=["cpu"], precision=precision, budget=args.max_tokens,
                                 progress=True)
        return out.ab, out.ba, enc.labels, out.real_tokens

    t1 = time.perf_counter()
    cab, cba, cy, ctok = logits(cal)
    t2 = time.perf_counter()
    sab, sba, sy, stok = logits(scored)
    t3 = time.perf_counter()
    temperature = fit_temperature(cab, cba, cy)
    raw = floor_probs(average_probs(sab, sba))
    cal_p = floor_probs(average_probs(sab, sba, temperature))
    non_tie = sy != 2
    res = {
        "model": args.model, "max_len": args.max_len, "seed": args.seed, "precision": f"{precision} ({why})",
        "scored_rows": len(scored), "calibration_rows": len(cal),
        "scored_prompts": len({tuple(r.prompt) for r in scored}),
        "scored_label_counts": np.bincount(sy, minlength=3).tolist(),
        "temperature": temperature,
        "log_loss_uncalibrated": log_loss(raw, sy), "log_loss_calibrated": log_loss(cal_p, sy),
        "log_loss_prior_calibration_slice": log_loss(np.tile(prior_of(cal), (len(sy), 1)), sy),
        "log_loss_prior_all_unscored_rows": log_loss(np.tile(prior_of(rest), (len(sy), 1)), sy),
        "accuracy": float((cal_p.argmax(1) == sy).mean()),
        "accuracy_non_tie_a_vs_b": float((raw[non_tie][:, :2].argmax(1) == sy[non_tie]).mean()),
        "mean_p_tie_uncalibrated": float(raw[:, 2].mean()),
        "seconds_load": t_load, "seconds_calibration_pass": t2 - t1, "seconds_scored_pass": t3 - t2,
        "tokens_scored_pass": stok, "tokens_calibration_pass": ctok,
    }
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
