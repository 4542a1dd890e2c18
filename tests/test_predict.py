"""python -m src.predict and src.pref.inference.submission: every id gets a row, swap symmetry,
ensembles, the class prior for unparseable rows, and --check on broken copies."""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from src.data.arena import read_pairs
from src.data.records import swap, swap_probs
from src.predict import main as predict_main
from src.pref.inference import ensemble as ens
from src.pref.inference import predict as pp
from src.pref.inference import submission as sub
from src.pref.inference.calibration import PROB_FLOOR, floor_probs
from src.pref.checkpoint import expand_runs
from tests.fixtures_pref import write_test_csv

HEADER = "id,winner_model_a,winner_model_b,winner_tie"
BAD_LINES = {  # inserted after the given data line of a clean file
    2: '9001,"[""hi""]","not json","[""x""]"',       # invalid_json -> prior
    4: ',"[""hi""]","[""a""]","[""b""]"',              # missing_id -> cannot be written, reported
    6: '9002,"[""hi""]"',                               # bad_row_shape -> prior
    8: None,                                            # a copy of the first data row: duplicate id
}


def make_broken(clean: Path, out: Path) -> Path:
    lines = clean.read_text().splitlines()
    header, data = lines[0], lines[1:]
    rows = []
    for i, line in enumerate(data, start=1):
        rows.append(line)
        if i in BAD_LINES:
            rows.append(BAD_LINES[i] if BAD_LINES[i] is not None else data[0])
    out.write_text("\n".join([header, *rows]) + "\n")
    return out


def read_sub(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert ",".join(rows[0]) == HEADER
    return [r[0] for r in rows[1:]], np.array([[float(x) for x in r[1:]] for r in rows[1:]]).reshape(-1, 3)


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_run):
    d = tmp_path_factory.mktemp("predict")
    clean = write_test_csv(d / "test.csv", rows=24)
    broken = make_broken(clean, d / "broken.csv")
    out = d / "submission.csv"
    rc = predict_main(["--run", str(tiny_run), "--data", str(broken), "--out", str(out), "--no-progress"])
    assert rc == 0
    clean_out = d / "clean_submission.csv"  # the reference prediction several tests compare with
    sub.predict_file([tiny_run], clean, clean_out, log=None)
    return {"dir": d, "clean": clean, "broken": broken, "out": out, "report": d / "submission_report.json",
            "clean_out": clean_out}


# --- the submission ------------------------------------------------------------------

def test_every_input_id_once_in_input_order(files):
    ids, probs = read_sub(files["out"])
    with open(files["broken"], newline="") as f:
        raw = [r[0].strip() for r in list(csv.reader(f))[1:]]
    expected = list(dict.fromkeys(i for i in raw if i))  # first occurrence order, no empty id
    assert ids == expected
    assert "9001" in ids and "9002" in ids and len(ids) == 24 + 2
    assert np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-9)


def test_unparseable_rows_get_the_prior_and_are_reported(files, tiny_run, capsys):
    ids, probs = read_sub(files["out"])
    report = json.loads(files["report"].read_text())
    prior, source = ens.run_prior(tiny_run)
    # The prior comes from the label counts of the rows the run TRAINED on (the file's
    # minus the validation rows'), add-one smoothed.
    counts = json.loads((tiny_run / "data_report.json").read_text())["labels"]
    val = np.bincount(np.loadtxt(tiny_run / "val_predictions.csv", delimiter=",", skiprows=1, usecols=4,
                                 dtype=int), minlength=3)
    n = np.array([counts[str(k)] for k in range(3)], dtype=float) - val
    assert np.allclose(prior, (n + 1) / (n.sum() + 3)) and "training rows" in source
    flagged = {q["id"]: q for q in report["prior_rows_list"]}
    assert set(flagged) == {"9001", "9002"}
    assert flagged["9001"]["reason"] == "invalid_json" and flagged["9002"]["reason"] == "bad_row_shape"
    for rid in flagged:
        assert np.allclose(probs[ids.index(rid)], prior, atol=1e-9)
    assert report["prior_rows"] == 2 and report["predicted"] == 24 and report["ids_written"] == 26
    assert [r["reason"] for r in report["rows_without_id"]] == ["missing_id"]
    assert [d["id"] for d in report["duplicate_id_rows"]] == [ids[0]]
    # the parsed rows are real predictions, not the prior
    parsed = [i for i, rid in enumerate(ids) if rid not in flagged]
    assert not np.allclose(probs[parsed], prior, atol=1e-4)
    assert report["rows_per_s"] > 0 and 0 <= report["pad_fraction"] < 1


