"""Optuna's own storage tests, run against the retrying storage (issue 17, item 7).

``ResilientRDBStorage`` must behave as the ``RDBStorage`` it extends, and Optuna's tests are the
definition of that behaviour. Every ``RDBStorage`` they build is the retrying one: the names they
bind at import are swapped in the copied modules (lines marked ``# tts:``), the name looked up at call
time (``optuna.storages.RDBStorage``, which ``get_storage(url)`` and ``create_study(storage=url)``
use) is swapped here, and a plain ``RDBStorage`` built anyway fails the test.

Modes: SQLite files always; the tests of the PostgreSQL modes (``postgresql``, ``cached_postgresql``
in their ids) run on ``tests/pg_harness.py``'s server, skipped without its binaries unless
``TTS_REQUIRE_POSTGRES=1``. A few slow tests are left out unless ``TTS_OPTUNA_SUITE=full``
(``_LEFT_OUT``). What was copied, left out and changed, and why: README.md here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages import RDBStorage

from studies.execution.resilience import ResilientRDBStorage
from tests.pg_harness import postgres  # noqa: F401

from . import supplier

optuna.logging.set_verbosity(optuna.logging.WARNING)

_HERE = Path(__file__).parent

# Left out of the default run: each waits out grace periods or runs many processes, and makes no
# storage call that a test kept does not make. Test name -> which of its parametrisations.
_LEFT_OUT: dict[str, Callable[[dict[str, Any]], bool]] = {
    # Five grace periods (16 s a mode) to check the callback's retry history.
    "test_retry_heartbeat_stale_trial_callback_repetitive_failure": lambda params: True,
    # The callback's inherit_intermediate_values flag, over the calls of the test below.
    "test_retry_heartbeat_stale_trial_callback_intermediate": lambda params: True,
    # max_retry None and 0 differ from 1 in the callback only.
    "test_retry_heartbeat_stale_trial_callback": lambda params: params["max_retry"] != 1,
    # A grace period of 2 s given, or the default one of 2 s: the same run.
    "test_fail_stale_trials": lambda params: params["grace_period"] is not None,
    # 8 processes x 20 trials (30-60 s on 2 cores); several workers on PostgreSQL: tests/test_distributed.py.
    "test_multiprocess_run_optimize": lambda params: True,
}
# Optuna's tests of a database named by $TEST_DB_URL: written for a server; on SQLite they repeat
# test_storages.py's calls (run both with TTS_OPTUNA_SUITE=full).
_SERVER_TESTS = "test_with_server"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rsplit(".", 1)[-1] == _SERVER_TESTS:
        modes = ["sqlite", "postgresql"] if supplier.FULL else ["postgresql"]
        metafunc.parametrize("_database", modes, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, left_out = [], []
    for item in items:
        ours = _HERE in item.path.parents
        if ours:  # Optuna's settings ignore the first; the second, tests provoke by asking without optimize
            item.add_marker(pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"))
            item.add_marker(pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed"))
        if supplier.FULL:
            kept.append(item)
            continue
        name = getattr(item, "originalname", item.name)
        params = item.callspec.params if hasattr(item, "callspec") else {}
        (left_out if ours and name in _LEFT_OUT and _LEFT_OUT[name](params) else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


@pytest.fixture(autouse=True)
def _resilient_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optuna.storages, "RDBStorage", supplier.SuiteRDBStorage)
    plain_init = RDBStorage.__init__

    def only_resilient(self: RDBStorage, *args: object, **kwargs: object) -> None:
        assert isinstance(self, ResilientRDBStorage), f"the suite built a plain {type(self).__name__}"
        plain_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(RDBStorage, "__init__", only_resilient)


@pytest.fixture(autouse=True)
def _database(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The PostgreSQL server for a test in a PostgreSQL mode; $TEST_DB_URL for the server tests."""
    callspec = getattr(request.node, "callspec", None)
    modes = [v for v in callspec.params.values() if isinstance(v, str)] if callspec else []
    if any(mode in supplier.POSTGRES_MODES for mode in modes):
        supplier.serve_postgres(request.getfixturevalue("postgres"))
    mode = getattr(request, "param", None)
    if mode == "sqlite":
        monkeypatch.setenv("TEST_DB_URL", f"sqlite:///{tmp_path / 'server.db'}")
    elif mode == "postgresql":
        monkeypatch.setenv("TEST_DB_URL", supplier.postgres_url())
    else:
        monkeypatch.delenv("TEST_DB_URL", raising=False)
    monkeypatch.delenv("TEST_DB_MODE", raising=False)
