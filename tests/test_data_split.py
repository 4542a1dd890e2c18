"""src.data.split (grouped, stratified hold-out and folds) and src.data.records.swap."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from src.data.arena import read_pairs
from src.data.records import A_WINS, B_WINS, TIE, PairRecord, swap, swap_probs
from src.data.split import fold_ids, prompt_group, train_val_split


def make_records(n: int, n_prompts: int, seed: int = 0, labelled: bool = True,
                 label_p=(0.45, 0.45, 0.10)) -> list[PairRecord]:
    """n records over n_prompts distinct prompts (with case/space variants of the same prompt)."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        k = int(rng.integers(n_prompts))
        text = f"Question number {k}  about things" if rng.random() < 0.5 else f"question NUMBER {k} about\nthings"
        label = int(rng.choice(3, p=label_p)) if labelled else None
        recs.append(PairRecord(id=str(i), prompt=[text], response_a=[f"a{i}"], response_b=[f"b{i}"], label=label))
    return recs


def groups_of(recs, idx) -> set[str]:
    return {prompt_group(recs[i]) for i in idx}


# --- prompt groups -----------------------------------------------------------------------------

def test_prompt_group_normalises_case_and_whitespace():
    r = lambda *p: PairRecord(id="x", prompt=list(p), response_a=[], response_b=[])  # noqa: E731
    assert prompt_group(r("Hello   World")) == prompt_group(r("hello world")) == prompt_group(r(" HELLO\nworld "))
    assert prompt_group(r("hello world")) != prompt_group(r("hello there"))
    # turn boundaries matter: ["a b"] is not ["a", "b"]
    assert prompt_group(r("a b")) != prompt_group(r("a", "b"))
    # responses do not matter
    assert prompt_group(PairRecord("1", ["q"], ["x"], ["y"])) == prompt_group(PairRecord("2", ["q"], ["z"], ["w"]))


# --- folds ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("labelled", [True, False])
@pytest.mark.parametrize("n_folds", [2, 5])
def test_folds_cover_every_row_once_and_are_grouped(labelled, n_folds):
    recs = make_records(600, 120, labelled=labelled)
    folds = fold_ids(recs, n_folds, seed=3)
    assert folds.shape == (600,)
    assert set(folds.tolist()) == set(range(n_folds))  # every fold used, nothing outside 0..k-1
    for k in range(n_folds):
        tr, va = train_val_split(recs, n_folds=n_folds, fold=k, seed=3)
        assert sorted(tr + va) == list(range(600))  # a partition of all rows
        assert va == [i for i in range(600) if folds[i] == k]
        assert not groups_of(recs, tr) & groups_of(recs, va)  # no prompt on both sides
    # folds are of similar size
    sizes = np.bincount(folds)
    assert sizes.min() > 0.6 * 600 / n_folds


def test_same_prompt_variants_land_in_the_same_fold():
    recs = make_records(300, 30)
    folds = fold_ids(recs, 5, seed=0)
    by_group: dict[str, set[int]] = {}
    for r, f in zip(recs, folds):
        by_group.setdefault(prompt_group(r), set()).add(int(f))
    assert len(by_group) == 30
    assert all(len(fs) == 1 for fs in by_group.values())


@pytest.mark.parametrize("labelled", [True, False])
def test_deterministic_per_seed(labelled):
    recs = make_records(500, 150, labelled=labelled)
    a, b = fold_ids(recs, 5, seed=7), fold_ids(recs, 5, seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, fold_ids(recs, 5, seed=8))  # the seed does something
    assert train_val_split(recs, seed=11) == train_val_split(recs, seed=11)


def test_stratification_keeps_label_proportions():
    recs = make_records(3000, 1500, label_p=(0.46, 0.44, 0.10))
    labels = np.array([r.label for r in recs])
    overall = np.bincount(labels, minlength=3) / len(labels)
    folds = fold_ids(recs, 5, seed=0)
    for k in range(5):
        share = np.bincount(labels[folds == k], minlength=3) / (folds == k).sum()
        assert np.abs(share - overall).max() < 0.03, (k, share, overall)


def test_holdout_size_grouping_and_stratification():
    recs = make_records(2000, 800)
    tr, va = train_val_split(recs, val_frac=0.2, seed=1)
    assert sorted(tr + va) == list(range(2000))
    assert 0.15 < len(va) / 2000 < 0.25
    assert not groups_of(recs, tr) & groups_of(recs, va)
    labels = np.array([r.label for r in recs])
    assert np.abs(np.bincount(labels[va], minlength=3) / len(va) - np.bincount(labels, minlength=3) / 2000).max() < 0.04
    tr4, va4 = train_val_split(recs, val_frac=0.25, seed=1)
    assert 0.2 < len(va4) / 2000 < 0.3


