"""A command-line study under a killed worker, a Ctrl-C and a rerun: no trainer left behind, nothing lost.

As ``tests/test_distributed.py`` does for the project's trainer: ``search.py`` runs as a user starts it
(a subprocess, SIGINT as a terminal's Ctrl-C would deliver it, the SQLite default), and its workers are
killed with real signals. The trainer is ``tests/byot_trainer.py`` with ``--helper``: it starts a child
process of its own, as a DataLoader worker would, so "no orphan" covers what the trainer started too.
Every process of a test carries a marker in its environment (inherited by the workers, the trainers and
their helpers), so the test can list exactly its own processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from studies.execution.runner import DIED, FAILED_BY_ATTR, INTERRUPT, PID_ATTR, RETRY_ATTR
from tests.pg_harness import poll_trials, wait_for
from tests.test_command_study import SPACE, TRAINER, alive, trace

ROOT = Path(__file__).resolve().parents[1]
MARK = "BYOT_CHAOS_MARK"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# 80 steps of 50 ms: a trial lasts 4 s, long enough to be killed in the middle of.
COMMAND = f"{TRAINER} --steps 80 --sleep 0.05 --helper --trace {{run_dir}}/trace.txt"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def search_cmd(study: str, runs: Path, trials: int, workers: int) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "search.py"),
        *("--study", study, "--space", str(SPACE), "--command", COMMAND),
        *("--trials", str(trials), "--workers", str(workers), "--runs-dir", str(runs)),
    ]


def start(cmd: list[str], log: Path, mark: str) -> subprocess.Popen:
    env = {**os.environ, MARK: mark, "OMP_NUM_THREADS": "1", "TTS_SEARCH_THREADS": "1"}
    with open(log, "a", encoding="utf-8") as fh:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=fh, preexec_fn=_ctrl_c_as_in_a_terminal
        )


def _ctrl_c_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # see tests/test_distributed.py


def finish(proc: subprocess.Popen, log: Path, timeout: float = 180) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"search.py did not finish in {timeout} s; its log:\n{log.read_text()[-3000:]}")


def marked(mark: str) -> list[tuple[int, str]]:
    """(pid, command line) of every live process carrying this test's marker: the search, its workers,
    their trainers and the trainers' helpers."""
    found = []
    needle = f"{MARK}={mark}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes().split(b"\0") and alive(int(environ.parent.name)):
                cmdline = (environ.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append((int(environ.parent.name), cmdline))
        except OSError:
            continue
    return found


def trials_of(runs: Path, study: str) -> list[FrozenTrial]:
    return poll_trials(f"sqlite:///{runs / study / 'study.db'}", study)


def in_progress(runs: Path, study: str) -> FrozenTrial | None:
    """A RUNNING trial past its first eval whose trainer has written its trace (pid and helper)."""
    for t in trials_of(runs, study):
        if t.state == TrialState.RUNNING and t.intermediate_values:
            path = runs / study / "trials" / f"trial-{t.number}" / "trace.txt"
            if path.exists() and "helper" in path.read_text():
                return t
    return None


def retry_of(trials: list[FrozenTrial], number: int) -> FrozenTrial | None:
    return next((t for t in trials if t.user_attrs.get(RETRY_ATTR) == number), None)


def test_a_killed_worker_leaves_no_trainer_behind_then_ctrl_c_and_a_rerun_finish_the_study(
    tmp_path: Path,
) -> None:
    mark, runs, log, n = uuid.uuid4().hex, tmp_path / "runs", tmp_path / "search.log", 4
    cmd = search_cmd("chaos", runs, n, 2)
    proc = start(cmd, log, mark)
    try:
        victim = wait_for(lambda: in_progress(runs, "chaos"), 180, what="a trial in progress")
        seen = trace(runs, "chaos", victim.number)
        trainer, helper = seen["pid"][0], seen["helper"][0]
        os.kill(victim.user_attrs[PID_ATTR], signal.SIGKILL)  # the worker, mid-trial
        killed = time.monotonic()
        wait_for(
            lambda: not alive(trainer) and not alive(helper), 20, 0.05, what="the dead worker's trainer to go"
        )
        gone = time.monotonic() - killed
        retry = wait_for(
            lambda: (r := retry_of(trials_of(runs, "chaos"), victim.number)) and len(r.params) == 3 and r,
            120,
            what="the killed trial's retry",
        )
        print(f"\nworker SIGKILL -> its trainer and the trainer's helper gone in {gone:.2f} s")
        assert retry.params == victim.params
        assert trials_of(runs, "chaos")[victim.number].user_attrs[FAILED_BY_ATTR] == DIED

        proc.send_signal(signal.SIGINT)  # Ctrl-C to the search
        assert finish(proc, log, timeout=90) == 130
        assert "run the same command to resume" in log.read_text().strip().splitlines()[-1]
        assert marked(mark) == []  # no worker, no trainer, no helper
        assert not [t for t in trials_of(runs, "chaos") if t.state == TrialState.RUNNING]

        proc = start(cmd, log, mark)  # the rerun
        assert finish(proc, log) == 0, log.read_text()[-3000:]
        trials = trials_of(runs, "chaos")
        finished = [t for t in trials if t.state in FINISHED]
        assert len(finished) == n and not [t for t in trials if t.state == TrialState.RUNNING]
        chain = retry_of(trials, victim.number)
        while chain is not None and chain.state not in FINISHED:  # a retry interrupted by the Ctrl-C
            chain = retry_of(trials, chain.number)
        assert chain is not None and chain.params == victim.params, "the killed trial never finished"
        assert marked(mark) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid, _ in marked(mark):
            os.kill(pid, signal.SIGKILL)


def test_ctrl_c_stops_the_trainer_and_the_rerun_runs_the_trial_again(tmp_path: Path) -> None:
    mark, runs, log = uuid.uuid4().hex, tmp_path / "runs", tmp_path / "search.log"
    cmd = search_cmd("ctrl-c", runs, 2, 1)
    proc = start(cmd, log, mark)
    try:
        victim = wait_for(lambda: in_progress(runs, "ctrl-c"), 180, what="a trial in progress")
        seen = trace(runs, "ctrl-c", victim.number)
        proc.send_signal(signal.SIGINT)
        assert finish(proc, log, timeout=60) == 130
        assert not alive(seen["pid"][0]) and not alive(seen["helper"][0]) and marked(mark) == []
        assert "Traceback" not in log.read_text()
        trials = trials_of(runs, "ctrl-c")
        assert trials[victim.number].state == TrialState.FAIL
        assert trials[victim.number].user_attrs[FAILED_BY_ATTR] == INTERRUPT
        queued = retry_of(trials, victim.number)
        assert queued is not None and queued.state == TrialState.WAITING

        proc = start(cmd, log, mark)
        assert finish(proc, log) == 0, log.read_text()[-3000:]
        trials = trials_of(runs, "ctrl-c")
        assert len([t for t in trials if t.state in FINISHED]) == 2
        assert retry_of(trials, victim.number).state in FINISHED
        assert retry_of(trials, victim.number).params == victim.params
        assert marked(mark) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid, _ in marked(mark):
            os.kill(pid, signal.SIGKILL)
