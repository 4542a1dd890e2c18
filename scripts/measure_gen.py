"""Issue 21's generative comparisons on SmolLM2-135M-Instruct, side by side, as one table.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python scripts/measure_gen.py --runs /work/wt/genm_runs

#2 short-response trimming: two LoRA SFT runs identical except `short_response.enabled`
   of prepare_chat; replies to the SAME held-out prompts with the SAME sampling seed:
   mean reply length (tokens), share stopping with EOS, episodes the filter removed.
#3 pad == eos kept (`--distinct-pad false`) vs the default distinct pad token: two SFT
   runs (the distinct-pad one is #2's trimmed run); share reaching the token limit.
#5 best-of-K by a judge: K replies per prompt from the base model, the best by judge 1
   (round robin, swap-averaged P(win) + P(tie)/2); how it fares against a random one of
   the other K-1 by judge 1 (the chooser: biased up by construction) and by judge 2
   (trained on another prompt-grouped fold). A uniformly random pick scores 0.5.

Held-out prompts: the first N single-turn instructions of --prompts (default: the
unlabelled pool) that appear nowhere in --data. Each stage is skipped when its run dir
is complete, so a re-run only samples and prints (wall times of finished runs are kept in
RUNS/wall_times.json). Runs go one at a time. Results: RUNS/measure_gen.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from src.gen.best_of_n import chosen_vs_random, load_judge, win_matrix  # noqa: E402
from src.gen.sampling import sampling_config  # noqa: E402
from src.gen.side_by_side import (held_out_prompts, length_summary, paired_difference, prompt_texts,  # noqa: E402
                                  sample_replies, share_se)

MODEL = "smollm2-135m-instruct"


def timed(cmd: list[str], out: Path, walls: dict, log: Path) -> None:
    """Run `cmd` unless `out` already holds a finished run (metrics.json)."""
    if (out / "metrics.json").exists():
        print(f"[skip] {out.name}: finished ({walls.get(out.name, '?')} s wall)")
        return
    print(f"[run] {' '.join(cmd)}", flush=True)
    t0 = time.time()
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)
    walls[out.name] = round(time.time() - t0, 1)


def prepare_yaml(path: Path, args: argparse.Namespace, trim: bool) -> Path:
    """A prepare_chat YAML: the data file's preferred sides, default filters, trimming on/off."""
    d = {"seed": args.seed, "val_frac": args.val_frac,
         "inputs": [{"path": str(Path(args.data).resolve()), "max_rows": args.rows, "max_rows_pick": "sample",
                     "seed": args.seed}],
         "short_response": {"enabled": trim},
         "tokenize": {"template": "chat_template", "max_len": args.max_len}}
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def sft_cmd(args: argparse.Namespace, data: Path, out: Path, distinct_pad: bool = True) -> list[str]:
    return [sys.executable, "-m", "src.train_gen", "--model", MODEL, "--data", str(data), "--lora",
            "--objective", "sft", "--template", "chat_template", "--max-len", str(args.max_len),
            "--lora-r", "16", "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--lr", str(args.lr),
            "--seed", str(args.seed), "--val-frac", str(args.val_frac), "--sample-count", "0",
            "--distinct-pad", str(distinct_pad).lower(), "--out", str(out)]


def judge_cmd(args: argparse.Namespace, fold: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "src.train_pref", "--model", "minilm", "--data", args.data, "--folds", "5",
            "--fold", str(fold), "--max-rows", str(args.judge_rows), "--max-rows-pick", "sample",
            "--max-len", "256", "--epochs", "1", "--out", str(out)]