def test_test_schema_records_split_too():
    recs = make_records(400, 100, labelled=False)
    assert all(r.label is None for r in recs)
    tr, va = train_val_split(recs, val_frac=0.2, seed=0)
    assert sorted(tr + va) == list(range(400)) and len(va) > 0
    assert not groups_of(recs, tr) & groups_of(recs, va)


def test_an_unlabelled_row_follows_its_prompt_group_and_the_folds_stay_stratified():
    recs = make_records(200, 50)
    recs[0].label = None
    folds = fold_ids(recs, 4, seed=0)
    assert set(folds.tolist()) == {0, 1, 2, 3}
    same = [i for i in range(1, 200) if prompt_group(recs[i]) == prompt_group(recs[0])]
    assert {int(folds[i]) for i in same} == {int(folds[0])}


def with_soft_rows(n_hard: int, n_prompts: int, n_soft_shared: int, n_soft_only: int, seed: int,
                   label_p=(0.46, 0.44, 0.10)) -> list[PairRecord]:
    """Hard rows over n_prompts prompts, soft rows on some of those prompts, and soft rows
    on prompts no hard row has (a pseudo-labelled pool inside --data)."""
    rng = np.random.default_rng(seed + 100)
    recs = make_records(n_hard, n_prompts, seed=seed, label_p=label_p)
    for i in range(n_soft_shared):
        p = rng.dirichlet([1, 1, 1])
        recs.append(PairRecord(id=f"s{i}", prompt=list(recs[int(rng.integers(n_hard))].prompt),
                               response_a=[f"sa{i}"], response_b=[f"sb{i}"], target=tuple(p / p.sum())))
    for i in range(n_soft_only):
        p = rng.dirichlet([1, 1, 1])
        recs.append(PairRecord(id=f"o{i}", prompt=[f"pool prompt {int(rng.integers(max(1, n_soft_only // 3)))}"],
                               response_a=[f"oa{i}"], response_b=[f"ob{i}"], target=tuple(p / p.sum())))
    order = rng.permutation(len(recs))
    return [recs[i] for i in order]


@settings(max_examples=5, deadline=None)  # ~2 s each: StratifiedGroupKFold over 600 groups, twice
@given(seed=st.integers(0, 10_000), n_folds=st.sampled_from([3, 5]), n_soft_shared=st.integers(0, 400),
       n_soft_only=st.integers(0, 400))
def test_folds_with_soft_rows_are_grouped_and_stratified_on_the_hard_rows_only(seed, n_folds, n_soft_shared,
                                                                               n_soft_only):
    recs = with_soft_rows(1500, 600, n_soft_shared, n_soft_only, seed)
    folds = fold_ids(recs, n_folds, seed=seed)
    assert folds.shape == (len(recs),) and set(folds.tolist()) == set(range(n_folds))
    gs = [prompt_group(r) for r in recs]
    by_group: dict[str, set[int]] = {}
    for g, f in zip(gs, folds):
        by_group.setdefault(g, set()).add(int(f))
    assert all(len(fs) == 1 for fs in by_group.values())  # no prompt group spans two folds
    hard = np.array([r.label is not None for r in recs])
    assert hard.sum() == 1500 and (~hard).sum() == n_soft_shared + n_soft_only  # exact counts, nothing lost
    labels = np.array([-1 if r.label is None else r.label for r in recs])
    overall = np.bincount(labels[hard], minlength=3) / hard.sum()
    for k in range(n_folds):
        in_k = hard & (folds == k)
        share = np.bincount(labels[in_k], minlength=3) / in_k.sum()
        assert np.abs(share - overall).max() < 0.04, (k, share, overall)  # soft rows never skew the classes
        assert in_k.sum() > 0.7 * 1500 / n_folds  # hard rows spread over the folds as without soft rows
    # the soft rows of --data change nothing about where the hard rows go
    hard_only = [r for r in recs if r.label is not None]
    assert np.array_equal(folds[hard], fold_ids(hard_only, n_folds, seed=seed))
    # groups with no hard row are dealt to the smallest folds: total sizes stay close
    if n_soft_only:
        sizes = np.bincount(folds, minlength=n_folds)
        biggest_orphan_group = max(gs.count(g) for g in {g for g, r in zip(gs, recs) if r.id.startswith("o")})
        hard_sizes = np.bincount(folds[hard], minlength=n_folds)
        soft_shared = np.bincount(folds[np.array([r.id.startswith("s") for r in recs])], minlength=n_folds)
        assert sizes.max() - sizes.min() <= max(np.ptp(hard_sizes + soft_shared), biggest_orphan_group)


