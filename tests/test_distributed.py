"""Many workers on one study, with real servers and real kills: nothing duplicated, nothing lost.

Each test runs ``search.py`` as users do (subprocesses, the ``stability-smoke`` study, a 24-utterance
corpus) against a PostgreSQL cluster started by ``tests/pg_harness.py`` or the SQLite default, and
kills workers with real signals. Heartbeats are 2 s (grace 6 s) so a dead worker is found quickly.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from studies.execution.runner import FAILED_BY_ATTR, PID_ATTR, RETRY_ATTR
from studies.execution.storage import HEARTBEAT_ENV, StorageError, resolve_storage
from studies.record_keys import PRESET as PRESET_ATTR
from tests.corpus_fixture import cache_env, corpus_paths  # noqa: F401  (session fixtures)
from tests.pg_harness import PgServer, poll_trials, postgres, wait_for  # noqa: F401

STUDY = "stability-smoke"
ROOT = Path(__file__).resolve().parents[1]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def search_cmd(storage: str | None, trials: int, workers: int, runs: Path, corpus) -> list[str]:
    cmd = [sys.executable, str(ROOT / "search.py"), "--study", STUDY, "--trials", str(trials)]
    cmd += ["--workers", str(workers), "--threads", "1", "--runs-dir", str(runs), "--device", "cpu"]
    cmd += ["--train-data", str(corpus.train), "--val-data", str(corpus.eval)]
    return cmd + (["--storage", storage] if storage else [])


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, HEARTBEAT_ENV: "2", "TTS_SEARCH_THREADS": "1", "OMP_NUM_THREADS": "1"}
    with open(log, "w", encoding="utf-8") as fh:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=fh, preexec_fn=_ctrl_c_as_in_a_terminal
        )


def _ctrl_c_as_in_a_terminal() -> None:
    """A shell starts background jobs with SIGINT ignored, and Python then never raises KeyboardInterrupt;
    the search is started here as a user would start it in a terminal, so the Ctrl-C tests hold even
    when the test run itself is a background job (it failed that way: the search ran on and exited 0)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def load(url: str) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=resolve_storage(url, STUDY, Path("runs")))


def trials_of(url: str) -> list[FrozenTrial]:
    try:
        resolved = resolve_storage(url, STUDY, Path("runs"))
    except StorageError:  # its SQLite folder is not there yet
        return []
    return poll_trials(resolved, STUDY)


def running_with_progress(url: str, exclude_pids: set[int] = frozenset()) -> FrozenTrial | None:
    """A RUNNING trial that has reported at least one eval (so it is well inside its training)."""
    for t in trials_of(url):
        pid = t.user_attrs.get(PID_ATTR)
        if t.state == TrialState.RUNNING and t.intermediate_values and pid not in exclude_pids:
            return t
    return None


def assert_complete(url: str, n: int, runs: Path) -> list[FrozenTrial]:
    """Exactly n finished trials, none RUNNING, no params run twice, every telemetry row present."""
    trials = load(url).get_trials()
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == n, [(t.number, t.state.name, t.user_attrs.get(FAILED_BY_ATTR)) for t in trials]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    params = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(params)) == n, "a trial's params were run twice"
    presets = [t.user_attrs[PRESET_ATTR] for t in finished if PRESET_ATTR in t.user_attrs]
    assert sorted(presets) == sorted(set(presets)), f"a preset ran twice: {presets}"
    db = sqlite3.connect(runs / STUDY / "telemetry.db")
    try:
        for t in finished:
            run_id = f"{STUDY}/trial-{t.number}"
            status = db.execute("select status from runs where run_id = ?", [run_id]).fetchone()
            assert status is not None and status[0] in ("finished", "pruned", "diverged"), (run_id, status)
            rows, last = db.execute(
                "select count(*), max(step) from steps where run_id = ?", [run_id]
            ).fetchone()
            assert rows == last == t.user_attrs["steps_run"], (run_id, rows, last)
    finally:
        db.close()
    return finished


