"""Train the A/B/tie preference classifier.

    python -m src.train_pref --model minilm                      # synthetic demo data, offline
    python -m src.train_pref --model distilbert --data data/lmsys/train.csv --folds 5 --fold 0
    python -m src.train_pref --config configs/pref/minilm.yaml --epochs 3
    python -m src.train_pref --out runs/x --resume               # continue an interrupted run
    accelerate launch --config_file configs/accelerate/ddp.yaml -m src.train_pref --model deberta-v3-base ...

Every PrefConfig field is a flag (see --help); precedence: defaults < --config YAML < flags.
"""
from __future__ import annotations

import argparse
import sys

from .config import add_config_args, resolve
from .pref.config import PrefConfig


def parse_args(argv: list[str] | None = None) -> tuple[PrefConfig, bool]:
    ap = argparse.ArgumentParser(prog="python -m src.train_pref", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--config", help="YAML of PrefConfig fields (e.g. configs/pref/minilm.yaml or a run's config.yaml)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    ap.add_argument("--overwrite", action="store_true", help="replace the run that --out already holds")
    ap.add_argument("--plan", action="store_true", help="print the memory plan of this configuration and exit")
    ap.add_argument("--merge", metavar="RUN", help="fold a LoRA run's adapters into its base: writes RUN/merged/")
    add_config_args(ap, PrefConfig)
    args = ap.parse_args(argv)
    if args.resume and not args.out and not args.config:
        ap.error("--resume needs --out RUN_DIR (or --config RUN_DIR/config.yaml)")
    parse_args.extra = {"plan": args.plan, "merge": args.merge, "overwrite": args.overwrite}
    return resolve(PrefConfig, args.config, args), args.resume


def main(argv: list[str] | None = None) -> int:
    from .errors import UsageError, run_cli

    def body() -> None:
        try:
            cfg, resume = parse_args(argv)  # every flag checked before torch, data or model are touched
            from .models import check_name
            check_name(cfg.model)  # a typo is did-you-mean before torch/transformers/peft import (~10-60 s here)
            if parse_args.extra["plan"]:
                from .pref.modeling.memplan import plan, plan_input_from_config
                print(plan(plan_input_from_config(cfg)).text())
                return
            if parse_args.extra["merge"]:
                from .pref.checkpoint import merge_run
                print(f"[merge] -> {merge_run(parse_args.extra['merge'])}")
                return
            from .pref.train import run
            run(cfg, resume=resume, overwrite=parse_args.extra["overwrite"])
        except ValueError as e:  # config and data readers' ValueErrors are bad input too: one line, exit 2
            raise e if isinstance(e, UsageError) else UsageError(str(e)) from e

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
