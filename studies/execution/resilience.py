"""Survive a database blip: storage calls retried through a lost connection, for a bounded time.

A PostgreSQL restart or a dropped connection used to kill every worker that touched the storage at
that moment; worse, Optuna's ``_run_trial`` then crashed with ``UnboundLocalError`` (a failed tell
is followed, in its ``except``, by a read of the same dead database, and its ``finally`` reads a name
that was never bound). Two pieces answer that, and each covers what the other cannot:

- ``ResilientRDBStorage``: Optuna's ``RDBStorage`` whose storage calls retry a *connection* error
  (``OperationalError`` / ``InterfaceError``, a connection SQLAlchemy marked invalid) with backoff
  for up to ``$TTS_SEARCH_DB_RETRY_S`` seconds (60). It sits below Optuna's cache, so every call
  is covered without the callers knowing: ask, tell, report, should_prune's reads, user attributes,
  the sampler's reads, heartbeats. Wrapping calls one by one in the runner would miss those made
  inside the objective and the sampler.
- The runner runs its trials with ask/tell itself (``runner.run_worker``), not ``study.optimize``:
  a tell that fails past the bound raises ``DatabaseUnavailable`` (one line, exit code 4) instead
  of ``UnboundLocalError``, and the trial left RUNNING is failed and re-queued on resume by the
  heartbeat rules. The heartbeat thread is Optuna's own (``HeartbeatThread``), fed through an
  adapter that lets a beat lost to an outage pass instead of killing the thread.

Retrying a write whose commit landed but whose answer was lost is safe here: a repeated tell finds
the trial already in the state it asked for (accepted); a repeated ask leaves an orphan RUNNING
trial that never gets a heartbeat, which the "no heartbeat" rule fails and re-queues. SQLite is not
retried: it is a local file (its busy timeout covers locks), and there "no such table" is an
``OperationalError`` too, which no wait would mend.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage
from optuna.storages._heartbeat import HeartbeatThread
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState

DB_RETRY_ENV = "TTS_SEARCH_DB_RETRY_S"
DB_RETRY_S = 60.0
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.2, 2.0
EXIT_DB_UNAVAILABLE = 4  # distinct from 2 (bad input), 3 (study incomplete), 130 (Ctrl-C)

# Every RDBStorage method that talks to the database (the rest are pure or local), the private ones
# Optuna's cache calls included. A public one that calls a private one retries around it; harmless.
_RETRIED = (
    "_create_new_trial",
    "_get_best_trial_id",
    "_get_trials",
    "_set_trial_param",
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_trial",
    "get_all_trials",
    "get_best_trial",
    "record_heartbeat",
    "_get_stale_trial_ids",
)


# This process's outage record: not pickled (see ResilientRDBStorage).
_OUTAGE_RECORD = ("recovered_at", "_outage_since", "_outage_lock")


class DatabaseUnavailable(Exception):
    """The study's database stayed unreachable for longer than the retry bound."""


def is_connection_error(error: BaseException) -> bool:
    """True when `error`, or anything in its chain, says the connection to the server was lost.

    Optuna re-raises a failed commit as ``StorageInternalError`` from the driver's error, so the
    chain is walked. Integrity and programming errors are not connection errors: retrying them
    would only repeat them.
    """
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated:
            return True
        if type(e).__module__.startswith(("psycopg", "psycopg2")) and type(e).__name__ in (
            "OperationalError",
            "InterfaceError",
        ):
            return True
        e = e.__cause__ or e.__context__
    return False


def first_line(error: BaseException) -> str:
    """The driver's own words for an error, on one line."""
    e: BaseException = error
    while e.__cause__ is not None:
        e = e.__cause__
    e = getattr(e, "orig", None) or e
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


