"""A --task binary run through the Kaggle round trip offline (issue 22 follow-up): the export
records the task, its check (a fresh interpreter, only the copied code) predicts through
predict_file and checks the WSDM `id,winner` schema, and notebooks/kaggle_inference.ipynb run
from the export writes a submission that passes `python -m src.predict --check --task binary`
and equals what the repository's code writes from the run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.predict import main as predict_main
from src.pref import export as ex
from src.pref.inference.submission import check_submission, predict_file
from tests.pref_helpers import make_tiny_encoder, run_kaggle_notebook

pytestmark = pytest.mark.slow  # verifies the export in a fresh python and runs the notebook in a kernel



@pytest.fixture(scope="module")
def binary_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny random BERT trained with --task binary on 150 WSDM-schema rows (ties dropped),
    and a 40-row WSDM-schema test file (no labels)."""
    from src.data.synthetic import make_rows, to_binary, write_csv
    from src.pref.config import PrefConfig
    from src.pref.train import run
    folder = tmp_path_factory.mktemp("binary_run")
    encoder = make_tiny_encoder(folder / "bert")
    df = to_binary(make_rows(240, seed=11), seed=11)
    write_csv(df.iloc[:150], folder / "train.csv")
    write_csv(df.iloc[150:190], folder / "test.csv", schema="test")
    run(PrefConfig(model=str(encoder), data=str(folder / "train.csv"), out=str(folder / "run"), epochs=1,
                   max_len=64, prompt_budget=16, batch_size=16, progress=False, seed=0, task="binary"))
    return folder / "run", folder / "test.csv"


def test_binary_export_records_the_task_and_its_check_reads_the_binary_schema(binary_run, tmp_path):
    run, _ = binary_run
    out = tmp_path / "binary-export"
    ex.export_runs([run], out, kaggle_user="tester", log=None)  # verify=True: predicts + checks in a fresh python
    manifest = json.loads((out / ex.MANIFEST).read_text())
    assert manifest["task"] == "binary"
    assert "Task: binary" in (out / "README.md").read_text()
    # the export check reads the schema from the manifest: told arena3, the same export fails it
    manifest["task"] = "arena3"
    (out / ex.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match="expected 'id,winner_model_a,winner_model_b,winner_tie'"):
        ex.verify_export(out)


def test_notebook_writes_a_binary_submission_that_passes_check(binary_run, tmp_path, monkeypatch, capsys):
    run, test = binary_run
    exported = tmp_path / "export"
    ex.export_runs([run], exported, kaggle_user="tester", log=None)
    out = tmp_path / "working" / "submission.csv"
    text = run_kaggle_notebook(tmp_path, monkeypatch, export=exported, test=test, out=out, device="cpu")
    assert "task binary" in text and "ok, 40 rows" in text
    lines = out.read_text().splitlines()
    assert lines[0] == "id,winner" and len(lines) == 41
    assert {ln.split(",")[1] for ln in lines[1:]} <= {"model_a", "model_b"}
    capsys.readouterr()
    assert predict_main(["--check", str(out), "--data", str(test), "--task", "binary"]) == 0
    assert predict_main(["--check", str(out), "--data", str(test)]) == 1  # not the arena3 schema
    said = capsys.readouterr()
    assert "binary task's header" in said.out + said.err
    # the exported code and weights write exactly what the repository's code writes from the run
    predict_file([run], test, tmp_path / "repo.csv", device="cpu", log=None)
    assert out.read_text() == (tmp_path / "repo.csv").read_text()
    assert check_submission(out, test, task="binary") == []
