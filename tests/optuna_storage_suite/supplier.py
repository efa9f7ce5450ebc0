"""The storages Optuna's copied tests run on: ``ResilientRDBStorage`` wherever Optuna's suite builds an
``RDBStorage``, on a SQLite file or on the test PostgreSQL server.

Stands in for ``optuna.testing.storages``, whose import needs fakeredis (and grpc for its proxy modes),
for storages this project does not use: the same ``StorageSupplier`` contract, RDB modes only.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.testing.tempfile_pool import NamedTemporaryFilePool
from sqlalchemy.engine import make_url

from studies.execution.resilience import DB_RETRY_S, ResilientRDBStorage
from studies.execution.storage import redact
from tests.pg_harness import DB_NAME, PgServer

FULL_ENV = "TTS_OPTUNA_SUITE"  # "full": every copied test in every mode, the slow ones included
FULL = os.environ.get(FULL_ENV) == "full"

SQLITE_MODES = ("sqlite", "cached_sqlite")
POSTGRES_MODES = ("postgresql", "cached_postgresql")
ALL_MODES = [*SQLITE_MODES, *POSTGRES_MODES]
# On PostgreSQL, the cached storage alone: it is what a study puts over the storage it is given, so the
# one every study here uses; the plain storage's calls are made on SQLite, and by test_with_server.py.
STORAGE_MODES = ALL_MODES if FULL else ["sqlite", "cached_sqlite", "cached_postgresql"]
# Optuna's heartbeat tests run their studies through ``create_study``, which puts the cache over a plain
# storage itself: the cached modes would repeat the same calls, each test waiting out a grace period.
STORAGE_MODES_HEARTBEAT = ALL_MODES if FULL else ["sqlite", "postgresql"]
SQLITE3_TIMEOUT = 300

_server: list[PgServer] = []  # the test PostgreSQL server, once a test in a PostgreSQL mode asked for it


def serve_postgres(server: PgServer) -> None:
    _server[:] = [server]


def postgres_url() -> str:
    """The test database with Optuna's tables emptied, reached through psycopg 3 (the ``dev`` extra's
    driver). Emptied, not dropped and made again: creating Optuna's schema costs a second a test."""
    if not _server:
        raise RuntimeError("no PostgreSQL server: the conftest starts one for tests in a PostgreSQL mode")
    import psycopg  # the PostgreSQL modes only: the SQLite ones run without it

    server = _server[0]
    with psycopg.connect(
        f"host=127.0.0.1 port={server.port} user=postgres dbname={DB_NAME}", autocommit=True
    ) as c:
        c.execute(  # a storage a test left open must not hold up the TRUNCATE
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        rows = c.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename NOT IN ('alembic_version', 'version_info')"  # the schema's version stays
        ).fetchall()
        if rows:
            c.execute(f"TRUNCATE {', '.join(row[0] for row in rows)} RESTART IDENTITY CASCADE")
    return server.url.replace("postgresql://", "postgresql+psycopg://", 1)


class SuiteRDBStorage(ResilientRDBStorage):
    """``RDBStorage``'s constructor over ``ResilientRDBStorage``, which also wants a retry bound and a
    label: chosen as ``studies.execution.storage.open_storage`` chooses them (SQLite is not retried)."""

    def __init__(
        self,
        url: str,
        engine_kwargs: dict[str, Any] | None = None,
        skip_compatibility_check: bool = False,
        **kwargs: Any,
    ) -> None:
        retry_s = 0.0 if make_url(url).get_backend_name() == "sqlite" else DB_RETRY_S
        super().__init__(
            url,
            retry_s=retry_s,
            label=redact(url),
            engine_kwargs=engine_kwargs,
            skip_compatibility_check=skip_compatibility_check,
            **kwargs,
        )


class StorageSupplier:
    """``optuna.testing.storages.StorageSupplier`` for the modes above: a fresh, empty storage per use."""

    def __init__(self, storage_specifier: str, **kwargs: Any) -> None:
        if storage_specifier not in ALL_MODES:
            raise ValueError(f"storage mode {storage_specifier!r}: expected one of {ALL_MODES}")
        self.storage_specifier = storage_specifier
        self.extra_args = kwargs
        self.tempfile: Any = None
        self.backend: SuiteRDBStorage | None = None

    def __enter__(self) -> BaseStorage:
        if self.storage_specifier in SQLITE_MODES:
            self.tempfile = NamedTemporaryFilePool().tempfile()
            url = f"sqlite:///{self.tempfile.name}"
            engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE3_TIMEOUT}}
        else:
            url, engine_kwargs = postgres_url(), {}
        self.backend = SuiteRDBStorage(url, engine_kwargs=engine_kwargs, **self.extra_args)
        if "cached" in self.storage_specifier:
            return optuna.storages._CachedStorage(self.backend)
        return self.backend

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        # Unit tests create many short-lived engines: close their connections explicitly.
        if self.backend is not None:
            self.backend.engine.dispose()
        if self.tempfile is not None:
            self.tempfile.close()
