"""Synthetic arena data in the exact Kaggle schema, with a known best log loss.

Each response is built from hidden style choices (length, relevance to the
prompt, markdown structure, code, refusal) that a "model" draws according to
its quality. A response's strength is a fixed linear function of those choices,
and the label is drawn from a Bradley-Terry model with Davidson ties:

    P(A) = pi_A / Z,  P(B) = pi_B / Z,  P(tie) = nu * sqrt(pi_A * pi_B) / Z

The true probabilities are written as extra columns `p_a, p_b, p_tie`, so the
best achievable log loss on a file is known (`bayes_log_loss`). Everything the
strength depends on is visible in the text, so an encoder can learn it.

    python -m src.data.synthetic --rows 2000 --out data/synthetic/train.csv
    python -m src.data.synthetic --rows 25000 --schema test --out test.csv
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

TOPICS = {
    "python lists": (["list", "append", "index", "slice", "comprehension"], True),
    "sql joins": (["join", "table", "foreign key", "query", "index"], True),
    "git branches": (["branch", "merge", "rebase", "commit", "conflict"], True),
    "regular expressions": (["pattern", "group", "match", "quantifier", "escape"], True),
    "docker images": (["image", "container", "layer", "Dockerfile", "registry"], True),
    "sourdough bread": (["starter", "flour", "hydration", "proofing", "crust"], False),
    "marathon training": (["long run", "pace", "taper", "mileage", "recovery"], False),
    "the french revolution": (["Bastille", "monarchy", "Robespierre", "estates", "republic"], False),
    "photosynthesis": (["chlorophyll", "light", "glucose", "carbon dioxide", "leaf"], False),
    "black holes": (["event horizon", "gravity", "mass", "Hawking radiation", "singularity"], False),
    "personal budgeting": (["income", "expenses", "savings", "debt", "emergency fund"], False),
    "learning guitar": (["chord", "fret", "strumming", "scale", "practice"], False),
    "houseplants": (["watering", "sunlight", "soil", "repotting", "humidity"], False),
    "job interviews": (["resume", "questions", "salary", "follow-up", "strengths"], False),
    "climate change": (["emissions", "temperature", "renewables", "carbon", "policy"], False),
    "chess openings": (["pawn", "knight", "gambit", "castling", "center"], False),
}
PROMPT_TEMPLATES = [
    "How do I get started with {t}?",
    "Can you explain {t} to a beginner?",
    "What are the most common mistakes people make with {t}?",
    "Give me a few practical tips about {t}.",
    "I'm confused about {t}. What matters most?",
    "Write a short guide on {t}.",
]
FOLLOW_UPS = ["Can you give an example?", "Thanks! Anything else I should know?",
              "Could you make that shorter?", "Why does that matter?"]
FILLERS = [
    "That is a great question.", "There are many ways to think about this.",
    "It depends on your situation.", "Many people wonder about this.",
    "Let me know if you want more details.", "I hope this helps.",
]
REFUSALS = ["I'm sorry, but I can't help with that request.",
            "As an AI language model, I cannot provide that information."]
MODELS = [("gpt-4-1106-preview", 1.0), ("claude-2.1", 0.8), ("gpt-3.5-turbo-0613", 0.4),
          ("llama-2-13b-chat", 0.0), ("vicuna-13b", -0.2), ("mistral-7b-instruct", 0.1),
          ("oasst-pythia-12b", -0.6), ("chatglm-6b", -0.8)]

# Strength of a response: the generator's "true" preference model.
W_LEN, W_REL, W_STRUCT, W_CODE, W_REFUSE, TIE_NU = 1.6, 2.5, 0.9, 0.8, -3.0, 0.6


def _sentence(rng: np.random.Generator, topic: str, keywords: list[str], on_topic: bool) -> str:
    if not on_topic:
        other = list(TOPICS)[rng.integers(len(TOPICS))]
        topic, keywords = other, TOPICS[other][0]
    kw = keywords[rng.integers(len(keywords))]
    forms = [f"When it comes to {topic}, the {kw} is what most people overlook.",
             f"Pay attention to the {kw} early on.",
             f"A good rule of thumb: check the {kw} before anything else.",
             f"The {kw} matters because it shapes everything else in {topic}.",
             f"Start small with the {kw} and build from there."]
    return forms[rng.integers(len(forms))]


def _response(rng: np.random.Generator, topic: str, quality: float) -> tuple[str, dict]:
    keywords, is_code = TOPICS[topic]
    refuse = rng.random() < 0.12 / (1 + np.exp(2 * quality))
    if refuse:
        text = REFUSALS[rng.integers(len(REFUSALS))]
        return text, {"words": len(text.split()), "rel": 0.0, "struct": 0, "code": 0, "refuse": 1}
    n = int(np.clip(rng.lognormal(1.3 + 0.3 * quality, 0.6), 1, 25))
    rel = float(np.clip(rng.beta(2 + 2 * (quality + 1), 2), 0, 1))
    sents = [_sentence(rng, topic, keywords, rng.random() < rel) for _ in range(n)]
    struct = int(rng.random() < 0.25 + 0.2 * quality)
    code = int(is_code and rng.random() < 0.5)
    parts = [FILLERS[rng.integers(len(FILLERS))]] if rng.random() < 0.5 else []
    if struct:
        parts.append(f"## {topic.title()}\n" + "\n".join(f"- {s}" for s in sents))
    else:
        parts.append(" ".join(sents))
    if code:
        parts.append(f"```\n# {keywords[0]} example\nresult = do_{keywords[0].replace(' ', '_')}(data)\n```")
    text = "\n\n".join(parts)
    return text, {"words": len(text.split()), "rel": rel, "struct": struct, "code": code, "refuse": 0}


def strength(f: dict) -> float:
    return (W_LEN * np.log1p(f["words"] / 30) + W_REL * f["rel"] + W_STRUCT * f["struct"]
            + W_CODE * f["code"] + W_REFUSE * f["refuse"])


def davidson_probs(s_a: float, s_b: float, nu: float = TIE_NU) -> np.ndarray:
    pa, pb = np.exp(s_a), np.exp(s_b)
    pt = nu * np.sqrt(pa * pb)
    return np.array([pa, pb, pt]) / (pa + pb + pt)


def make_rows(n: int, seed: int = 0, *, id_start: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    topics = list(TOPICS)
    rows = []
    for i in range(n):
        topic = topics[rng.integers(len(topics))]
        ia, ib = rng.choice(len(MODELS), size=2, replace=False)
        (name_a, q_a), (name_b, q_b) = MODELS[ia], MODELS[ib]
        n_turns = 1 + int(rng.random() < 0.25) + int(rng.random() < 0.08)
        prompt = [PROMPT_TEMPLATES[rng.integers(len(PROMPT_TEMPLATES))].format(t=topic)]
        prompt += [FOLLOW_UPS[rng.integers(len(FOLLOW_UPS))] for _ in range(n_turns - 1)]
        resp_a, resp_b, s_a, s_b = [], [], 0.0, 0.0
        for _ in range(n_turns):
            ta, fa = _response(rng, topic, q_a)
            tb, fb = _response(rng, topic, q_b)
            resp_a.append(ta)
            resp_b.append(tb)
            s_a += strength(fa) / n_turns
            s_b += strength(fb) / n_turns
        p = davidson_probs(s_a, s_b)
        label = int(rng.choice(3, p=p))
        rows.append({
            "id": id_start + i, "model_a": name_a, "model_b": name_b,
            "prompt": json.dumps(prompt), "response_a": json.dumps(resp_a), "response_b": json.dumps(resp_b),
            "winner_model_a": int(label == 0), "winner_model_b": int(label == 1), "winner_tie": int(label == 2),
            "p_a": round(float(p[0]), 6), "p_b": round(float(p[1]), 6), "p_tie": round(float(p[2]), 6),
        })
    return pd.DataFrame(rows)


def bayes_log_loss(df: pd.DataFrame) -> float:
    """Log loss of the generator's own probabilities: the best any model can do."""
    p = df[["p_a", "p_b", "p_tie"]].to_numpy()
    y = df[["winner_model_a", "winner_model_b", "winner_tie"]].to_numpy().argmax(1)
    from ..metrics import log_loss
    return log_loss(p, y)


