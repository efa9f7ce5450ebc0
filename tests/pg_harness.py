"""A throw-away PostgreSQL server on loopback for tests: initdb, pg_ctl start on a free port, stop after.

Uses Debian's ``postgresql`` package (``.ci/run`` installs it). PostgreSQL refuses to run as root, so
as root the cluster belongs to the ``postgres`` user and lives in a private folder under /tmp that
user can enter. Trust authentication on 127.0.0.1 only; fsync off (a test database need not survive
a power cut). When no server binaries are found the tests that need one are skipped, unless
``TTS_REQUIRE_POSTGRES=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial

REQUIRE_ENV = "TTS_REQUIRE_POSTGRES"
DB_NAME = "tts_search"


@dataclass(frozen=True, slots=True)
class PgServer:
    url: str  # postgresql://postgres@127.0.0.1:PORT/tts_search
    port: int
    data_dir: Path
    bin_dir: Path

    def reset(self) -> None:
        """Drop and recreate the test database, so each test starts from an empty study list."""
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as c:
            c.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
            c.execute(f"CREATE DATABASE {DB_NAME}")

    def restart(self) -> float:
        """``pg_ctl restart -m fast`` (every client connection is dropped); return the seconds it took."""
        started = time.monotonic()
        _pg_ctl(self, "-m", "fast", "restart")
        return time.monotonic() - started

    def stop(self) -> None:
        """Stop the server (``-m immediate``: as if it crashed) and keep its data, to ``start`` again."""
        _pg_ctl(self, "-m", "immediate", "stop")

    def start(self) -> None:
        _pg_ctl(self, "-o", _options(self.port, self.data_dir.parent), "start")


def _options(port: int, root: Path) -> str:
    return f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"


def _pg_ctl(server: PgServer, *args: str) -> None:
    """The server's output goes to its log file, never to a pipe: a pipe the server inherits would keep
    ``subprocess.run`` waiting for an end of file that comes only when the server stops."""
    log = str(server.data_dir.parent / "log")
    cmd = [str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-l", log, "-w", *args]
    subprocess.run(
        _as_owner(cmd), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60
    )


def find_bin_dir() -> Path | None:
    for name in ("initdb", "pg_ctl"):
        if shutil.which(name):
            return Path(shutil.which(name)).parent  # type: ignore[arg-type]
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(cmd: list[str]) -> list[str]:
    """Run as the ``postgres`` user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def start_postgres() -> PgServer:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        message = "PostgreSQL server binaries not found (apt-get install postgresql)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.fail("psycopg is not installed: pip install -e '.[dev]' (or 'psycopg[binary]')")
    root = Path(tempfile.mkdtemp(prefix="tts-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(
        _as_owner([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    port = free_port()
    options = _options(port, root)
    subprocess.run(
        _as_owner(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]
        ),
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = PgServer(
        url=f"postgresql://postgres@127.0.0.1:{port}/{DB_NAME}", port=port, data_dir=data, bin_dir=bin_dir
    )
    server.reset()
    return server


def stop_postgres(server: PgServer) -> None:
    subprocess.run(
        _as_owner(
            [str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-m", "immediate", "-w", "stop"]
        ),
        capture_output=True,
        timeout=60,
    )
    shutil.rmtree(server.data_dir.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """One server per test session; tests call ``reset()`` for a clean database."""
    server = start_postgres()
    try:
        yield server
    finally:
        stop_postgres(server)


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def poll_trials(url: str, study: str) -> list[FrozenTrial]:
    """A study's trials as a test polls them while a search runs: it never creates the schema, so it cannot
    race the search creating it (a poller that did once held a new SQLite file while the search switched it
    to WAL, and once made the search fail "table study_directions already exists"). [] until it exists."""
    try:
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
        try:
            return optuna.load_study(study_name=study, storage=storage).get_trials()
        finally:
            storage.engine.dispose()
    except Exception:  # not created yet, or a table mid-creation
        return []
