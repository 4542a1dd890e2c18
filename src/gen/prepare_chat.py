"""Raw chat files -> cleaned, tokenised dataset for the generative stages.

    python -m src.gen.prepare_chat --config configs/gen/demo.yaml --out data/chat/demo

read every input (quarantining bad rows) -> cleaning filters (src/data/filters.py)
-> validation split grouped by source id (src/gen/dataset.py) -> encode
(src/gen/encode.py) -> `OUT/{train,val}.safetensors` + `meta.json` + `tokenizer/` +
`config.yaml` + `data_report.json` (per-input and per-filter counts), written
atomically. Load it with `src.gen.dataset.load_tokenized(OUT)`. It lives in the
generative stage (not in src/data) because it tokenises: src/data yields records only.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass

import yaml

from ..config import add_config_args, knob, resolve, to_dict
from ..data.chat import input_spec, read_chat
from ..data.filters import DEFAULT_ORDER, FILTERS, apply_filters, filter_config
from ..data.rows import DEFAULT_MAX_CELL_CHARS, DataError
from ..engine.rundir import CONFIG
from ..errors import UsageError, run_cli
from .collate import pack_examples
from .dataset import save_tokenized, split_by_group
from .encode import tokenize_episodes
from .model import ensure_pad_token
from .render import config_dict, tokenize_config, uses_chat_template

_F = "config block of the filter (see its dataclass in src/data/filters.py)"


@dataclass
class PrepareChatConfig:
    seed: int = knob(0, "seed of every filter coin and of the split")
    inputs: list[dict] = knob([], "raw files: {path, format, name, source, tie_policy, pair_mode, relations, ...} "
                                  "(see InputSpec in src/data/chat.py)")
    synthetic_episodes: int = knob(0, "also generate this many synthetic role-play episodes (plus the other demo "
                                      "shapes) and read them like files: the demo runs with no input files")
    filter_order: list[str] = knob(DEFAULT_ORDER, "filters in the order they run")
    source_drop: dict = knob({}, _F)
    junk: dict = knob({}, _F)
    repeats: dict = knob({}, _F)
    script: dict = knob({}, _F)
    markup: dict = knob({}, _F)
    names: dict = knob({}, _F)
    dedup: dict = knob({}, _F)
    short_response: dict = knob({}, _F)
    keywords: dict = knob({}, _F)
    source_cap: dict = knob({}, _F)
    val_frac: float = knob(0.05, "share of episode groups held out for validation")
    tokenizer: str = knob("tiny", "'tiny' (built in-process) or a local path / cached hub id for AutoTokenizer")
    tokenize: dict = knob({}, "TokenizeConfig fields (src/gen/render.py): template, labels, max_len, ...")
    max_cell_chars: int = knob(DEFAULT_MAX_CELL_CHARS, "quarantine lines longer than this")

    def __post_init__(self) -> None:
        # Validate every block now: a typo in a filter option fails before any work.
        self.filter_configs = {name: filter_config(name, getattr(self, name)) for name in FILTERS}
        self.input_specs = [input_spec({"seed": self.seed, **i}) for i in self.inputs]
        self.tok_cfg = tokenize_config(self.tokenize)
        if not self.inputs and self.synthetic_episodes <= 0:
            raise UsageError("no inputs: list files under `inputs` or set `synthetic_episodes`")


def read_all(cfg: PrepareChatConfig, synthetic_dir: str | None) -> tuple[list, list[dict]]:
    specs = list(cfg.input_specs)
    if cfg.synthetic_episodes > 0:
        from ..data.chat_synthetic import write_demo_inputs
        specs += [input_spec({"seed": cfg.seed, **s})
                  for s in write_demo_inputs(synthetic_dir, cfg.synthetic_episodes, cfg.seed)]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise DataError(f"two inputs share a name ({', '.join(sorted(n for n in set(names) if names.count(n) > 1))}): "
                        "episode ids would collide; set `name` on each")
    episodes, reports = [], []
    for spec in specs:
        result = read_chat(spec, max_cell_chars=cfg.max_cell_chars)
        rep = result.report(max_listed=100)
        if synthetic_dir and rep["file"].startswith(synthetic_dir):
            rep["file"] = "<synthetic>" + rep["file"][len(synthetic_dir):]
        reports.append(rep)
        episodes += result.episodes
    return episodes, reports


def prepare(cfg: PrepareChatConfig, out: str, overwrite: bool = False) -> dict:
    """Run the whole preparation; returns the data report (also written to OUT)."""
    from ..models.names import load_tokenizer
    with tempfile.TemporaryDirectory() as syn:
        episodes, input_reports = read_all(cfg, syn)
    kept, filter_entries = apply_filters(episodes, cfg.filter_configs, cfg.seed, cfg.filter_order)
    train_eps, val_eps = split_by_group(kept, cfg.val_frac, cfg.seed)
    tok = load_tokenizer(cfg.tokenizer, chat_template=cfg.tok_cfg.template == "chat_template")
    pad = ensure_pad_token(None, tok, cfg.tok_cfg.pad_token, distinct=cfg.tok_cfg.distinct_pad)
    train, train_rep = tokenize_episodes(train_eps, tok, cfg.tok_cfg)
    val, val_rep = tokenize_episodes(val_eps, tok, cfg.tok_cfg)
    if cfg.tok_cfg.packing:  # validation stays unpacked: per-example loss, comparable across runs
        n_before = len(train)
        train = pack_examples(train, cfg.tok_cfg.max_len)
        train_rep["packed_rows"] = {"examples": n_before, "rows": len(train)}
    report = {
        "inputs": input_reports,
        "read": {k: sum(r[k] for r in input_reports) for k in ("rows", "ok", "quarantined", "episodes")},
        "filters": filter_entries,
        "split": {"train_episodes": len(train_eps), "val_episodes": len(val_eps),
                  "val_groups": len({e.group_id for e in val_eps}), "train_groups": len({e.group_id for e in train_eps})},
        "tokenize": {"train": train_rep, "val": val_rep},
        "pad": pad,
        "totals": {"episodes_read": len(episodes), "episodes_kept": len(kept), "train_rows": len(train),
                   "val_rows": len(val)},
    }
    meta = {"tokenizer": cfg.tokenizer, "pad_token_id": pad["pad_token_id"], "eos_token_id": pad["eos_token_id"],
            "tokenizer_len": len(tok), "embedding_multiple_of": 64,
            "chat_template": uses_chat_template(tok, cfg.tok_cfg), "tokenize": config_dict(cfg.tok_cfg),
            "seed": cfg.seed}
    config_text = "# resolved by src.gen.prepare_chat\n" + yaml.safe_dump(to_dict(cfg), sort_keys=False)
    save_tokenized(out, {"train": train, "val": val}, tok, meta, report, {CONFIG: config_text}, overwrite)
    return report


def summary(report: dict) -> dict:
    return {"read": report["read"], "kept": report["totals"]["episodes_kept"],
            "filters": {e["filter"]: {"dropped": e["in"] - e["out"], "modified": e["modified"]}
                        for e in report["filters"]},
            "train_rows": report["totals"]["train_rows"], "val_rows": report["totals"]["val_rows"],
            "tokenize_dropped": {k: v["dropped"] for k, v in report["tokenize"].items()},
            "pad_token_id": report["pad"]["pad_token_id"], "eos_token_id": report["pad"]["eos_token_id"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="YAML file (configs/gen/*.yaml)")
    ap.add_argument("--out", required=True, help="output folder (written atomically)")
    ap.add_argument("--overwrite", action="store_true", help="replace OUT when it exists")
    add_config_args(ap, PrepareChatConfig)
    args = ap.parse_args(argv)

    def body() -> None:
        try:
            cfg = resolve(PrepareChatConfig, args.config, args)
            report = prepare(cfg, args.out, args.overwrite)
        except (ValueError, FileExistsError) as e:  # a bad config value or template; OUT exists without --overwrite
            if isinstance(e, UsageError):
                raise
            raise UsageError(str(e)) from None
        print(json.dumps(summary(report), indent=2))
    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
