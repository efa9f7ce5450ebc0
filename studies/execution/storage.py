"""Where a study lives: a SQLite file under ``runs/`` by default, any Optuna RDB URL on request.

SQLite suits one machine (several local workers are fine with WAL and a busy timeout);
PostgreSQL or MySQL suit many machines. A bad URL must fail before any trial runs, in one line,
and checking it must create nothing: a typo should not leave an empty database behind.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import URL, make_url

from common.errors import UserError
from studies.execution.resilience import (
    DB_RETRY_ENV,
    DB_RETRY_S,
    DatabaseUnavailable,
    ResilientRDBStorage,
    first_line,
    is_connection_error,
)

HEARTBEAT_INTERVAL_S = 60
GRACE_PERIOD_S = 180
# Seconds between heartbeats; the grace period is 3x. Tests set it to a few seconds.
HEARTBEAT_ENV = "TTS_SEARCH_HEARTBEAT_S"
SQLITE_BUSY_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 10

# Python module of a driver -> what to pip install for it.
_DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "pymysql": "PyMySQL",
    "MySQLdb": "mysqlclient",
}
_EXAMPLES = "e.g. sqlite:///runs/study.db or postgresql://user:password@host/db"


class StorageError(UserError):
    """A storage URL that is malformed, points nowhere usable, or cannot be reached."""


def default_storage_url(study: str, runs_dir: Path) -> str:
    return f"sqlite:///{(runs_dir / study / 'study.db').resolve().as_posix()}"


def resolve_storage(url: str | None, study: str, runs_dir: Path) -> str:
    """``--storage`` if given (validated), else the study's SQLite file ``runs/<study>/study.db``.

    The default is not validated here: its folder is created when the study opens
    (``open_storage(..., create_dir=True)``).
    """
    if url is None:
        return default_storage_url(study, runs_dir)
    url = _installed_postgres_driver(url.strip())
    validate_storage_url(url)
    return url


def _installed_postgres_driver(url: str) -> str:
    """A plain ``postgresql://`` means psycopg2 to SQLAlchemy; use psycopg 3 when only it is installed
    (the ``postgres`` extra installs ``psycopg[binary]``)."""
    if not url.startswith("postgresql://"):
        return url
    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other dialects and in-memory SQLite."""
    parsed = _parse(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def require_study_file(name: str, url: str) -> None:
    """One line (exit 2) when a command that reads a study names a SQLite file that does not exist."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise UserError(f"no study {name!r} at {path}: run the search first")


def validate_storage_url(url: str) -> None:
    """Raise ``StorageError`` (one line) for a URL that cannot work; connects to and creates nothing."""
    parsed = _parse(url)
    try:
        dialect = parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        hint = " (did you mean postgresql://?)" if parsed.drivername.split("+")[0] == "postgres" else ""
        raise StorageError(
            f"storage URL {redact(url)!r}: unknown database {parsed.drivername!r}{hint}; use an Optuna RDB URL, {_EXAMPLES}"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        raise StorageError(_driver_missing(url, e)) from None
    path = sqlite_path(url)
    if path is not None:
        _check_sqlite_path(url, path)


def open_storage(
    url: str, *, heartbeat: bool, create_dir: bool = False, patient: bool = False
) -> ResilientRDBStorage:
    """Open (creating tables if needed) the storage; every failure becomes one ``StorageError`` line.

    heartbeat: record a heartbeat every 60 s (``heartbeat_settings``) while a trial runs under
    ``runner.run_worker``; a trial whose worker died (no heartbeat for 180 s) is failed by the next
    worker and re-queued by ``runner.requeue_interrupted`` with its params and user attrs.
    Every database call is retried through a lost connection for ``$TTS_SEARCH_DB_RETRY_S``
    (``studies.execution.resilience``). patient: retry the first connection too (a worker restarted while the
    server restarts); a user's first command is not patient, so a wrong host fails in seconds.
    """
    path = sqlite_path(url)
    if path is not None and create_dir:
        path.parent.mkdir(parents=True, exist_ok=True)
    validate_storage_url(url)
    retry_s = retry_bound_s()
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        engine_kwargs: dict = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
        retry_s = 0.0  # a local file: the busy timeout covers locks, and nothing else mends by waiting
        if path is not None:
            _enable_wal(url, path)
    else:
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    heartbeat_kwargs: dict = {}
    if heartbeat:
        interval, grace = heartbeat_settings()
        heartbeat_kwargs = {"heartbeat_interval": interval, "grace_period": grace}
    kwargs = {"retry_s": retry_s, "label": redact(url), "engine_kwargs": engine_kwargs, **heartbeat_kwargs}
    deadline = time.monotonic() + (retry_s if patient else 0.0)
    while True:
        try:
            return _open(url, kwargs, path is not None)
        except _Unreachable as e:
            if time.monotonic() >= deadline:
                if patient:
                    raise DatabaseUnavailable(
                        f"database {redact(url)} unreachable for {retry_s:.0f} s ({e}); "
                        f"run the same command to continue once it is back (${DB_RETRY_ENV} sets the wait)"
                    ) from None
                raise StorageError(f"cannot reach storage {redact(url)}: {e}") from None
            time.sleep(1.0)


class _Unreachable(Exception):
    """The server did not answer (connection refused, dropped, timed out): may mend by waiting."""


def _open(url: str, kwargs: dict, is_file: bool) -> ResilientRDBStorage:
    try:
        with warnings.catch_warnings():
            # heartbeat_interval is marked experimental; that is no news to a user.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return ResilientRDBStorage(url, **kwargs)
            except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError) as e:
                # Two processes creating a fresh database's tables at once: the loser sees "table ...
                # already exists", or "UNIQUE constraint failed: alembic_version..." when both stamp
                # the schema version (both seen when a worker and a reader opened a new SQLite study
                # together). The other process has made the schema by now, so opening again reads it.
                if not _lost_schema_race(e):
                    raise
                return ResilientRDBStorage(url, **kwargs)
    except ImportError as e:
        raise StorageError(_driver_missing(url, e)) from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        if not is_file and is_connection_error(e):
            raise _Unreachable(first_line(e)) from None
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        verb = "open" if is_file else "reach"
        raise StorageError(f"cannot {verb} storage {redact(url)}: {reason}") from None
    except RuntimeError as e:  # Optuna's schema-version check; its message names the upgrade command.
        reason = str(e).strip().splitlines()[0]
        raise StorageError(f"cannot use storage {redact(url)}: {reason}") from None


def retry_bound_s() -> float:
    """Seconds a lost database connection is retried: ``$TTS_SEARCH_DB_RETRY_S``, default 60; 0 = never.

    Long enough for a server restart or a fail-over; short enough that a database gone for good ends
    the search with one line instead of a hang.
    """
    raw = os.environ.get(DB_RETRY_ENV, "").strip()
    if not raw:
        return DB_RETRY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise StorageError(f"${DB_RETRY_ENV}={raw!r}: must be a number of seconds >= 0 (default 60)")
    return value


def _lost_schema_race(e: sqlalchemy.exc.SQLAlchemyError) -> bool:
    text = str(e)
    return "already exists" in text or ("UNIQUE constraint failed" in text and "alembic_version" in text)


def heartbeat_settings() -> tuple[int, int]:
    """(interval, grace) in seconds: 60/180, or ``$TTS_SEARCH_HEARTBEAT_S`` and three times it.

    A shorter interval finds a dead worker sooner at the cost of one UPDATE per interval per trial.
    """
    raw = os.environ.get(HEARTBEAT_ENV, "").strip()
    if not raw:
        return HEARTBEAT_INTERVAL_S, GRACE_PERIOD_S
    if not raw.isdigit() or int(raw) < 1:
        raise StorageError(f"${HEARTBEAT_ENV}={raw!r}: must be a whole number of seconds >= 1 (default 60)")
    return int(raw), 3 * int(raw)


def _parse(url: str) -> URL:
    if "://" not in url:
        raise StorageError(f"storage URL {url!r} has no scheme; {_EXAMPLES}")
    try:
        return make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(f"storage URL {redact(url)!r} is malformed; {_EXAMPLES}") from None


def _driver_missing(url: str, error: ImportError) -> str:
    module = error.name or str(error)
    package = _DRIVER_PACKAGES.get(module, module)
    return (
        f"storage URL {redact(url)!r}: its database driver {module!r} is not installed; "
        f"pip install {package!r}, or name an installed driver in the URL (dialect+driver://...)"
    )


def _check_sqlite_path(url: str, path: Path) -> None:
    folder = path.parent
    where = f"storage {redact(url)}"
    if not folder.is_dir():
        raise StorageError(f"{where}: folder {folder} does not exist; create it or choose another path")
    if path.is_dir():
        raise StorageError(f"{where}: {path} is a folder, not a database file; name a file")
    if not _writable(folder) or (path.exists() and not _writable(path)):
        raise StorageError(
            f"{where}: {path if path.exists() else folder} is read-only; SQLite needs to write there "
            "(its journal too), choose a writable path"
        )


def _writable(path: Path) -> bool:
    if not os.access(path, os.W_OK):
        return False
    try:
        return not os.statvfs(path).f_flag & os.ST_RDONLY
    except OSError:
        return True


def _enable_wal(url: str, path: Path) -> None:
    """WAL lets local workers read while one writes; the mode is stored in the file, so set it once.

    Switching needs the file to itself. While another process holds a write transaction on it (a reader
    that opened the new study first and is creating its tables: a dashboard, a poller) SQLite answers
    "database is locked" at once, without waiting out the busy timeout. So a file already in WAL is
    left alone, and the switch is retried until the busy timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
            finally:
                conn.close()
            return
        except sqlite3.DatabaseError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise StorageError(f"cannot use storage {redact(url)}: {e}") from None
            time.sleep(0.2)
