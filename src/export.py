"""Export trained runs as a self-contained folder to upload as a Kaggle dataset.

    python -m src.export --run runs/minilm-x --to export/minilm-x --kaggle-user me
    python -m src.export --run runs/cv5 --to export/cv5          # a K-fold run dir: every fold, equal weights
    python -m src.export --run runs/gemma-lora --to export/gl --base-dir /kaggle/input/gemma-2/transformers/gemma-2-9b-it/2
    kaggle datasets create -p export/minilm-x --dir-mode zip

The folder holds the weights, tokenizer, config, calibration and class prior of
each run, the inference code (prefpipe_src/), prefpipe_export.json and
dataset-metadata.json; notebooks/kaggle_inference.ipynb predicts from it offline.
An adapter (LoRA) run ships its adapters + head and its base model folder under
bases/ (or, with --base-dir, the path of a Kaggle model the notebook attaches);
it needs peft (listed in prefpipe_export.json "requires").
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m src.export", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--run", action="append", required=True, metavar="DIR",
                    help="run dir, checkpoint folder or K-fold run dir (repeat for an ensemble)")
    ap.add_argument("--to", required=True, metavar="OUTDIR", help="folder to create")
    ap.add_argument("--weights", help="comma-separated ensemble weights, one per run (default equal)")
    ap.add_argument("--kaggle-user", help="Kaggle username for the dataset id [default: $KAGGLE_USERNAME, "
                                          "else a placeholder to edit]")
    ap.add_argument("--title", help="dataset title, 6-50 characters [default: from the model and run]")
    ap.add_argument("--slug", help="dataset slug [default: from the title]")
    ap.add_argument("--license", default="other", help="dataset license name as Kaggle spells it "
                                                       "(e.g. CC0-1.0, other) [default: other]")
    ap.add_argument("--base-dir", metavar="PATH",
                    help="adapter runs: do not copy the base model; the notebook loads it from PATH (e.g. a Kaggle "
                         "model attached to it, /kaggle/input/...) [default: copy the base into OUTDIR/bases/]")
    ap.add_argument("--force", action="store_true", help="replace OUTDIR if it exists")
    ap.add_argument("--no-verify", dest="verify", action="store_false",
                    help="skip loading the export in a fresh interpreter")
    args = ap.parse_args(argv)
    weights = None
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",") if w.strip()]
        except ValueError:
            ap.error(f"--weights must be comma-separated numbers, got {args.weights!r}")
    from .errors import UsageError, run_cli
    from .pref.export import export_runs

    def body() -> None:
        try:
            export_runs(args.run, args.to, weights=weights, kaggle_user=args.kaggle_user, title=args.title,
                        slug=args.slug, license_name=args.license, force=args.force, verify=args.verify,
                        base_dir=args.base_dir)
        except (FileExistsError, ValueError, RuntimeError) as e:  # a taken folder, bad weights, a failed check
            raise e if isinstance(e, UsageError) else UsageError(str(e)) from e

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
