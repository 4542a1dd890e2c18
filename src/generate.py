"""Sample replies from a fine-tuned (or any) causal LM: one prompt, or an interactive chat.

    python -m src.generate --run runs/tiny_sft --prompt "Tell me about the old map."
    python -m src.generate --run runs/gptj --preset logbook-1 --chat --bot-name Aiko --persona "Aiko is a shy baker."
    python -m src.generate --run runs/gptj/merged --preset logbook-sft --temperature 0.7 --prompt "Hi!"
    python -m src.generate --run EleutherAI/pythia-160m --raw --prompt "Once upon a time"

--run: a train_gen run dir (its checkpoint/best), a checkpoint or merged folder, any HF causal
LM folder/id, or 'tiny'. Prompts are rendered with the run's own template (persona, scenario,
"User: ..." lines, ending with "Bot: "); the reply stops at EOS or a stop string (by default the
user's name prefix, e.g. "\\nYou:"). Presets: greedy, logbook-1, logbook-sft, typical, contrastive
(the last only where the installed transformers still has contrastive search).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .config import add_config_args, resolve


def build_parser() -> argparse.ArgumentParser:
    from .gen.sampling import PRESETS, SamplingConfig
    ap = argparse.ArgumentParser(prog="python -m src.generate", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--run", required=True, help="run dir, checkpoint, merged folder, HF model id/folder, or 'tiny'")
    ap.add_argument("--preset", choices=list(PRESETS), default="logbook-sft", help="named sampling settings")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--prompt", help="one user message (or raw text with --raw)")
    mode.add_argument("--chat", action="store_true", help="interactive chat on stdin (/reset, /quit)")
    ap.add_argument("--raw", action="store_true", help="continue --prompt as plain text, no chat template")
    ap.add_argument("--persona", default="", help="the bot's persona")
    ap.add_argument("--scenario", default="", help="the scene")
    ap.add_argument("--bot-name", default="Bot")
    ap.add_argument("--user-name", default="You")
    ap.add_argument("--stop", action="append", default=None, help="extra stop string (repeatable)")
    ap.add_argument("--max-context", type=int, default=0, help="prompt + reply tokens (0 = the model's limit)")
    ap.add_argument("--num-samples", type=int, default=1, help="replies to --prompt (seeds seed, seed+1, ...)")
    ap.add_argument("--judge", help="best-of-n: a train_pref run that scores the --num-samples replies against "
                                    "each other; prints the best (with --json: all, each with its judge_score)")
    ap.add_argument("--reference", help="best-of-n: score each reply against this reply instead of the others")
    ap.add_argument("--samples-out", help="best-of-n: also write every reply with its score to this JSONL file")
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "xpu", "mps", "cpu"])
    ap.add_argument("--json", action="store_true", help="print one JSON object per reply")
    ap.add_argument("--trust-remote-code", action="store_true", help="allow model repos with custom code")
    add_config_args(ap, SamplingConfig)  # --temperature, --top-p, --top-k, --typical-p, ... override the preset
    return ap


def load(args: argparse.Namespace):
    import torch

    from .device import pick_device
    from .gen.checkpoint import load_for_generation
    device = pick_device(args.device)
    dtype = torch.bfloat16 if device in ("cuda", "xpu") else torch.float32
    model, tok, meta = load_for_generation(args.run, dtype=dtype, trust_remote_code=args.trust_remote_code)
    return model.to(device).eval(), tok, meta


def main(argv: list[str] | None = None) -> int:
    from .gen.sampling import (ChatSession, SamplingConfig, SamplingError, check_supported, context_length, generate,
                               sampling_config)
    from .errors import UsageError, run_cli
    from .gen.render import tokenize_config
    ap = build_parser()
    args = ap.parse_args(argv)
    loaded: list = []
    loaded_judge: list = []

    def load_all() -> None:
        if args.num_samples < 1:
            raise UsageError(f"--num-samples must be at least 1, got {args.num_samples}")
        if (args.judge or args.reference or args.samples_out) and (args.prompt is None or args.raw):
            raise UsageError("--judge/--reference/--samples-out need a chat --prompt (not --chat or --raw)")
        if (args.reference or args.samples_out) and not args.judge:
            raise UsageError("--reference/--samples-out need --judge RUN")
        if args.judge and args.num_samples < 2 and not args.reference:
            raise UsageError("--judge compares replies: --num-samples 2 or more (or a --reference reply)")
        try:
            if args.judge:  # refused before the generator loads when it is not a usable judge
                from .gen.best_of_n import load_judge
                loaded_judge.append(load_judge(args.judge, device=args.device))
            overrides = dataclasses.asdict(resolve(SamplingConfig, None, args))
            explicit = {k: v for k, v in overrides.items() if getattr(args, k, None) is not None}
            sc = sampling_config(args.preset, **explicit)
            check_supported(sc)  # before loading a large model
            loaded.extend([sc, *load(args)])
        except (ValueError, SamplingError, OSError) as e:  # bad settings; a model that cannot be loaded
            if isinstance(e, UsageError):
                raise
            raise UsageError(str(e)) from None
    rc = run_cli(load_all)
    if rc:
        return rc
    sc, model, tok, meta = loaded
    limit = args.max_context or context_length(model, tok)
    session = ChatSession(tok, tokenize_config(meta.get("tokenize")), persona=args.persona, scenario=args.scenario,
                          bot_name=args.bot_name, user_name=args.user_name, max_context=limit)

    def show(g, prompt_text: str) -> None:
        if args.json:
            print(json.dumps({"prompt": prompt_text, "reply": g.text, "stop_reason": g.stop_reason,
                              "new_tokens": len(g.token_ids)}, ensure_ascii=False))
        else:
            print(g.text if args.raw or not args.chat else f"{args.bot_name}: {g.text}")
        sys.stdout.flush()

    if args.judge:
        return run_cli(lambda: best_of_n(args, model, tok, session, sc, loaded_judge[0]))
    if args.prompt is not None:
        for k in range(args.num_samples):
            sk = dataclasses.replace(sc, seed=sc.seed + k)
            if args.raw:
                ids = tok(args.prompt, add_special_tokens=True)["input_ids"][-max(8, limit - sk.max_new_tokens):]
                g = generate(model, tok, ids, sk)
            else:
                session.history = []
                g = session.reply(model, args.prompt, sk)
            show(g, args.prompt)
        return 0

    print(f"[chat] {args.run} ({meta.get('finetune', '?')}), preset {args.preset}, context {limit} tokens. "
          "/reset clears the history, /quit or an empty line ends.", file=sys.stderr)
    turn = 0
    while True:
        try:
            line = input(f"{args.user_name}: ")
        except EOFError:
            break
        if not line.strip() or line.strip() == "/quit":
            break
        if line.strip() == "/reset":
            session.history = []
            continue
        g = session.reply(model, line, dataclasses.replace(sc, seed=sc.seed + turn))
        turn += 1
        show(g, line)
    return 0


def best_of_n(args: argparse.Namespace, model, tok, session, sc, judge) -> None:
    """Sample --num-samples replies, score them with the judge, print the best (all with --json)."""
    from .config import atomic_write_text
    from .gen.best_of_n import judge_scores, pick_best
    gens = []
    for k in range(args.num_samples):
        session.history = []
        gens.append(session.reply(model, args.prompt, dataclasses.replace(sc, seed=sc.seed + k)))
    ranked = pick_best(judge_scores(judge, [args.prompt], [g.text for g in gens], args.reference, device=args.device))
    rows = [{"prompt": args.prompt, "sample": k, "reply": g.text, "stop_reason": g.stop_reason,
             "new_tokens": len(g.token_ids), "judge_score": ranked.scores[k], "best": k == ranked.best}
            for k, g in enumerate(gens)]
    if args.samples_out:
        atomic_write_text(args.samples_out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    if args.json:
        print("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), end="")
    else:
        print(gens[ranked.best].text)


if __name__ == "__main__":
    sys.exit(main())