class ResilientRDBStorage(RDBStorage):
    """``RDBStorage`` whose database calls outlive a restart of the server, for `retry_s` seconds.

    ``recovered_at`` is the monotonic time the last outage ended (None: none seen), so the stale-trial
    rule can hold off while every worker's heartbeat catches up after the server is back.

    It pickles as ``RDBStorage`` does (process pools, Dask): the copy opens its own engine and keeps
    the retry bound and label, but not the outage record, which belongs to this process: its lock
    cannot be pickled, and its monotonic times mean nothing on another machine's clock.
    """

    def __init__(self, url: str, *, retry_s: float, label: str, **kwargs: Any) -> None:
        self.retry_s, self._label = retry_s, label
        self._no_outage_seen()
        super().__init__(url, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for name in _OUTAGE_RECORD:
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._no_outage_seen()
        super().__setstate__(state)  # reconnects, as RDBStorage's does

    def _no_outage_seen(self) -> None:
        self.recovered_at: float | None = None
        self._outage_since: float | None = None
        self._outage_lock = threading.Lock()

    def adopt_silent_trials(self, study_id: int) -> list[int]:
        """Give every RUNNING trial that has no heartbeat row one, now, by the server's clock.

        A worker killed between ``ask`` and its first heartbeat leaves a trial Optuna never calls
        stale (its check skips trials without a heartbeat), so no rerun could ever finish it. Adopted,
        such a trial is stale one grace period later unless its worker is alive and beating, and the
        ordinary stale rule fails and re-queues it. Comparing the server's clock with
        ``datetime_start`` (the asking machine's clock) instead would trust every machine's clock.
        """
        ids = self._call("silent trials", _silent_trial_ids, (study_id,), {})
        for trial_id in ids:
            self.record_heartbeat(trial_id)
        return ids

    def _call(self, name: str, method: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        deadline: float | None = None
        delay = BACKOFF_FIRST_S
        while True:
            try:
                result = method(self, *args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                if deadline is not None and name == "set_trial_state_values" and self._landed(args, kwargs):
                    self._back()
                    return True  # the first try committed; only its answer was lost
                raise
            except Exception as e:
                if self.retry_s <= 0 or not is_connection_error(e):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.retry_s
                    self._lost(e)
                if now >= deadline:
                    raise DatabaseUnavailable(
                        f"database {self._label} unreachable for {self.retry_s:.0f} s "
                        f"({first_line(e)}); the study is kept: run the same command to continue "
                        f"once it is back (${DB_RETRY_ENV} sets the wait)"
                    ) from None
                time.sleep(min(delay, max(0.0, deadline - now)))
                delay = min(2 * delay, BACKOFF_MAX_S)
            else:
                if deadline is not None:
                    self._back()
                return result

    def _landed(self, args: tuple, kwargs: dict) -> bool:
        trial_id = args[0] if args else kwargs["trial_id"]
        state = args[1] if len(args) > 1 else kwargs["state"]
        return RDBStorage.get_trial(self, trial_id).state == state

    def _lost(self, error: BaseException) -> None:
        with self._outage_lock:
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                _say(f"database unreachable ({first_line(error)}): retrying for up to {self.retry_s:.0f} s")

    def _back(self) -> None:
        with self._outage_lock:
            now = time.monotonic()
            self.recovered_at = now
            if self._outage_since is not None:
                _say(f"database back after {now - self._outage_since:.1f} s")
                self._outage_since = None


def _retrying(name: str) -> Callable[..., Any]:
    method = getattr(RDBStorage, name)

    @functools.wraps(method)
    def call(self: ResilientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, method, args, kwargs)

    return call


for _name in _RETRIED:
    setattr(ResilientRDBStorage, _name, _retrying(_name))


@contextlib.contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> Iterator[None]:
    """Optuna's heartbeat thread for one trial, whose beats lost to an outage do not end it.

    The first beat is written at once: from then on a dead worker's trial is found by the ordinary
    stale rule. No-op for a storage without a heartbeat (SQLite here).
    """
    interval = storage.get_heartbeat_interval() if isinstance(storage, optuna.storages.BaseStorage) else None
    if not interval:
        yield
        return
    with HeartbeatThread(trial_id, _PatientBeat(storage, interval)):
        yield


class _PatientBeat:
    """What ``HeartbeatThread`` needs of a storage, with an outage past the bound let pass: the main
    thread meets the same outage and reports it; a raised beat would only kill the thread."""

    def __init__(self, storage: optuna.storages.BaseStorage, interval: int) -> None:
        self._storage, self._interval = storage, interval

    def get_heartbeat_interval(self) -> int:
        return self._interval

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(DatabaseUnavailable):
            self._storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]


def _silent_trial_ids(storage: RDBStorage, study_id: int) -> list[int]:
    """RUNNING trials of the study without a heartbeat row (Optuna's models; Optuna 5 is pinned)."""
    with _create_scoped_session(storage.scoped_session, True) as session:
        rows = (
            session.query(models.TrialModel.trial_id)
            .outerjoin(models.TrialHeartbeatModel)
            .filter(models.TrialModel.study_id == study_id)
            .filter(models.TrialModel.state == TrialState.RUNNING)
            .filter(models.TrialHeartbeatModel.trial_id.is_(None))
            .all()
        )
    return [row[0] for row in rows]


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
