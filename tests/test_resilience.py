"""The rules that make a study survive lost connections and silent workers, in-process and fast.

The whole system under real faults is ``tests/test_chaos.py``; here each rule alone: a lost
connection is retried and then given up on in one line, a tell whose answer was lost is not told
twice, a trial killed before its first heartbeat is failed and re-queued with its preset, and the
exit status says how far the study is.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import socket
import time
from concurrent.futures import ProcessPoolExecutor
from operator import methodcaller
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from studies.execution.completion import EXIT_INCOMPLETE, completion, exit_status
from studies.execution.resilience import (
    DB_RETRY_ENV,
    DatabaseUnavailable,
    ResilientRDBStorage,
    heartbeat,
    is_connection_error,
)
from studies.execution.runner import (
    DIED,
    FAILED_BY_ATTR,
    FIXED,
    HOST_ATTR,
    NO_HEARTBEAT,
    PID_ATTR,
    RETRY_ATTR,
    requeue_interrupted,
)
from studies.execution.storage import HEARTBEAT_ENV, StorageError, open_storage, retry_bound_s
from studies.record_keys import PRESET as PRESET_ATTR
from tests.pg_harness import PgServer, postgres  # noqa: F401

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _lost() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError(
        "SELECT 1", {}, Exception("server closed the connection unexpectedly")
    )


def test_connection_errors_are_told_from_other_database_errors() -> None:
    try:
        try:
            raise _lost()
        except sqlalchemy.exc.OperationalError as e:
            raise StorageInternalError("An exception is raised during the commit.") from e
    except StorageInternalError as wrapped:
        assert is_connection_error(wrapped)  # Optuna wraps a failed commit: the chain is walked
    integrity = sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))
    assert not is_connection_error(integrity)
    assert not is_connection_error(ValueError("no"))


class _Flaky:
    """A session factory that fails like a dropped connection `times` times, then works."""

    def __init__(self, real, times: int) -> None:
        self.real, self.left = real, times

    def __call__(self):
        if self.left > 0:
            self.left -= 1
            raise _lost()
        return self.real()

    def __getattr__(self, name: str):
        return getattr(self.real, name)


def _storage(tmp_path: Path, retry_s: float) -> ResilientRDBStorage:
    return ResilientRDBStorage(f"sqlite:///{tmp_path / 'study.db'}", retry_s=retry_s, label="the-db")


def test_a_lost_connection_is_retried_then_given_up_in_one_line(tmp_path: Path, capfd) -> None:
    storage = _storage(tmp_path, retry_s=5.0)
    study = optuna.create_study(study_name="s", storage=storage)
    storage.scoped_session = _Flaky(storage.scoped_session, times=3)
    assert study.get_trials() == []  # three failures, then the answer
    err = capfd.readouterr().err
    assert "database unreachable (server closed the connection unexpectedly): retrying" in err
    assert "database back after" in err
    assert storage.recovered_at is not None

    storage.retry_s = 0.6
    storage.scoped_session = _Flaky(storage.scoped_session.real, times=10**6)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as gone:
        storage.get_all_studies()
    assert 0.5 <= time.monotonic() - started < 5
    message = str(gone.value)
    assert "\n" not in message and message.startswith("database the-db unreachable for 1 s")
    assert "run the same command to continue" in message and DB_RETRY_ENV in message


def test_the_storage_pickles_and_its_copy_reads_writes_and_retries(tmp_path: Path) -> None:
    """Process pools and Dask hand a storage over pickled, which ``RDBStorage`` supports; a lock in the
    retrying storage's state used to make that a TypeError."""
    storage = _storage(tmp_path, retry_s=5.0)
    study = optuna.create_study(study_name="s", storage=storage)
    study.tell(study.ask(), 1.0)
    storage.recovered_at = time.monotonic()  # an outage seen here, on this machine's clock

    copy = pickle.loads(pickle.dumps(storage))
    assert (copy.url, copy.retry_s, copy._label) == (storage.url, 5.0, "the-db")
    assert copy.engine is not storage.engine and copy.recovered_at is None
    again = optuna.load_study(study_name="s", storage=copy)
    again.tell(again.ask(), 2.0)
    assert [t.value for t in study.get_trials()] == [1.0, 2.0]
    copy.scoped_session = _Flaky(copy.scoped_session, times=1)
    assert [s.study_name for s in copy.get_all_studies()] == ["s"]  # retried, with a lock of its own
    assert copy.recovered_at is not None


def test_a_spawned_worker_uses_the_storage_it_was_sent(tmp_path: Path) -> None:
    storage = _storage(tmp_path, retry_s=5.0)
    study_id = optuna.create_study(study_name="s", storage=storage)._study_id
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited, all unpickled
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        write = pool.submit(methodcaller("set_study_user_attr", study_id, "from", "worker"), storage)
        read = pool.submit(methodcaller("get_study_name_from_id", study_id), storage)
        write.result(timeout=120)
        assert read.result(timeout=120) == "s"
    assert storage.get_study_user_attrs(study_id) == {"from": "worker"}