def test_all_soft_rows_still_split_grouped():
    recs = with_soft_rows(0, 1, 0, 300, seed=3)
    assert all(r.label is None and r.target is not None for r in recs)
    folds = fold_ids(recs, 4, seed=0)
    assert set(folds.tolist()) == {0, 1, 2, 3}
    assert all(len({int(f) for r, f in zip(recs, folds) if prompt_group(r) == g}) == 1
               for g in {prompt_group(r) for r in recs})


def test_split_errors():
    recs = make_records(50, 3)
    with pytest.raises(ValueError, match="only 3 distinct prompts"):
        fold_ids(recs, 5)
    with pytest.raises(ValueError, match="at least 2 folds"):
        fold_ids(recs, 1)
    with pytest.raises(ValueError, match="val_frac"):
        train_val_split(recs, val_frac=1.0)
    with pytest.raises(ValueError, match="out of range"):
        train_val_split(make_records(50, 20), n_folds=3, fold=3)


def test_split_real_data_is_grouped(real_dev_csv):
    recs = read_pairs(real_dev_csv).records
    tr, va = train_val_split(recs, val_frac=0.2, seed=0)
    assert sorted(tr + va) == list(range(len(recs)))
    assert not groups_of(recs, tr) & groups_of(recs, va)
    assert 0.1 < len(va) / len(recs) < 0.3


# --- swap -----------------------------------------------------------------------------------------

def test_swap_exchanges_sides_and_maps_labels():
    r = PairRecord(id="1", prompt=["q"], response_a=["a"], response_b=["b"], label=A_WINS,
                   model_a="ma", model_b="mb", source="s", extra={"k": 1})
    s = swap(r)
    assert (s.response_a, s.response_b, s.model_a, s.model_b) == (["b"], ["a"], "mb", "ma")
    assert (s.id, s.prompt, s.source, s.extra) == (r.id, r.prompt, r.source, r.extra)
    assert s.label == B_WINS
    assert r.label == A_WINS and r.response_a == ["a"]  # the original is not mutated
    assert swap(PairRecord("2", [], [], [], label=B_WINS)).label == A_WINS
    assert swap(PairRecord("3", [], [], [], label=TIE)).label == TIE
    assert swap(PairRecord("4", [], [], [])).label is None


def test_swap_probs():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    assert np.array_equal(swap_probs(p), [[0.2, 0.7, 0.1], [0.6, 0.1, 0.3]])
    assert np.array_equal(swap_probs([0.5, 0.3, 0.2]), [0.3, 0.5, 0.2])


text = st.text(max_size=20)
records = st.builds(
    PairRecord, id=text, prompt=st.lists(text, max_size=3), response_a=st.lists(text, max_size=3),
    response_b=st.lists(text, max_size=3), label=st.one_of(st.none(), st.sampled_from([A_WINS, B_WINS, TIE])),
    model_a=st.one_of(st.none(), text), model_b=st.one_of(st.none(), text),
)


@settings(max_examples=200, deadline=None)
@given(records)
def test_swap_is_an_involution(r):
    s = swap(r)
    assert swap(s) == r
    assert (s.response_a, s.response_b) == (r.response_b, r.response_a)
    assert s.n_turns == r.n_turns and prompt_group(s) == prompt_group(r)
    if r.label is not None:
        # "A wins" in the swapped record means the same response won
        winner = {A_WINS: r.response_a, B_WINS: r.response_b}.get(r.label)
        swapped_winner = {A_WINS: s.response_a, B_WINS: s.response_b}.get(s.label)
        assert winner == swapped_winner


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.floats(0, 1), min_size=3, max_size=3), min_size=1, max_size=8))
def test_swap_probs_is_an_involution_and_keeps_tie(rows):
    p = np.array(rows)
    q = swap_probs(p)
    assert np.array_equal(swap_probs(q), p)
    assert np.array_equal(q[:, 2], p[:, 2]) and np.array_equal(q[:, 0], p[:, 1])


@settings(max_examples=60, deadline=None)
@given(records, st.lists(st.floats(0.01, 1), min_size=3, max_size=3))
def test_swap_record_and_probs_agree(r, raw):
    """The probability of the true label is the same before and after swapping both."""
    assume(r.label is not None)
    p = np.array(raw) / sum(raw)
    assert swap_probs(p)[swap(r).label] == p[r.label]
