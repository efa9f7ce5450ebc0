"""Run a study to a total of N finished trials, with any number of local workers, resumably.

`--trials N` is the total the study should reach: a re-run after Ctrl-C or a crash runs only the
remainder. A trial interrupted by Ctrl-C ends FAIL (Optuna's own doing) and is re-queued with its
params and preset tag, so nothing finished is run again and nothing started is lost.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from studies.presets_seed import PRESET_ATTR

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
RETRY_ATTR = "retry_of"
HOST_ATTR, PID_ATTR = "host", "pid"


@dataclass(frozen=True, slots=True)
class Counts:
    finished: int
    running: int
    waiting: int


def counts(study: optuna.Study) -> Counts:
    trials = study.get_trials(deepcopy=False)
    return Counts(
        finished=sum(t.state in FINISHED for t in trials),
        running=sum(t.state == TrialState.RUNNING for t in trials),
        waiting=sum(t.state == TrialState.WAITING for t in trials),
    )


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Re-queue trials that FAILed (Ctrl-C, crash) and were never retried, with params and preset tag.

    Also fails and re-queues RUNNING trials whose worker process on this host is gone (SQLite has no
    heartbeat; a worker killed with SIGKILL leaves its trial RUNNING forever otherwise).
    """
    trials = study.get_trials(deepcopy=False)
    storage = study._storage
    host = socket.gethostname()
    for t in trials:
        if t.state == TrialState.RUNNING and t.user_attrs.get(HOST_ATTR) == host:
            pid = t.user_attrs.get(PID_ATTR)
            if isinstance(pid, int) and not _alive(pid):
                storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_ATTR) for t in trials}
    requeued = []
    for t in trials:
        if t.state == TrialState.FAIL and t.number not in retried and t.user_attrs.get(RETRY_ATTR) is None:
            attrs = {RETRY_ATTR: t.number}
            if PRESET_ATTR in t.user_attrs:
                attrs[PRESET_ATTR] = t.user_attrs[PRESET_ATTR]
            study.enqueue_trial(t.params, user_attrs=attrs, skip_if_exists=False)
            requeued.append(t.number)
    return requeued


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_worker(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    on_trial_end: Callable[[], None] | None = None,
) -> None:
    """Run trials one at a time until the study holds `n_trials` finished ones (counting running peers)."""
    host, pid = socket.gethostname(), os.getpid()

    def tagged(trial: optuna.Trial) -> float:
        trial.set_user_attr(HOST_ATTR, host)
        trial.set_user_attr(PID_ATTR, pid)
        return objective(trial)

    while True:
        c = counts(study)
        if c.finished + c.running >= n_trials:
            return
        study.optimize(tagged, n_trials=1, catch=(), gc_after_trial=True, show_progress_bar=False)
        if on_trial_end is not None:
            on_trial_end()


def spawn_workers(argv: list[str], n: int, threads_each: int) -> list[subprocess.Popen]:
    """Start `n` worker processes of this same command; they share the study through its storage."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_each), "TTS_SEARCH_THREADS": str(threads_each)}
    procs = []
    for i in range(n):
        cmd = [sys.executable, *argv, "--worker-index", str(i)]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        )
    return procs


def wait_workers(procs: list[subprocess.Popen], poll: Callable[[], None], interval: float = 1.0) -> list[str]:
    """Poll until every worker has exited; return the last stderr line of each that failed."""
    errors: list[str] = []
    while any(p.poll() is None for p in procs):
        poll()
        time.sleep(interval)
    poll()
    for p in procs:
        if p.returncode not in (0, None):
            err = (p.stderr.read() if p.stderr else "").strip().splitlines()
            errors.append(err[-1] if err else f"worker exited with code {p.returncode}")
    return errors