def test_a_tell_whose_commit_landed_but_whose_answer_was_lost_is_not_told_twice(tmp_path: Path) -> None:
    storage = _storage(tmp_path, retry_s=5.0)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    calls = []

    def commit_then_lose(self, trial_id, state, values=None):
        calls.append(state)
        ok = RDBStorage.set_trial_state_values(self, trial_id, state, values)
        if len(calls) == 1:
            raise _lost()
        return ok

    args = (trial._trial_id, TrialState.COMPLETE, [1.0])
    assert storage._call("set_trial_state_values", commit_then_lose, args, {}) is True
    assert len(calls) == 2 and study.get_trials()[0].state == TrialState.COMPLETE


def test_sqlite_is_not_retried_and_a_bad_retry_bound_is_one_line(tmp_path: Path, monkeypatch) -> None:
    assert open_storage(f"sqlite:///{tmp_path / 'a.db'}", heartbeat=False).retry_s == 0
    monkeypatch.setenv(DB_RETRY_ENV, "soon")
    with pytest.raises(StorageError, match=r"TTS_SEARCH_DB_RETRY_S='soon': must be a number of seconds >= 0"):
        retry_bound_s()
    monkeypatch.setenv(DB_RETRY_ENV, "7.5")
    assert retry_bound_s() == 7.5


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_killed_before_its_first_heartbeat_is_failed_and_requeued_with_its_preset(
    postgres: PgServer,  # noqa: F811
    monkeypatch,
) -> None:
    """What stranded a preset forever (issue 13): RUNNING, no heartbeat row, its worker gone."""
    postgres.reset()
    monkeypatch.setenv(HEARTBEAT_ENV, "1")  # grace 3 s
    study = optuna.create_study(study_name="s", storage=open_storage(postgres.url, heartbeat=True))
    study.enqueue_trial({"x": 0.25}, user_attrs={PRESET_ATTR: "basic"})
    silent = study.ask()  # what a worker killed right after ask leaves behind
    live = study.ask()
    live.set_user_attr(HOST_ATTR, socket.gethostname())
    live.set_user_attr(PID_ATTR, os.getpid())
    with heartbeat(study._storage, live._trial_id):
        assert requeue_interrupted(study) == []  # first look: the silent trial is given a heartbeat
        time.sleep(4.0)  # past the grace period
        requeued = requeue_interrupted(study)
    trials = study.get_trials()
    assert requeued == [silent.number]
    assert trials[silent.number].state == TrialState.FAIL
    assert trials[silent.number].user_attrs[FAILED_BY_ATTR] == NO_HEARTBEAT
    assert trials[live.number].state == TrialState.RUNNING  # it beat all along
    retry = [t for t in trials if t.user_attrs.get(RETRY_ATTR) == silent.number]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    assert retry[0].user_attrs[PRESET_ATTR] == "basic" and retry[0].system_attrs[FIXED] == {"x": 0.25}


def test_the_exit_status_tells_how_far_the_study_is(tmp_path: Path) -> None:
    study = optuna.create_study(
        study_name="s", storage=open_storage(f"sqlite:///{tmp_path / 'a.db'}", heartbeat=False)
    )
    study.tell(study.ask(), 1.0)
    dead = study.ask()
    dead.set_user_attr(FAILED_BY_ATTR, DIED)
    study.tell(dead, state=TrialState.FAIL)
    mine = study.ask()
    mine.set_user_attr(HOST_ATTR, socket.gethostname())
    mine.set_user_attr(PID_ATTR, os.getpid())
    lines: list[str] = []
    assert exit_status(study, 2, lines.append) == EXIT_INCOMPLETE
    assert lines == [
        f"incomplete: 1 of 2 trials finished; still RUNNING: {mine.number}; "
        "failed and not retried: 1 x worker died; run the same command to continue"
    ]
    study.tell(mine, 2.0)
    assert completion(study, 2).ok and exit_status(study, 2, lines.append) == 0 and len(lines) == 1
    assert not completion(study, 3).ok


def test_a_restarted_worker_draws_other_points_than_the_one_that_died(monkeypatch) -> None:
    from studies.execution.workers import RESTART_ENV, sampler_seed

    first = sampler_seed(0, 2, shared=True)
    monkeypatch.setenv(RESTART_ENV, "1")
    assert sampler_seed(0, 2, shared=True) != first


def test_a_ctrl_c_swallowed_by_a_weakref_callback_still_interrupts() -> None:
    """Seen in the SIGINT test: the signal landed in SQLAlchemy's weakref callback during a GC, Python
    printed "Exception ignored" and the search ran on to exit 0."""
    import signal
    import weakref

    from studies.execution.runner import _interrupt_once

    class Thing:
        pass

    def callback(_ref: weakref.ref) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the handler raises here, and Python swallows it
        time.sleep(0.01)

    with pytest.raises(KeyboardInterrupt), _interrupt_once():
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            time.sleep(0.01)
    assert ref() is None