def finish(proc: subprocess.Popen, log: Path, timeout: float = 240) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"search.py did not finish in {timeout} s; its log:\n{log.read_text()[-3000:]}")


def predecessor(t: FrozenTrial) -> int | None:
    """The trial this one repeats: Optuna's heartbeat retry history first, else our re-queue tag."""
    history = t.system_attrs.get("retry_history") or []
    return history[-1] if history else t.user_attrs.get(RETRY_ATTR)


def retry_of(trials: list[FrozenTrial], number: int) -> FrozenTrial | None:
    """The finished trial whose chain of retries leads back to trial `number`."""
    for t in trials:
        if t.state not in FINISHED:
            continue
        link = predecessor(t)
        while link is not None:
            if link == number:
                return t
            link = predecessor(trials[link])
    return None


def test_three_postgres_workers_reach_n_and_retry_a_killed_workers_trial(
    postgres: PgServer,  # noqa: F811
    corpus_paths,  # noqa: F811
    tmp_path: Path,
) -> None:
    postgres.reset()
    n, runs, log = 4, tmp_path / "runs", tmp_path / "search.log"
    proc = start(search_cmd(postgres.url, n, 3, runs, corpus_paths), log)
    victim = wait_for(lambda: running_with_progress(postgres.url), 120, what="a trial in progress")
    os.kill(victim.user_attrs[PID_ATTR], signal.SIGKILL)
    killed_at = time.time()
    assert finish(proc, log) == 0, log.read_text()[-3000:]

    finished = assert_complete(postgres.url, n, runs)
    trials = load(postgres.url).get_trials()
    assert trials[victim.number].state == TrialState.FAIL
    retry = retry_of(trials, victim.number)
    assert retry is not None, "the killed worker's trial was not retried"
    assert retry.params == victim.params
    assert retry.user_attrs[PID_ATTR] != victim.user_attrs[PID_ATTR]
    assert retry.datetime_start is not None
    found = trials[victim.number].datetime_complete.timestamp() - killed_at
    started = retry.datetime_start.timestamp() - killed_at
    print(
        f"\nPostgreSQL, heartbeat 2 s / grace 6 s: SIGKILL -> found stale {found:.1f} s, retry started {started:.1f} s"
    )
    assert len({t.user_attrs[PID_ATTR] for t in finished}) >= 2, "one worker did everything"


def test_sigint_leaves_nothing_running_and_the_same_command_completes(
    postgres: PgServer,  # noqa: F811
    corpus_paths,  # noqa: F811
    tmp_path: Path,
) -> None:
    postgres.reset()
    n, runs, log = 3, tmp_path / "runs", tmp_path / "search.log"
    cmd = search_cmd(postgres.url, n, 1, runs, corpus_paths)
    proc = start(cmd, log)
    victim = wait_for(lambda: running_with_progress(postgres.url), 120, what="a trial in progress")
    proc.send_signal(signal.SIGINT)
    assert finish(proc, log, timeout=30) == 130
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines[-1].startswith("interrupted:") and "run the same command to resume" in lines[-1], lines[-3:]
    assert "Traceback" not in log.read_text()
    trials = load(postgres.url).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[victim.number].state == TrialState.FAIL
    queued = [
        t for t in trials if t.state == TrialState.WAITING and t.user_attrs.get(RETRY_ATTR) == victim.number
    ]
    # A WAITING trial holds its enqueued params as Optuna's fixed_params until a worker picks it up.
    assert len(queued) == 1 and queued[0].system_attrs["fixed_params"] == victim.params

    proc = start(cmd, log)
    assert finish(proc, log) == 0, log.read_text()[-3000:]
    assert_complete(postgres.url, n, runs)
    assert retry_of(load(postgres.url).get_trials(), victim.number) is not None


