"""Several machines, one study: a real PostgreSQL server started by the test
(initdb + pg_ctl on a free 127.0.0.1 port, trust auth, removed afterwards).
Skips when the PostgreSQL server binaries or psycopg2 are missing
(Debian/Ubuntu: apt-get install -y postgresql)."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from src.tune import study as st

pytestmark = pytest.mark.slow  # starts a PostgreSQL server and sweep worker processes

REPO = Path(__file__).resolve().parents[1]
BASE = str(REPO / "configs" / "pref" / "minilm.yaml")


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return versions[-1] if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip("psycopg2", reason="psycopg2 not installed (pip install psycopg2-binary)")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install -y postgresql")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as 'postgres'
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        runuser = shutil.which("runuser")
        if not runuser:
            pytest.skip("running as root without runuser to drop to the 'postgres' user")
        as_user = [runuser, "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="sweep-pg-"))  # not under pytest's tmp: 'postgres' must reach it
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if as_user:
        for p in (root, sock):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)  # noqa: E731
    r = run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    if r.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {r.stderr.strip()[-500:]}")
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
    r = run(pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "server.log"), "-w", "-t", "60", "start")
    if r.returncode != 0:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {r.stderr.strip()} {log[-1000:]}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_machines_share_one_postgres_study(tmp_path, postgres_url):
    """The same command twice, each with its own folder (as on two machines, so no shared
    lock file): N counted trials in total, distinct numbers, nothing lost or left running."""
    n = 8
    cfg = tmp_path / "pg.yaml"
    cfg.write_text(yaml.safe_dump({
        "base": BASE,
        "fixed": {"demo_rows": 100, "epochs": 1, "eval_every": 1, "progress": False},
        "space": {"lr": {"type": "logfloat", "low": 1e-5, "high": 1e-3},
                  "head_dropout": {"type": "float", "low": 0.0, "high": 0.3}},
        "study": {"name": "pg", "objective": "src.tune.toy:run", "n_trials": n, "pruner": "none"},
    }))
    env = {**os.environ, "TOY_SECONDS_PER_EVAL": "0.5"}
    procs = [subprocess.Popen([sys.executable, "-m", "src.sweep", "--config", str(cfg), "--storage", postgres_url,
                               "--out", str(tmp_path / f"machine{i}"), "--no-plots"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    trials = study.trials
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers) == len({t._trial_id for t in trials})
    assert sorted(numbers) == list(range(len(trials)))  # no gaps: nothing lost
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    counted = [t for t in trials if st.counts_toward_total(t)]
    assert len(counted) == n and all(t.state == TrialState.COMPLETE for t in counted)
    extra = [t for t in trials if not st.counts_toward_total(t)]
    assert all(t.user_attrs.get("surplus") for t in extra)  # a late claim, recorded as such, at most 1
    assert len(extra) <= 1
    assert {t.user_attrs["pid"] for t in counted} == {p.pid for p in procs}  # both machines worked
    for i in range(2):  # each machine wrote the report from the shared storage
        assert (tmp_path / f"machine{i}" / "best_config.yaml").exists()


def test_workers_flag_against_postgres(tmp_path, postgres_url):
    n = 6
    cfg = tmp_path / "pgw.yaml"
    cfg.write_text(yaml.safe_dump({
        "base": BASE, "fixed": {"demo_rows": 100, "epochs": 1, "eval_every": 1, "progress": False},
        "space": {"lr": {"type": "logfloat", "low": 1e-5, "high": 1e-3}},
        "study": {"name": "pgw", "out": str(tmp_path / "pgw"), "objective": "src.tune.toy:run", "n_trials": n,
                  "pruner": "none"},
    }))
    env = {**os.environ, "TOY_SECONDS_PER_EVAL": "0.5"}
    r = subprocess.run([sys.executable, "-m", "src.sweep", "--config", str(cfg), "--storage", postgres_url,
                        "--workers", "2", "--no-plots"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = optuna.load_study(study_name="pgw", storage=postgres_url).trials
    assert sorted(t.number for t in trials) == list(range(n))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