def removed_by_trimming(run: Path) -> tuple[int, int]:
    """(episodes the short-response filter dropped, episodes kept) from the run's data report."""
    rep = json.loads((run / "data" / "data_report.json").read_text())
    e = next((x for x in rep["filters"] if x["filter"] == "short_response"), None)  # absent when disabled
    return (e["in"] - e["out"] if e else 0), rep["totals"]["episodes_kept"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--runs", required=True, help="folder for every run dir (outside the repo)")
    ap.add_argument("--data", default="../shared/data/real_pairs_dev.csv")
    ap.add_argument("--prompts", default="../shared/data/real_pool_unlabeled.csv")
    ap.add_argument("--n-prompts", type=int, default=96, help="held-out prompts (the README's figures: 96)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--rows", type=int, default=300, help="SFT: rows of --data (whole prompt groups, seeded)")
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--val-frac", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--judge-rows", type=int, default=1000)
    ap.add_argument("--k", type=int, default=4, help="best-of-K")
    ap.add_argument("--only", default="2,3,5", help="which comparisons")
    args = ap.parse_args()
    only = set(args.only.split(","))
    runs = Path(args.runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    walls_path = runs / "wall_times.json"
    walls = json.loads(walls_path.read_text()) if walls_path.exists() else {}
    results: dict = {"budget": vars(args)}
    prompts = held_out_prompts(args.prompts, args.n_prompts, 300, exclude=prompt_texts(args.data))
    sc = sampling_config("logbook-sft", max_new_tokens=args.max_new_tokens, seed=args.seed)
    sft = {}
    try:
        if only & {"2", "3"}:
            sft["trim_on"] = (runs / "sft_trim_on", prepare_yaml(runs / "prep_trim_on.yaml", args, True), True)
        if "2" in only:
            sft["trim_off"] = (runs / "sft_trim_off", prepare_yaml(runs / "prep_trim_off.yaml", args, False), True)
        if "3" in only:
            sft["pad_eos"] = (runs / "sft_pad_eos", runs / "prep_trim_on.yaml", False)
        for name, (out, data, distinct) in sft.items():
            timed(sft_cmd(args, data, out, distinct), out, walls, runs / f"{out.name}.log")
        if "5" in only:
            for f in (0, 1):
                timed(judge_cmd(args, f, runs / f"judge_f{f}"), runs / f"judge_f{f}", walls, runs / f"judge_f{f}.log")
    finally:
        walls_path.write_text(json.dumps(walls, indent=2) + "\n")
    results["wall_s"] = walls

    rows, per_prompt = [], {}
    named = ([("base", MODEL)] if sft else []) + [(name, str(out)) for name, (out, _, _) in sft.items()]
    for name, run in named:  # the untrained model first: where both arms started
        t0 = time.time()
        gens = sample_replies(run, prompts, sc)
        s = length_summary(gens, args.max_new_tokens)
        s["sample_wall_s"] = round(time.time() - t0, 1)
        per_prompt[name] = ([float(len(g.token_ids)) for g in gens], [float(g.stop_reason == "eos") for g in gens])
        train = "untrained | - | - | -"
        if name != "base":
            out = Path(run)
            m = json.loads((out / "metrics.json").read_text())
            s.update(steps=m.get("steps"), n_train=m["n_train"], eval_perplexity=m["eval_perplexity"],
                     initial_eval_perplexity=m["initial_eval_perplexity"])
            s["removed_by_trimming"], s["episodes_kept"] = removed_by_trimming(out)
            train = (f"{s['n_train']} | {s['steps']} | {s['removed_by_trimming']} | "
                     f"{s['initial_eval_perplexity']:.2f} -> {s['eval_perplexity']:.2f}")
        results[name] = {**s, "replies": [{"prompt": p, "reply": g.text, "stop_reason": g.stop_reason,
                                           "new_tokens": len(g.token_ids)} for p, g in zip(prompts, gens)]}
        n = len(prompts)
        rows.append(f"| {name} | {train} | {s['sample_reply_tokens_mean']:.1f} +- {s['sample_reply_tokens_se']:.1f} | "
                    f"{s['sample_eos_share']:.3f} +- {share_se(s['sample_eos_share'], n):.3f} | "
                    f"{s['sample_length_share']:.3f} | {s['sample_repeat_share']:.3f} |")
    if rows:
        print(f"\n{len(prompts)} held-out prompts, logbook-sft sampling, seed {args.seed}, "
              f"max {args.max_new_tokens} new tokens")
        print("| run | train episodes | steps | removed by trimming | val ppl before -> after | reply tokens (mean +- se) "
              "| EOS share +- se | at length limit | n-gram run |")
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
        ref = per_prompt.get("trim_on")
        for name in ("trim_off", "pad_eos"):  # paired by prompt: each differs from trim_on in one thing
            if ref and name in per_prompt:
                (dl, dl_se), (de, de_se) = (paired_difference(per_prompt[name][k], ref[k]) for k in (0, 1))
                results[f"{name}_minus_trim_on"] = {"reply_tokens": [dl, dl_se], "eos_share": [de, de_se]}
                print(f"{name} - trim_on, paired by prompt: reply tokens {dl:+.1f} +- {dl_se:.1f}, "
                      f"EOS share {de:+.3f} +- {de_se:.3f}")

    if "5" in only:
        t0 = time.time()
        gens = sample_replies(MODEL, [p for p in prompts for _ in range(args.k)], sc)
        replies = [[g.text for g in gens[i * args.k:(i + 1) * args.k]] for i in range(len(prompts))]
        t_sample = round(time.time() - t0, 1)
        judges = [load_judge(runs / f"judge_f{f}", device="cpu") for f in (0, 1)]
        mats = [[win_matrix(j, [p], r, device="cpu") for p, r in zip(prompts, replies)] for j in judges]
        by_own, by_other = chosen_vs_random(mats[0], mats[0]), chosen_vs_random(mats[0], mats[1])
        results["best_of_k"] = {"by_chooser": by_own, "by_independent": by_other, "sample_wall_s": t_sample,
                                "wall_s": round(time.time() - t0, 1), "replies": replies,
                                "win_matrices": [[w.tolist() for w in ms] for ms in mats],
                                "judge_val_log_loss": [json.loads((runs / f"judge_f{f}" / "metrics.json").read_text())
                                                       .get("val_log_loss") for f in (0, 1)]}
        print(f"\nbest-of-{args.k} ({MODEL}, {len(prompts)} prompts): chosen by judge 1 vs a random other reply")
        print("| scored by | chosen's mean win share (+- se) | chosen wins outright (+- se) | random pick |")
        print("|---|---|---|---|")
        for label, r in (("judge 1 (the chooser)", by_own), ("judge 2 (other fold)", by_other)):
            print(f"| {label} | {r['chosen_score']:.3f} +- {r['chosen_score_se']:.3f} | "
                  f"{r['chosen_wins']:.3f} +- {r['chosen_wins_se']:.3f} | 0.500 |")
    (runs / "measure_gen.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