def test_sqlite_two_workers_recover_a_killed_worker_and_a_ctrl_c(corpus_paths, tmp_path: Path) -> None:  # noqa: F811
    """The SQLite default has no heartbeat: a dead local worker is found by its pid instead."""
    n, runs, log = 4, tmp_path / "runs", tmp_path / "search.log"
    url = f"sqlite:///{runs.resolve() / STUDY / 'study.db'}"
    cmd = search_cmd(None, n, 2, runs, corpus_paths)
    proc = start(cmd, log)
    victim = wait_for(lambda: running_with_progress(url), 120, what="a trial in progress")
    os.kill(victim.user_attrs[PID_ATTR], signal.SIGKILL)
    killed_at = time.time()

    def retried() -> FrozenTrial | None:
        # Its params appear one by one as the worker's objective suggests them (from the fixed_params),
        # a moment after the trial turns RUNNING: seen empty once in CI when read in between.
        for t in trials_of(url):
            if (
                t.user_attrs.get(RETRY_ATTR) == victim.number
                and t.state == TrialState.RUNNING
                and len(t.params) == len(victim.params)
            ):
                return t
        return None

    retry = wait_for(retried, 60, what="the killed trial's retry")
    print(f"\nSQLite: SIGKILL -> retry started: {retry.datetime_start.timestamp() - killed_at:.1f} s")
    assert retry.params == victim.params
    proc.send_signal(signal.SIGINT)  # to the parent alone, as `kill -INT` would
    assert finish(proc, log, timeout=60) == 130
    assert "run the same command to resume" in log.read_text().strip().splitlines()[-1]
    assert not [t for t in trials_of(url) if t.state == TrialState.RUNNING]

    proc = start(cmd, log)
    assert finish(proc, log) == 0, log.read_text()[-3000:]
    trials = load(url).get_trials()
    assert_complete(url, n, runs)
    assert retry_of(trials, victim.number) is not None


# -- the rules themselves, in-process and in milliseconds ------------------------------------------
def _study(tmp_path: Path, heartbeat: bool) -> optuna.Study:
    from studies.execution.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=heartbeat)
    return optuna.create_study(study_name=STUDY, storage=storage)


def _failed(study: optuna.Study, x: float, **user_attrs) -> FrozenTrial:
    trial = study.ask()
    study._storage.set_trial_param(trial._trial_id, "x", x, optuna.distributions.FloatDistribution(0, 1))
    for k, v in user_attrs.items():
        trial.set_user_attr(k, v)
    study.tell(trial, state=TrialState.FAIL)
    return study.get_trials()[trial.number]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_heartbeat_retry_is_not_queued_twice_and_an_interrupt_is(tmp_path: Path, monkeypatch) -> None:
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from studies.execution.runner import requeue_interrupted

    monkeypatch.setenv(HEARTBEAT_ENV, "1")
    study = _study(tmp_path, heartbeat=True)
    interrupted = _failed(study, 0.7, **{FAILED_BY_ATTR: "interrupt", PRESET_ATTR: "basic"})
    stale = _failed(study, 0.5)  # what fail_stale_trials leaves: FAIL, no failed_by
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=3)(study, stale)  # Optuna queues the retry itself
    assert requeue_interrupted(study) == [interrupted.number]
    assert requeue_interrupted(study) == []  # idempotent
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 2
    again = [t for t in waiting if t.user_attrs.get(RETRY_ATTR) == interrupted.number]
    assert again[0].user_attrs[PRESET_ATTR] == "basic"


def test_racing_copies_of_a_queued_trial_are_dropped_and_surplus_trials_step_back(tmp_path: Path) -> None:
    from studies.execution.runner import _surplus, drop_duplicates

    study = _study(tmp_path, heartbeat=False)
    study.enqueue_trial({"x": 0.1}, user_attrs={PRESET_ATTR: "basic"})
    study.enqueue_trial(
        {"x": 0.1}, user_attrs={PRESET_ATTR: "basic"}, skip_if_exists=False
    )  # a second seeder
    assert drop_duplicates(study) == [1]
    assert [t.state for t in study.get_trials()] == [TrialState.WAITING, TrialState.FAIL]
    first, second = study.ask(), study.ask()  # two workers start the last of n = 1 slots at once
    assert not _surplus(study, first._trial_id, 1)
    assert _surplus(study, second._trial_id, 1)
