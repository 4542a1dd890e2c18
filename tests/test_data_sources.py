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

    from src.pref.training_data import select_slice, training_rows
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
        from src.pref.training_data import TrainingSources
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
