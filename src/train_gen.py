"""Fine-tune a causal LM on chat data (SFT on responses, or plain CLM), LoRA or full.

    python -m src.train_gen --model tiny --objective sft               # synthetic chats, offline, ~1 min on CPU
    python -m src.train_gen --config configs/gen/tiny_clm.yaml
    python -m src.train_gen --model EleutherAI/gpt-j-6b --data data/chat/logs --lora --out runs/gptj
    python -m src.train_gen --out runs/gptj --resume                     # continue after a crash
    python -m src.train_gen --out runs/gptj --resume --skip-batches 1    # ... stepping over a batch that crashes it
    python -m src.train_gen --config C.yaml --out runs/x --parts 4 --part 1   # then --part 2, 3, 4
    python -m src.train_gen --merge runs/gptj                            # LoRA folded into the base: runs/gptj/merged
    accelerate launch --config_file configs/accelerate/ddp.yaml -m src.train_gen --config ...

--data: a prepared dataset folder (python -m src.gen.prepare_chat), a prepare_chat YAML, or a
raw chat file (.jsonl/.json/.csv) prepared on the fly into RUN/data. Every GenConfig field is a
flag (see --help); precedence: defaults < --config YAML < flags.
"""
from __future__ import annotations

import argparse
import sys

from .config import add_config_args, resolve
from .gen.config import GenConfig


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, GenConfig | None]:
    ap = argparse.ArgumentParser(prog="python -m src.train_gen", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--config", help="YAML of GenConfig fields (configs/gen/tiny_sft.yaml or a run's config.yaml)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    ap.add_argument("--overwrite", action="store_true", help="replace the run that --out already holds (with "
                                                            "--merge: the merged folder)")
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--lora", dest="finetune", action="store_const", const="lora", help="LoRA adapters (default)")
    kind.add_argument("--full", dest="finetune", action="store_const", const="full", help="full fine-tuning")
    ap.add_argument("--merge", metavar="RUN", help="merge RUN's LoRA checkpoint into its base (writes --out or "
                                                   "RUN/merged) and exit")
    add_config_args(ap, GenConfig)
    args = ap.parse_args(argv)
    if args.merge:
        return args, None
    if args.resume and not args.out and not args.config:
        ap.error("--resume needs --out RUN_DIR (or --config RUN_DIR/config.yaml)")
    return args, resolve(GenConfig, args.config, args)


def main(argv: list[str] | None = None) -> int:
    from .errors import UsageError, run_cli

    def body() -> None:
        try:
            args, cfg = parse_args(argv)
        except ValueError as e:  # a config value out of range, an unknown YAML field
            raise UsageError(str(e)) from None
        from .models import check_name
        if cfg is not None:
            check_name(cfg.model)  # a typo ('tiy') is did-you-mean before torch/transformers/peft import
        from .gen.train import merge, run
        if cfg is None:
            merge(args.merge, args.out, overwrite=args.overwrite)
        else:
            run(cfg, resume=args.resume, overwrite=args.overwrite)
    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