# Languages of the binary (WSDM-style) schema: a label only (the text stays English),
# so per-language figures have groups to count without a translation model.
LANGUAGES = ("English", "Russian", "Chinese", "Vietnamese")


def to_binary(df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """WSDM Cup 2025 schema: ties dropped (its training data has none), one `winner`
    column (model_a/model_b) instead of the one-hot columns, and a `language` column."""
    rng = np.random.default_rng(seed + 1)
    df = df[df["winner_tie"] == 0].copy()
    df["winner"] = np.where(df["winner_model_a"] == 1, "model_a", "model_b")
    df["language"] = [LANGUAGES[i] for i in rng.integers(len(LANGUAGES), size=len(df))]
    return df.drop(columns=["winner_model_a", "winner_model_b", "winner_tie"])


def write_csv(df: pd.DataFrame, path: str | os.PathLike, schema: str = "train") -> None:
    from ..files import atomic_write_text
    if schema == "test":
        df = df[["id", "prompt", "response_a", "response_b"] + (["language"] if "language" in df else [])]
    atomic_write_text(path, df.to_csv(index=False))


def demo_csv(rows: int = 2000, seed: int = 0, folder: str | os.PathLike = "data/synthetic") -> Path:
    """The embedded default data set: generated once, then reused from disk."""
    path = Path(folder) / f"demo_{rows}_seed{seed}.csv"
    if not path.exists():
        write_csv(make_rows(rows, seed), path)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--schema", choices=["train", "test"], default="train",
                    help="test: only id, prompt, response_a, response_b (as Kaggle's test.csv)")
    ap.add_argument("--task", choices=["arena3", "binary"], default="arena3",
                    help="binary: WSDM Cup 2025 schema (winner=model_a/model_b, language column, ties dropped; "
                         "--rows counts the rows drawn before the ties are dropped)")
    args = ap.parse_args(argv)
    df = make_rows(args.rows, args.seed)
    summary = {"out": args.out, "task": args.task, "bayes_log_loss": round(bayes_log_loss(df), 4),
               "labels": df[["winner_model_a", "winner_model_b", "winner_tie"]].sum().to_dict()}
    if args.task == "binary":
        df = to_binary(df, args.seed)
        summary["labels"] = df["winner"].value_counts().to_dict()
        del summary["bayes_log_loss"]  # the 3-class figure; scored rows here have no ties
    write_csv(df, args.out, args.schema)
    print(json.dumps({"rows": len(df), **summary}))


if __name__ == "__main__":
    main()
