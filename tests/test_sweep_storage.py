"""Several worker processes on one study: SQLite, journal file and PostgreSQL storage; a killed worker's trial is retried.

PostgreSQL comes from ALEMBERT_TEST_POSTGRES_URL (.ci/run starts a server with .ci/postgres.sh); without it the
test is skipped, except under CI=true, where a missing server is a failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweep_helpers import start_worker, sweep_cli, sweep_file

pytestmark = pytest.mark.timeout(300)
N_TRIALS = 4


def postgres_url() -> str:
    url = os.environ.get("ALEMBERT_TEST_POSTGRES_URL")
    if url:
        return url
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but ALEMBERT_TEST_POSTGRES_URL is not set: .ci/run must start PostgreSQL (.ci/postgres.sh)")
    pytest.skip("ALEMBERT_TEST_POSTGRES_URL is not set; `source .ci/postgres.sh` starts a local PostgreSQL and sets it")


STORAGES = {
    "sqlite": lambda tmp: f"sqlite:///{tmp / 'sweep' / 'shared.db'}",
    "journal": lambda tmp: f"journal:{tmp / 'sweep' / 'journal.log'}",
    "postgres": lambda tmp: postgres_url(),
}


def _load(url: str, name: str) -> optuna.Study:
    if url.startswith("journal:"):
        backend = optuna.storages.journal.JournalFileBackend(url[len("journal:"):])
        return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))
    return optuna.load_study(study_name=name, storage=url)


@pytest.mark.parametrize("kind", list(STORAGES))
def test_two_workers_finish_exactly_n_trials_together(kind, tiny_dir, tmp_path):
    url = STORAGES[kind](tmp_path)
    name = f"tiny-{kind}-{uuid.uuid4().hex[:8]}"  # a shared server keeps studies of earlier runs
    path = sweep_file(tmp_path, tiny_dir("bert"), study_name=name, n_trials=N_TRIALS, seed=None)
    workers = [start_worker(f"sweep={path}", f"storage={url}", log=tmp_path / f"worker{i}.log") for i in range(2)]
    codes = [worker.wait(timeout=280) for worker in workers]
    logs = [(tmp_path / f"worker{i}.log").read_text()[-2000:] for i in range(2)]
    assert codes == [0, 0], logs
    study = _load(url, name)
    assert sorted(t.number for t in study.trials) == list(range(N_TRIALS))  # none beyond the budget
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * N_TRIALS  # none lost
    directories = [t.user_attrs["trial_dir"] for t in study.trials]
    assert len(set(directories)) == N_TRIALS and all((Path(d) / "summary.json").is_file() for d in directories)
    assert sorted(p.name for p in (tmp_path / "sweep").glob("trial_*")) == [f"trial_{i}" for i in range(N_TRIALS)]
    # The worker that exits last reports the whole study; the other may finish while a trial still runs.
    assert any(f"Trials: {N_TRIALS} complete." in log for log in logs)


def test_a_killed_workers_trial_is_failed_by_heartbeat_and_retried(tiny_dir, tmp_path):
    url = STORAGES["sqlite"](tmp_path)
    slow = sweep_file(tmp_path, tiny_dir("bert"), n_trials=2)
    first = start_worker(f"sweep={slow}", f"storage={url}", "train.epochs=500", log=tmp_path / "first.log")  # killed in it
    deadline = time.monotonic() + 120
    while not _running(url) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _running(url), (tmp_path / "first.log").read_text()[-2000:]
    first.send_signal(signal.SIGKILL)
    first.wait()
    sweep_cli(f"sweep={slow}", f"storage={url}")  # waits out the grace period, fails the trial, retries it
    study = _load(url, "tiny")
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 2, states
    failed = next(t for t in study.trials if t.state == TrialState.FAIL)
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == failed.number]
    assert len(retried) == 1 and retried[0].params == failed.params and retried[0].state == TrialState.COMPLETE


def _running(url: str) -> bool:
    """Read the worker's database without opening it through Optuna, which would race it creating the schema."""
    path = Path(url.removeprefix("sqlite:///"))
    if not path.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as connection:
            return bool(connection.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0])
    except sqlite3.OperationalError:  # the tables are not created yet
        return False
