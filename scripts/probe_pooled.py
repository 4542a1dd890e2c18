"""Linear probe of a backbone's frozen pooled states, out of fold, against the class prior
(src/pref/probe.py): a few minutes that say whether a backbone knows anything about
these pairs before a LoRA run spends an hour on it.

    python scripts/probe_pooled.py --model gemma3-270m --arch cross --data ../shared/data/real_pairs_dev.csv \
        --max-rows 600 --max-rows-pick sample --folds 5 --max-len 256      # the README's figures

Every train_pref flag that shapes the input (--model, --arch, --max-len, --prompt-budget,
--head lm's judge prompt, --max-rows ...) means what it means there; --folds gives the
prompt-grouped folds, and every row is scored by the probe of the fold that held it out.
Printed per --C: out-of-fold log loss (all rows and fold --fold), the same rows' class
prior, accuracy on non-tie rows. Several --C are several probes scored on the same rows:
picking the best of them is a choice made on the scored rows, and the README says so.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--C", default="0.0003,0.001,0.01", help="inverse L2 strengths, comma-separated")
    ap.add_argument("--with-style", action="store_true", help="append the style features to the pooled state")
    own, rest = ap.parse_known_args(argv)
    from src.train_pref import parse_args
    cfg, _ = parse_args(rest)
    if not cfg.folds or cfg.folds < 2:
        raise SystemExit("probe_pooled: give --folds K (K >= 2): every row is scored out of fold")
    from src.data.split import fold_ids
    from src.device import choose_precision, inference_autocast, pick_device
    from src.pref.inputs.encode import encode_pairs
    from src.pref.probe import non_tie_accuracy, pooled_states, probe_out_of_fold
    from src.pref.train import build, load_records
    with tempfile.TemporaryDirectory() as tmp:
        records = load_records(cfg, Path(tmp))
    ids = fold_ids(records, cfg.folds, cfg.seed)  # the folds train_pref's --folds/--fold pick from
    folds = [np.flatnonzero(ids == f) for f in range(cfg.folds)]
    shown = cfg.fold if cfg.fold >= 0 else 0
    device = pick_device(cfg.device)
    precision, _ = choose_precision(device, cfg.precision, model=cfg.model)
    t0 = time.time()
    model, tok = build(replace(cfg, lora=False, gradient_checkpointing=False), device, precision, log=None)
    model.to(device).eval()
    enc = encode_pairs(records, tok, arch=cfg.arch, max_len=cfg.max_len, prompt_budget=cfg.prompt_budget,
                       keep=cfg.keep, judge=cfg.head == "lm")
    with inference_autocast(device, precision):
        pooled = pooled_states(model, enc, device=device, progress=True)
    took = time.time() - t0
    labels = pooled.labels
    print(f"probe: {cfg.model} {cfg.arch} max_len {cfg.max_len}, {len(records)} rows "
          f"(labels A/B/tie {np.bincount(labels, minlength=3).tolist()}), {cfg.folds} prompt-grouped folds, "
          f"pooled dim {pooled.ab.shape[1]}{' + style' if own.with_style else ''}, {device} {precision}, "
          f"load + pool {took:.0f} s")
    for c in [float(x) for x in own.C.split(",")]:
        r = probe_out_of_fold(pooled, folds, c=c, style=own.with_style)
        diff, se = r.paired_vs_prior()
        print(f"  C={c:g}: out-of-fold log loss {r.log_loss():.4f} (class prior {r.prior_log_loss():.4f}, "
              f"paired {diff:+.4f} +- {se:.4f}); "
              f"fold {shown} {r.log_loss(folds[shown]):.4f} (prior {r.prior_log_loss(folds[shown]):.4f}); "
              f"accuracy on non-tie rows {non_tie_accuracy(r.oof, labels):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