def test_check_passes_on_the_prediction(files, capsys):
    assert sub.check_submission(files["out"], files["broken"]) == []
    assert predict_main(["--check", str(files["out"]), "--data", str(files["broken"])]) == 0
    assert "ok" in capsys.readouterr().out


def _mutate(src: Path, dst: Path, fn) -> Path:
    lines = src.read_text().splitlines()
    dst.write_text("\n".join(fn(lines)) + "\n")
    return dst


def _set_row(lines, i, cells):
    lines = list(lines)
    lines[i] = ",".join(cells)
    return lines


BROKEN = {
    "missing id": (lambda L: L[:3] + L[4:], r"^id (\S+) from .* is missing$"),
    "nan": (lambda L: _set_row(L, 2, [L[2].split(",")[0], "nan", "0.5", "0.5"]), r"^row 2 \(id \S+\): winner_model_a not finite \(nan\)$"),
    "not summing to 1": (lambda L: _set_row(L, 5, [L[5].split(",")[0], "0.5", "0.4", "0.2"]), r"^row 5 \(id \S+\): probabilities sum to 1\.1, not 1"),
    "duplicate id": (lambda L: L + [L[1]], r"^row \d+: duplicate id \S+ \(first at row 1\)$"),
    "wrong header": (lambda L: ["id,winner_model_b,winner_model_a,winner_tie"] + L[1:], r"^header is 'id,winner_model_b,winner_model_a,winner_tie', expected 'id,winner_model_a,winner_model_b,winner_tie'$"),
    "missing column": (lambda L: ["id,winner_model_a,winner_model_b,tie"] + L[1:], r"^cannot check rows: column\(s\) winner_tie missing$"),
    "out of range": (lambda L: _set_row(L, 3, [L[3].split(",")[0], "1.5", "-0.5", "0"]), r"outside \[0, 1\]: winner_model_a=1\.5, winner_model_b=-0\.5$"),
    "not a number": (lambda L: _set_row(L, 4, [L[4].split(",")[0], "abc", "0.5", "0.5"]), r"winner_model_a='abc' is not a number$"),
    "unknown id": (lambda L: _set_row(L, 6, ["777777"] + L[6].split(",")[1:]), r"^row 6: id 777777 is not in "),
    "wrong cell count": (lambda L: _set_row(L, 7, L[7].split(",")[:3]), r"^row 7: 3 cells, header has 4$"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_check_fails_on_broken_copies(files, kind, tmp_path, capsys):
    fn, pattern = BROKEN[kind]
    bad = _mutate(files["out"], tmp_path / "bad.csv", fn)
    problems = sub.check_submission(bad, files["broken"])
    assert problems, kind
    import re
    assert any(re.search(pattern, p) for p in problems), problems
    assert predict_main(["--check", str(bad), "--data", str(files["broken"])]) == 1
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == problems  # one line per problem


def test_check_caps_lines_per_kind(files, tmp_path):
    bad = _mutate(files["out"], tmp_path / "bad.csv", lambda L: [L[0]] + [f"{l.split(',')[0]},nan,nan,nan" for l in L[1:]])
    problems = sub.check_submission(bad, files["broken"], max_per_kind=5)
    assert len(problems) == 6 and problems[-1] == f"... and {26 - 5} more finite problems"


def test_check_empty_and_missing_file(files, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    assert sub.check_submission(tmp_path / "empty.csv", files["broken"]) == [f"{tmp_path / 'empty.csv'}: file is empty"]
    assert "no such file" in sub.check_submission(tmp_path / "nope.csv", files["broken"])[0]


# --- symmetry, ensembles, flags ------------------------------------------------------------

@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_swap_averaged_predictions_are_exactly_symmetric(files, tiny_run, precision):
    run = ens.load_run(tiny_run)
    records = read_pairs(files["clean"]).records
    p = pp.predict_records(run, records, device="cpu", precision=precision).probs
    q = pp.predict_records(run, [swap(r) for r in records], device="cpu", precision=precision).probs
    assert np.array_equal(swap_probs(q), p)  # bit for bit, not approximately
    assert not np.array_equal(swap_probs(p), p)  # (and not trivially: A and B do differ)


def test_swapped_file_gives_the_swapped_submission(files, tiny_run, tmp_path):
    rows = list(csv.DictReader(open(files["clean"], newline="")))
    with open(tmp_path / "swapped.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "response_a": r["response_b"], "response_b": r["response_a"]})
    assert predict_main(["--run", str(tiny_run), "--data", str(tmp_path / "swapped.csv"),
                         "--out", str(tmp_path / "swapped.out.csv"), "--no-progress"]) == 0
    ids_a, pa = read_sub(files["clean_out"])
    ids_b, pb = read_sub(tmp_path / "swapped.out.csv")
    assert ids_a == ids_b and np.array_equal(pb[:, [1, 0, 2]], pa)


def test_ensemble_of_a_run_with_itself_equals_the_run(files, tiny_run, tmp_path):
    one, two = files["clean_out"], tmp_path / "two.csv"
    assert predict_main(["--run", str(tiny_run), "--run", str(tiny_run), "--data", str(files["clean"]), "--out", str(two),
                         "--no-progress"]) == 0
    assert one.read_bytes() == two.read_bytes()
    three = tmp_path / "three.csv"
    sub.predict_file([tiny_run, tiny_run], files["clean"], three, weights=[0.3, 0.7], log=None)
    assert np.allclose(read_sub(three)[1], read_sub(one)[1], atol=1e-12, rtol=0)


def test_ensemble_function():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=50)
    q = rng.dirichlet(np.ones(3), size=50)
    assert np.array_equal(ens.ensemble([p, p]), p)
    assert np.array_equal(ens.ensemble([p]), p)
    assert np.allclose(ens.ensemble([p, q], [1, 3]), 0.25 * p + 0.75 * q)
    assert np.allclose(ens.ensemble([p, q], [0, 2]), q)
    with pytest.raises(ValueError, match="2 weights for 1 runs"):
        ens.ensemble([p], [1, 2])
    with pytest.raises(ValueError, match="not all 0"):
        ens.ensemble([p, q], [0, 0])


def test_kfold_run_dir_expands_to_its_folds(files, tiny_run, tmp_path):
    cv = tmp_path / "cv"
    for k in (0, 1):
        shutil.copytree(tiny_run, cv / f"fold{k}", ignore=shutil.ignore_patterns("last", "plots"))
    shutil.copy(tiny_run / "data_report.json", cv / "data_report.json")
    assert expand_runs([cv]) == [cv / "fold0", cv / "fold1"]
    sub.predict_file([cv], files["clean"], tmp_path / "cv.csv", log=None)
    assert (tmp_path / "cv.csv").read_bytes() == files["clean_out"].read_bytes()
    with pytest.raises(FileNotFoundError, match="no trained classifier"):
        expand_runs([tmp_path])


def test_flags_no_tta_batch_size_max_len(files, tiny_run, tmp_path):
    base, other = files["clean_out"], tmp_path / "other.csv"
    assert predict_main(["--run", str(tiny_run), "--data", str(files["clean"]), "--out", str(other), "--no-tta",
                         "--batch-size", "3", "--max-len", "48", "--device", "cpu", "--precision", "fp32",
                         "--no-progress", "--report", str(tmp_path / "r.json")]) == 0
    assert sub.check_submission(other, files["clean"]) == []
    report = json.loads((tmp_path / "r.json").read_text())
    (run_stats,) = report["runs"]
    assert run_stats["tta"] is False and run_stats["max_len"] == 48 and run_stats["token_budget"] == 3 * 48 * 2
    assert run_stats["precision"] == "fp32" and run_stats["devices"] == ["cpu"]
    assert not np.allclose(read_sub(base)[1], read_sub(other)[1], atol=1e-6)


def test_labels_give_log_loss_and_accuracy(tiny_run, tmp_path, capsys):
    data = write_test_csv(tmp_path / "val.csv", rows=20, seed=9, labels=True)
    assert predict_main(["--run", str(tiny_run), "--data", str(data), "--out", str(tmp_path / "v.csv"),
                         "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "log loss" in out and "accuracy" in out
    m = json.loads((tmp_path / "v_report.json").read_text())["metrics"]
    assert m["rows"] == 20 and 0 < m["log_loss"] < 5 and 0 <= m["accuracy"] <= 1


@pytest.mark.slow  # tiny_run trains the real MiniLM
def test_uncalibrated_flag_predicts_at_t1(files, tiny_run, tmp_path):
    """predict --uncalibrated ignores the run's saved temperature (a run whose calibrated
    figure is worse than its uncalibrated one is still usable as trained)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cal = run / "checkpoint" / "best" / "calibration.json"

    def predict(temperature: float, *flags: str) -> np.ndarray:
        cal.write_text(json.dumps({"temperature": temperature}) + "\n")
        out = tmp_path / f"s{temperature}{''.join(flags)}.csv"
        assert predict_main(["--run", str(run), "--data", str(files["clean"]), "--out", str(out), "--no-progress",
                             *flags]) == 0
        return read_sub(out)[1]

    at3, uncal, at1 = predict(3.0), predict(3.0, "--uncalibrated"), predict(1.0)
    np.testing.assert_array_equal(uncal, at1)
    assert np.abs(at3 - at1).max() > 1e-3
    report = json.loads((tmp_path / "s3.0--uncalibrated_report.json").read_text())
    assert report["runs"][0]["temperature"] == 1.0 and report["runs"][0]["run_temperature"] == 3.0


def test_the_one_inference_path_matches_the_models_forward(files, tiny_run):
    """predict_logits (each siamese side batched by its own length, head on pooled vectors)
    gives the logits of PrefModel.forward on a whole padded batch, and counts the tokens it used."""
    import torch

    from src.pref.inputs.collate import collate
    from src.pref.inputs.encode import encode_pairs
    run = ens.load_run(tiny_run)
    records = read_pairs(files["clean"]).records
    enc = encode_pairs(records, run.tokenizer, arch="siamese", max_len=64, prompt_budget=16, keep="last")
    batch = collate(enc, list(range(len(enc))), both_orders=True)
    with torch.inference_mode():
        ab0, ba0 = (t.numpy() for t in run.model(batch["input_ids"], batch["attention_mask"], batch["style"]))
    out = pp.predict_logits(run.model, enc, device="cpu", max_tokens=512)
    assert np.allclose(ab0, out.ab, atol=1e-5) and np.allclose(ba0, out.ba, atol=1e-5)
    assert out.real_tokens == sum(len(s) for s in enc.ids["a"] + enc.ids["b"]) < out.padded_tokens
    assert out.padded_tokens < batch["input_ids"].numel()  # own-length batches pad less than pairs padded together
    # two "devices" (rows dealt out by length, one replica each) give the same answer and count the same tokens
    two = pp.predict_on_devices(run.model, enc, devices=["cpu", "cpu"], precision="fp32", budget=512)
    assert np.allclose(ab0, two.ab, atol=1e-5) and np.allclose(ba0, two.ba, atol=1e-5)
    assert two.real_tokens == out.real_tokens


def test_prior_falls_back_to_uniform(tiny_run, tmp_path):
    shutil.copytree(tiny_run / "checkpoint" / "best", tmp_path / "best")
    prior, source = ens.run_prior(tmp_path / "best")
    assert np.allclose(prior, 1 / 3) and source.startswith("uniform")


def test_all_rows_unparseable_still_writes_every_id(tiny_run, tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text('id,prompt,response_a,response_b\n1,"[""q""]",oops,"[""b""]"\n2,x,y,z\n')
    sub.predict_file([tiny_run], data, tmp_path / "s.csv", log=None)
    ids, probs = read_sub(tmp_path / "s.csv")
    assert ids == ["1", "2"] and np.allclose(probs, ens.run_prior(tiny_run)[0])


def test_cli_errors(files, tiny_run, tmp_path, capsys):
    assert predict_main(["--run", str(tiny_run), "--data", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert predict_main(["--run", str(tiny_run), "--data", str(files["clean"]), "--out", str(tmp_path / "o.csv"),
                         "--weights", "1,2"]) == 2
    assert "2 weights for 1 runs" in capsys.readouterr().err
    assert predict_main(["--run", str(tmp_path), "--data", str(files["clean"]), "--out", str(tmp_path / "o.csv")]) == 2
    assert "no trained classifier" in capsys.readouterr().err
    for argv in (["--data", str(files["clean"]), "--out", "x.csv"], ["--run", str(tiny_run), "--data", "t.csv"],
                 ["--check", "s.csv", "--data", "t.csv", "--run", str(tiny_run)]):
        with pytest.raises(SystemExit) as e:
            predict_main(argv)
        assert e.value.code == 2


# --- properties of writing and checking ----------------------------------------------------

ids_st = st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\ufeff"),
                          min_size=1, max_size=8).map(str.strip).filter(bool), min_size=1, max_size=30, unique=True)


@settings(max_examples=60, deadline=None)
@given(ids=ids_st, seed=st.integers(0, 2**32 - 1), sharp=st.floats(0.01, 50))
def test_written_submissions_always_pass_check(tmp_path_factory, ids, seed, sharp):
    """format_submission -> check_submission round trip for any ids and probabilities,
    including near-one-hot rows."""
    d = tmp_path_factory.mktemp("prop")
    data = d / "t.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "prompt", "response_a", "response_b"])
        for i in ids:
            w.writerow([i, '["q"]', '["a"]', '["b"]'])
    p = np.random.default_rng(seed).dirichlet(np.full(3, 1 / sharp), size=len(ids))
    p = ens.normalise(np.clip(p, 0, None) + 1e-300)
    (d / "s.csv").write_text(sub.format_submission(ids, p), encoding="utf-8")
    assert sub.check_submission(d / "s.csv", data) == []
    got_ids, got = read_sub(d / "s.csv")
    assert got_ids == ids and np.allclose(got, floor_probs(p), atol=1e-9)  # what is written: p with the floor
    assert (got >= PROB_FLOOR * (1 - 1e-9)).all()
    assert all(math.isclose(s, 1.0, abs_tol=1e-9) for s in got.sum(1))


# --- a row swallowed by an unclosed quote (issue 13, item 1) -------------------------------

def _drop_closing_quote(clean: Path, out: Path, data_line: int) -> Path:
    lines = clean.read_text().splitlines(keepends=True)
    lines[data_line] = lines[data_line].rstrip("\r\n")[:-1] + "\n"  # the last cell's closing quote
    out.write_text("".join(lines))
    return out


def test_a_swallowed_row_is_written_and_check_refuses_the_damaged_file(tiny_run, tmp_path, capsys):
    clean = write_test_csv(tmp_path / "test.csv", rows=12)
    damaged = _drop_closing_quote(clean, tmp_path / "damaged.csv", 6)
    all_ids = [r["id"] for r in csv.DictReader(open(clean, newline=""))]
    assert sub.scan_file_ids(damaged).ids == all_ids
    out = tmp_path / "sub.csv"
    assert predict_main(["--run", str(tiny_run), "--data", str(damaged), "--out", str(out), "--no-progress"]) == 0
    ids, probs = read_sub(out)
    assert ids == all_ids  # every id the scan finds, in file order (row 7 was lost on the old reader)
    report = json.loads((tmp_path / "sub_report.json").read_text())
    assert report["rows_scanned"] == 12 and report["scan_damaged_rows"] == [6]
    assert np.allclose(probs[5], ens.run_prior(tiny_run)[0], atol=1e-5)  # the damaged row: the prior
    assert sub.check_submission(out, clean) == []  # the submission itself is complete
    # --check against the damaged file refuses to pass, naming the damaged row
    capsys.readouterr()
    assert predict_main(["--check", str(out), "--data", str(damaged)]) == 1
    printed = capsys.readouterr().out
    assert f"is damaged: row 6 (id {all_ids[5]})" in printed and "quote" in printed and "ok" not in printed
    # and a submission without an id is caught as missing, not only as damage
    for gone in (all_ids[5], all_ids[6]):
        short = _mutate(out, tmp_path / "short.csv", lambda L: [l for l in L if not l.startswith(gone + ",")])
        assert f"id {gone} from {damaged} is missing" in sub.check_submission(short, damaged)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_scanned_id_is_expected_whatever_the_damage(tmp_path_factory, data):
    """Random damage (dropped quotes, truncation, NUL bytes, stray newlines, a BOM mid-file):
    the ids predict writes (expected_ids) include every id the quote-tolerant scan finds."""
    d = tmp_path_factory.mktemp("damage")
    clean = write_test_csv(d / "t.csv", rows=10, seed=data.draw(st.integers(0, 1000)))
    raw = bytearray(clean.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["quote", "truncate", "nul", "newline", "bom"]))
        at = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "quote":
            quotes = [i for i, b in enumerate(raw) if b == ord('"')]
            if quotes:
                del raw[quotes[at % len(quotes)]]
        elif kind == "truncate":
            del raw[max(at, len(raw) // 2):]
        elif kind == "nul":
            raw[at:at] = b"\x00"
        elif kind == "newline":
            raw[at:at] = b"\n"
        else:
            raw[at:at] = "\ufeff".encode()
    bad = d / "bad.csv"
    bad.write_bytes(bytes(raw))
    try:
        result = read_pairs(bad)
    except ValueError:  # e.g. the header itself destroyed: refused as a whole, with a message
        return
    scan = sub.scan_file_ids(bad)
    expected = sub.expected_ids(result, scan)
    assert set(scan.ids) <= set(expected) and len(expected) == len(set(expected))
    assert not sub.lost_ids(result, scan) or sub.damage(result, scan)  # a lost row is always called damage
