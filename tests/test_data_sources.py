"""Several training sources: spec parsing, the validation leak guard, duplicates, sampling weights."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.data.records import PairRecord
from src.data.sources import SourceSpec, epoch_rows, merge_training, pair_key, parse_source_spec
from src.data.split import prompt_group, train_val_split
from src.errors import UsageError

TOPICS = ["tea", "git", "jazz", "rust", "bread", "chess", "tides", "moss"]


def _records(n: int, seed: int, prefix: str) -> list[PairRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = TOPICS[rng.integers(len(TOPICS))]
        q = int(rng.integers(3))
        out.append(PairRecord(id=f"{prefix}{i}", prompt=[f"Tell me about {t} ({q})"],
                              response_a=[f"{prefix} answer {i} a"], response_b=[f"{prefix} answer {i} b"],
                              label=int(rng.integers(3))))
    return out


@pytest.mark.parametrize("text, want", [
    ("pool.csv", SourceSpec("pool.csv", 1.0, 0)),
    ("pool.csv:0.5", SourceSpec("pool.csv", 0.5, 0)),
    ("dir/pool.csv:2:1000", SourceSpec("dir/pool.csv", 2.0, 1000)),
    ("C:\\data\\pool.csv", SourceSpec("C:\\data\\pool.csv", 1.0, 0)),
    ("C:\\data\\pool.csv:3", SourceSpec("C:\\data\\pool.csv", 3.0, 0)),
])
def test_extra_data_specs_parse(text, want):
    assert parse_source_spec(text) == want


@pytest.mark.parametrize("text, msg", [
    ("pool.csv:0", "weight must be a positive number"),
    ("pool.csv:-1", "weight must be a positive number"),
    ("pool.csv:1:2.5", "max_rows must be a whole number"),
    (":2", "no path"),
])
def test_bad_extra_data_specs_are_one_line_errors_naming_the_flag(text, msg):
    with pytest.raises(UsageError, match=msg) as e:
        parse_source_spec(text)
    assert "--extra-data" in str(e.value) and "\n" not in str(e.value)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 5000), fold=st.integers(0, 2))
def test_leak_guard_drops_exactly_the_extra_rows_whose_prompt_group_is_in_validation(seed, fold):
    primary = _records(60, seed, "p")
    extra = _records(80, seed + 1, "x")  # new pairs on the same prompts: some in validation, some not
    tr, va = train_val_split(primary, n_folds=3, fold=fold, seed=seed)
    merged = merge_training(primary, tr, va, [(SourceSpec("x.csv"), extra)])
    val_groups = {prompt_group(primary[i]) for i in va}
    want_kept = [r.id for r in extra if prompt_group(r) not in val_groups]
    got_kept = [r.id for r, s in zip(merged.records, merged.source) if s == 1]
    assert got_kept == want_kept
    block = merged.blocks[1]
    assert block.dropped_validation_prompt == len(extra) - len(want_kept)
    assert block.train == len(want_kept) and block.dropped_duplicate == 0
    assert 0 < block.dropped_validation_prompt < len(extra)  # the case is not vacuous
    # the primary side is untouched: its training rows first, validation rows never in training
    assert [r.id for r in merged.records[:len(tr)]] == [primary[i].id for i in tr]
    assert not {primary[i].id for i in va} & {r.id for r in merged.records}
    assert merged.blocks[0].train == len(tr) and merged.blocks[0].val == len(va)


def test_exact_duplicate_pairs_across_sources_are_dropped_once():
    primary = _records(30, 0, "p")
    tr, va = train_val_split(primary, n_folds=3, fold=0, seed=0)
    val_groups = {prompt_group(primary[i]) for i in va}
    train_rows = [primary[i] for i in tr if prompt_group(primary[i]) not in val_groups]
    dup = dataclasses.replace(train_rows[0], id="copy", label=2)  # same pair, other id and label
    swapped = dataclasses.replace(train_rows[1], id="swapped", response_a=train_rows[1].response_b,
                                  response_b=train_rows[1].response_a)
    fresh = PairRecord("fresh", list(train_rows[2].prompt), ["new a"], ["new b"], 0)
    second = [dataclasses.replace(fresh, id="fresh-again"), PairRecord("other", ["unseen prompt"], ["u"], ["v"], 1)]
    merged = merge_training(primary, tr, va, [(SourceSpec("x.csv"), [dup, swapped, fresh]),
                                              (SourceSpec("y.csv"), second)])
    extra_ids = [r.id for r, s in zip(merged.records, merged.source) if s > 0]
    assert extra_ids == ["fresh", "other"]
    assert merged.blocks[1].dropped_duplicate == 2 and merged.blocks[2].dropped_duplicate == 1
    assert pair_key(swapped) == pair_key(train_rows[1])


def test_max_rows_keeps_the_first_rows_of_a_source_before_filtering():
    primary = _records(30, 0, "p")
    tr, va = train_val_split(primary, n_folds=3, fold=0, seed=0)
    extra = _records(50, 9, "x")
    merged = merge_training(primary, tr, va, [(SourceSpec("x.csv", 1.0, 20), extra)])
    b = merged.blocks[1]
    assert b.read == 50 and b.used == 20
    assert b.train + b.dropped_validation_prompt + b.dropped_duplicate == 20
    assert {r.id for r, s in zip(merged.records, merged.source) if s == 1} <= {r.id for r in extra[:20]}


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=4),
       weights=st.lists(st.floats(0.05, 3.0), min_size=4, max_size=4),
       seed=st.integers(0, 1000), epoch=st.integers(0, 5))
def test_epoch_rows_follow_the_source_weights_deterministically(sizes, weights, seed, epoch):
    source = np.concatenate([np.full(n, s) for s, n in enumerate(sizes)]).astype(np.int64)
    w = weights[:len(sizes)]
    rows = epoch_rows(source, w, seed=seed, epoch=epoch)
    assert np.array_equal(rows, epoch_rows(source, w, seed=seed, epoch=epoch))
    counts = np.bincount(rows, minlength=len(source))
    for s, (n, ws) in enumerate(zip(sizes, w)):
        c = counts[source == s]
        whole = int(ws // 1)
        assert c.sum() == whole * n + round((ws % 1) * n)
        assert set(c.tolist()) <= {whole, whole + 1}  # no row drawn twice beyond its whole passes


def test_weight_one_everywhere_is_every_row_once_and_fractions_vary_by_epoch():
    source = np.array([0] * 10 + [1] * 100)
    assert np.array_equal(epoch_rows(source, [1.0, 1.0], seed=0, epoch=0), np.arange(110))
    e0 = epoch_rows(source, [1.0, 0.3], seed=0, epoch=0)
    e1 = epoch_rows(source, [1.0, 0.3], seed=0, epoch=1)
    assert len(e0) == len(e1) == 40 and not np.array_equal(e0, e1)


def test_selection_slice_is_whole_prompt_groups_of_training_rows_and_guards_extras():
    from types import SimpleNamespace

    from src.pref.inputs.training_data import select_slice, training_rows
    primary = _records(90, 4, "p")
    tr, va = train_val_split(primary, n_folds=3, fold=0, seed=0)
    keep, select, dropped = select_slice(primary, tr, 0.25, seed=0)
    assert sorted(keep + select) == sorted(tr) and dropped == 0 and select
    assert not {prompt_group(primary[i]) for i in keep} & {prompt_group(primary[i]) for i in select}
    extra = _records(60, 5, "x")
    cfg = SimpleNamespace(select_frac=0.25, seed=0, data="", teacher="")
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        from src.pref.inputs.training_data import TrainingSources
        rows = training_rows(cfg, primary, tr, va, Path(d), TrainingSources([SourceSpec("x.csv")], [extra], [{}]))
    held = {prompt_group(r) for r in rows.select} | {prompt_group(r) for r in rows.val}
    assert not held & {prompt_group(r) for r in rows.train}  # no training row shares a held-out prompt
    assert {r.id for r in rows.select} == {primary[i].id for i in select}


# --- --extra-data on the command line and in a run's config.yaml -------------------------------

@pytest.mark.parametrize("argv, want", [
    (["--extra-data", "a.csv:1.0", "--extra-data", "b.csv:0.5:1000"], ["a.csv:1.0", "b.csv:0.5:1000"]),
    (["--extra-data", "a.csv:1.0,b.csv:0.5:1000"], ["a.csv:1.0", "b.csv:0.5:1000"]),
    (["--extra-data", "a.csv,b.csv:2", "--extra-data", "c.csv:0.25:7"], ["a.csv", "b.csv:2", "c.csv:0.25:7"]),
    ([], []),
])
def test_extra_data_is_repeatable_and_a_run_config_reproduces_the_sources(tmp_path, argv, want):
    from src.config import save_yaml
    from src.train_pref import parse_args
    cfg, _ = parse_args(argv)
    assert cfg.extra_data == want
    save_yaml(cfg, tmp_path / "config.yaml")
    again, _ = parse_args(["--config", str(tmp_path / "config.yaml")])
    assert again.extra_data == want
    assert [parse_source_spec(t) for t in again.extra_data] == [parse_source_spec(t) for t in want]


def test_extra_data_flags_replace_the_yaml_list_and_a_yaml_list_reads_as_is(tmp_path):
    from src.train_pref import parse_args
    (tmp_path / "c.yaml").write_text("extra_data:\n  - y1.csv:0.5\n  - y2.csv:2:10\n")
    cfg, _ = parse_args(["--config", str(tmp_path / "c.yaml")])
    assert cfg.extra_data == ["y1.csv:0.5", "y2.csv:2:10"]
    cfg, _ = parse_args(["--config", str(tmp_path / "c.yaml"), "--extra-data", "f1.csv", "--extra-data", "f2.csv:3"])
    assert cfg.extra_data == ["f1.csv", "f2.csv:3"]  # the command line wins, as for every flag


# --- source weights in the engine's batch plan, redrawn every epoch ------------------------------

def _split_rows(sizes, weights, seed):
    from src.pref.inputs.training_data import SplitRows
    source = np.concatenate([np.full(n, s) for s, n in enumerate(sizes)]).astype(np.int64)
    return SplitRows(train=[None] * len(source), select=[], val=[], source=source, weights=tuple(weights), seed=seed)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(20, 60), min_size=2, max_size=3),
       weights=st.lists(st.sampled_from([0.25, 0.5, 1.0, 1.5, 2.0, 3.0]), min_size=3, max_size=3),
       seed=st.integers(0, 10_000), epochs=st.integers(2, 4))
def test_each_epoch_draws_its_own_rows_per_source_from_the_seed_and_epoch_alone(sizes, weights, seed, epochs):
    w = weights[:len(sizes)]
    rows = _split_rows(sizes, w, seed)
    source = rows.source
    plans = [rows.drawn(e) for e in range(epochs)]
    # a fresh object asked for the last epoch first gives the same draw: no state carried between epochs
    assert np.array_equal(_split_rows(sizes, w, seed).drawn(epochs - 1), plans[-1])
    for e, drawn in enumerate(plans):
        counts = np.bincount(drawn, minlength=len(source))
        for s, (n, ws) in enumerate(zip(sizes, w)):
            c = counts[source == s]
            assert c.sum() == int(ws) * n + round((ws % 1) * n)  # weight 2: each row twice; 0.5: half of them
            assert set(c.tolist()) <= {int(ws), int(ws) + 1}
    for s, (n, ws) in enumerate(zip(sizes, w)):
        if ws % 1:  # a fractional part: another subset every epoch (P(equal) < 1e-5 at n >= 20)
            subsets = {tuple(np.flatnonzero((np.bincount(d, minlength=len(source)) > int(ws)) & (source == s)))
                       for d in plans}
            assert len(subsets) == epochs
    if all(x == 1.0 for x in w):
        assert rows.epoch_rows(0) is None  # an unweighted run keeps the plain plan


class _WeightedToyTask:
    """Linear regression whose epochs train on a SplitRows draw; records what it collated."""
    monitor, monitor_mode, resume_trainable_only = "val_mse", "min", False

    def __init__(self, rows):
        import torch
        self.rows, self.seen = rows, []
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(len(rows.train), 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -1.0, 2.0])

    def lengths(self):
        return [1 + i % 5 for i in range(len(self.x))]

    def epoch_rows(self, epoch):
        return self.rows.epoch_rows(epoch)

    def collate(self, idx):
        self.seen.append(list(idx))
        return {"x": self.x[idx], "y": self.y[idx]}

    def count(self, batch):
        return len(batch["y"])

    def loss(self, model, batch):
        import torch
        return ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2).sum(), torch.tensor(float(len(batch["y"])))

    def stats(self, batch):
        return len(batch["y"]), len(batch["y"]), len(batch["y"])

    def evaluate(self, model, accelerator):
        return {"val_mse": float(((model(self.x).squeeze(-1) - self.y) ** 2).mean().detach())}

    def save_best(self, model, folder):
        pass

    def lr_multipliers(self):
        return {}

    def after_eval(self, *a):
        pass


def test_the_engine_trains_each_epoch_on_its_draw_and_a_mid_epoch_resume_replans_it(tmp_path):
    import torch

    from src.engine.loop import make_accelerator, train
    from src.engine.settings import TrainSettings
    sizes, weights = (40, 30), (0.5, 2.0)
    cfg = dict(epochs=3, batch_size=8, lr=0.01, warmup_ratio=0.0, schedule="constant", precision="fp32",
               progress=False, eval_every=0, seed=5, log_every=0)
    acc, _ = make_accelerator(TrainSettings(**cfg))
    full = _WeightedToyTask(_split_rows(sizes, weights, seed=5))
    torch.manual_seed(0)
    train(TrainSettings(**cfg), full, torch.nn.Linear(3, 1), tmp_path / "full", acc)
    per_epoch = 20 + 60  # half of source 0, source 1 twice
    n_batches = -(-per_epoch // 8)
    assert len(full.seen) == 3 * n_batches
    epochs = [sorted(sum(full.seen[e * n_batches:(e + 1) * n_batches], [])) for e in range(3)]
    for e, rows in enumerate(epochs):
        assert rows == sorted(full.rows.drawn(e).tolist())  # the plan trains exactly that epoch's draw
        counts = np.bincount(rows, minlength=70)
        assert (counts[:40] > 0).sum() == 20 and set(counts[40:].tolist()) == {2}
    assert len({tuple(r) for r in epochs}) == 3  # another half of source 0 every epoch

    part = _WeightedToyTask(_split_rows(sizes, weights, seed=5))
    torch.manual_seed(0)
    stop = n_batches + 3  # inside epoch 2
    assert not train(TrainSettings(**cfg, stop_after_steps=stop), part, torch.nn.Linear(3, 1),
                     tmp_path / "part", acc).done
    again = _WeightedToyTask(_split_rows(sizes, weights, seed=5))
    train(TrainSettings(**cfg), again, torch.nn.Linear(3, 1), tmp_path / "part", acc, resume=True)
    assert part.seen[:stop] + again.seen == full.seen  # same batches, same order, nothing repeated or lost


# --- --max-rows: the first N rows, or a seeded sample of whole prompt groups -------------------

@settings(max_examples=40, deadline=None)
@given(n_rows=st.integers(1, 80), n=st.integers(1, 100), seed=st.integers(0, 1000))
def test_a_max_rows_sample_is_n_rows_of_whole_groups_but_one_in_file_order(n_rows, n, seed):
    from src.data.sources import limit_rows
    from src.data.split import sample_by_group
    recs = _records(n_rows, seed, "p")
    idx = sample_by_group(recs, n, seed)
    assert len(idx) == min(n, n_rows) and idx == sorted(set(idx))  # exactly N distinct rows, in file order
    assert idx == sample_by_group(recs, n, seed)  # deterministic
    groups = [prompt_group(r) for r in recs]
    partial = {groups[i] for i in idx if sum(g == groups[i] for g in groups) != sum(groups[j] == groups[i] for j in idx)}
    assert len(partial) <= 1  # only the last group drawn is cut
    assert [r.id for r in limit_rows(recs, n, "sample", seed=seed)] == [recs[i].id for i in idx]
    assert [r.id for r in limit_rows(recs, n, "first", seed=seed)] == [r.id for r in recs[:n]]  # the old behaviour
    assert limit_rows(recs, 0, "sample", seed=seed) == recs  # 0 = all


def test_a_max_rows_sample_spreads_over_a_file_sorted_by_source_and_follows_the_seed():
    from src.data.sources import limit_rows
    recs = [dataclasses.replace(r, source=f"src{i // 80}", prompt=[f"{r.prompt[0]} from src{i // 80}"])
            for i, r in enumerate(_records(400, 1, "p"))]  # sorted by source: 5 blocks of 80 rows
    first = limit_rows(recs, 60, "first")
    a, b = limit_rows(recs, 60, "sample", seed=0), limit_rows(recs, 60, "sample", seed=1)
    assert {r.source for r in first} == {"src0"}
    assert len({r.source for r in a}) >= 3 and len({r.source for r in b}) >= 3
    assert [r.id for r in a] != [r.id for r in b]
    with pytest.raises(UsageError, match="--max-rows-pick"):
        limit_rows(recs, 10, "random")


def test_max_rows_pick_on_the_real_dev_file_takes_several_sources(real_dev_csv, tmp_path):
    from src.pref.config import PrefConfig
    from src.pref.train import load_records
    first = load_records(PrefConfig(data=str(real_dev_csv), max_rows=300), tmp_path / "a")
    sample = load_records(PrefConfig(data=str(real_dev_csv), max_rows=300, max_rows_pick="sample"), tmp_path / "b")
    assert len(first) == len(sample) == 300
    assert len({r.source for r in first}) == 1  # the file is sorted by source: the first 300 rows are one
    assert len({r.source for r in sample}) >= 3


def test_an_extra_source_max_rows_follows_max_rows_pick():
    primary = _records(30, 0, "p")
    tr, va = train_val_split(primary, n_folds=3, fold=0, seed=0)
    extra = sorted(_records(80, 9, "x"), key=lambda r: r.prompt)
    spec = SourceSpec("x.csv", 1.0, 20)
    first = merge_training(primary, tr, va, [(spec, extra)])
    sample = merge_training(primary, tr, va, [(spec, extra)], max_rows_pick="sample", seed=3)
    assert first.blocks[1].used == sample.blocks[1].used == 20
    picked = lambda m: {r.id for r, s in zip(m.records, m.source) if s == 1}  # noqa: E731
    assert picked(first) <= {r.id for r in extra[:20]}
    assert not picked(sample) <= {r.id for r in extra[:20]}
