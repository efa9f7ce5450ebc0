from __future__ import annotations

import importlib.util
import os
import sqlite3
import threading
import warnings
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc

from common.errors import UserError
from studies.execution import storage
from studies.execution.storage import (
    StorageError,
    open_storage,
    redact,
    resolve_storage,
    sqlite_path,
    validate_storage_url,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def one_line_error(url: str) -> str:
    with pytest.raises(StorageError) as info:
        validate_storage_url(url)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_default_is_the_study_sqlite_file_and_creates_nothing(tmp_path: Path) -> None:
    url = resolve_storage(None, "stability", tmp_path / "runs")
    assert url == f"sqlite:///{tmp_path.resolve().as_posix()}/runs/stability/study.db"
    assert sqlite_path(url) == tmp_path.resolve() / "runs" / "stability" / "study.db"
    assert list(tmp_path.iterdir()) == []


def test_given_url_is_validated_and_kept(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/mine.db"
    assert resolve_storage(f" {url} ", "stability", tmp_path / "runs") == url
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError):
        resolve_storage("runs/mine.db", "stability", tmp_path)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("runs/study.db", "has no scheme"),
        ("://nowhere", "is malformed"),
        ("foo://host/db", "unknown database 'foo'"),
        ("postgres://u@host/db", "did you mean postgresql://"),
    ],
)
def test_malformed_urls_are_one_line(url: str, expected: str) -> None:
    assert expected in one_line_error(url)


def test_sqlite_in_a_missing_folder_creates_nothing(tmp_path: Path) -> None:
    message = one_line_error(f"sqlite:///{tmp_path}/missing/study.db")
    assert "does not exist" in message
    assert list(tmp_path.iterdir()) == []


def test_sqlite_path_that_is_a_folder(tmp_path: Path) -> None:
    assert "is a folder" in one_line_error(f"sqlite:///{tmp_path}")


def test_sqlite_in_a_read_only_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anywhere: make the check see what a user would
            real_access = os.access
            monkeypatch.setattr(
                os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode)
            )
        assert "read-only" in one_line_error(f"sqlite:///{folder}/study.db")
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_in_memory_sqlite_is_accepted() -> None:
    validate_storage_url("sqlite://")
    assert sqlite_path("sqlite:///:memory:") is None


def test_unreachable_postgres_is_one_line_without_password() -> None:
    url = "postgresql://u:secret@127.0.0.1:1/x"
    if importlib.util.find_spec("psycopg") is None:
        message = one_line_error(url)
        assert "driver 'psycopg' is not installed" in message and "psycopg[binary]" in message
    else:  # a driver is installed: validation passes, the connection is refused
        validate_storage_url(url)
        with pytest.raises(StorageError) as info:
            open_storage(url, heartbeat=False)
        message = str(info.value)
        assert message.startswith("cannot reach storage postgresql://u:***@127.0.0.1:1/x: ")
        assert "\n" not in message
    assert "secret" not in message


def test_connection_errors_become_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        reason = OSError(
            'connection to server at "127.0.0.1", port 1 failed: Connection refused\nIs it running?'
        )
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, reason)

    monkeypatch.setattr(storage, "validate_storage_url", lambda url: None)
    monkeypatch.setattr(storage, "ResilientRDBStorage", refuse)
    with pytest.raises(StorageError) as info:
        open_storage("postgresql://u:pw@127.0.0.1:1/x", heartbeat=True)
    assert str(info.value) == (
        'cannot reach storage postgresql://u:***@127.0.0.1:1/x: connection to server at "127.0.0.1", '
        "port 1 failed: Connection refused"
    )


def test_a_schema_created_by_another_process_at_the_same_moment_is_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = storage.ResilientRDBStorage
    calls: list[str] = []

    def lose_the_race_once(url: str, **kwargs: object) -> storage.ResilientRDBStorage:
        calls.append(url)
        if len(calls) == 1:
            real(url, **kwargs)  # the other process creates the tables...
            reason = sqlite3.OperationalError("table study_directions already exists")
            raise sqlalchemy.exc.OperationalError("CREATE TABLE study_directions", {}, reason)
        return real(url, **kwargs)

    monkeypatch.setattr(storage, "ResilientRDBStorage", lose_the_race_once)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    opened = open_storage(url, heartbeat=False)
    assert len(calls) == 2
    monkeypatch.undo()  # optuna checks isinstance(storage, RDBStorage) against the module attribute
    assert optuna.create_study(storage=opened, study_name="s").study_name == "s"


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    path.write_bytes(b"not a database, just text" * 100)
    with pytest.raises(StorageError, match="file is not a database"):
        open_storage(f"sqlite:///{path}", heartbeat=False)


def test_open_default_storage_runs_a_study_and_keeps_nan(tmp_path: Path) -> None:
    url = resolve_storage(None, "quick", tmp_path / "runs")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # experimental-feature warnings are not shown to users
        rdb = open_storage(url, heartbeat=True, create_dir=True)
    assert (rdb.heartbeat_interval, rdb.grace_period) == (60, 180)
    assert sqlite3.connect(sqlite_path(url)).execute("PRAGMA journal_mode").fetchone() == ("wal",)

    # ask/tell (no Study.optimize) records no heartbeat; Optuna warns if the storage has one.
    study = optuna.create_study(storage=open_storage(url, heartbeat=False), study_name="quick")
    trial = study.ask()
    trial.report(float("nan"), 40)
    trial.report(float("inf"), 80)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    # A second worker / a resumed run sees the same values: the pruner depends on NaN surviving.
    again = optuna.load_study(study_name="quick", storage=open_storage(url, heartbeat=False))
    values = again.trials[0].intermediate_values
    assert values[40] != values[40] and values[80] == float("inf")


def test_redact() -> None:
    assert redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert redact("not a url") == "not a url"


def test_losing_the_race_to_create_a_schema_is_told_apart_from_other_errors() -> None:
    import sqlalchemy.exc

    from studies.execution.storage import _lost_schema_race

    def err(text: str) -> sqlalchemy.exc.SQLAlchemyError:
        return sqlalchemy.exc.IntegrityError("INSERT", {}, Exception(text))

    assert _lost_schema_race(err("UNIQUE constraint failed: alembic_version.version_num"))
    assert _lost_schema_race(
        sqlalchemy.exc.OperationalError("CREATE", {}, Exception("table studies already exists"))
    )
    assert not _lost_schema_race(err("UNIQUE constraint failed: trials.number"))
    assert not _lost_schema_race(sqlalchemy.exc.OperationalError("x", {}, Exception("disk I/O error")))


def test_sqlite_switches_to_wal_once_a_writer_on_the_new_file_lets_go(tmp_path: Path) -> None:
    """Another process mid-write on a new study file (a reader creating the tables first) makes SQLite
    refuse the switch to WAL at once, without waiting out the busy timeout: the open retries until it
    can, instead of failing the search."""
    path = tmp_path / "study.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # a write transaction: the lock a schema creation holds
    releaser = threading.Timer(0.5, lambda: holder.execute("ROLLBACK"))
    releaser.start()
    try:
        open_storage(f"sqlite:///{path}", heartbeat=False)
    finally:
        releaser.join()
        holder.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)
