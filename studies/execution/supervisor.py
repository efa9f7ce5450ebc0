"""The parent of ``--workers N``: restart a worker that dies, and re-queue its trial at once.

A worker killed by a signal, the OOM killer or a crash used to stay dead: the study went on with
fewer workers, or none, and the parent then printed a summary of whatever was there. Here each
death is one line, the dead worker's RUNNING trial is failed (``failed_by``: "worker died") and
re-queued by ``runner.requeue_interrupted`` without waiting for a heartbeat to go stale (the parent
saw the pid die), and the worker is started again, up to ``MAX_RESTARTS`` times per worker. A
worker that *ends* (done, the study incomplete after its wait, the database gone, bad input,
Ctrl-C) is not restarted: doing the same again would end the same way.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from studies.execution.completion import EXIT_INCOMPLETE
from studies.execution.cores import counts
from studies.execution.resilience import EXIT_DB_UNAVAILABLE, DatabaseUnavailable
from studies.execution.runner import heartbeat_of, requeue_interrupted
from studies.execution.workers import last_log_line, spawn_worker

MAX_RESTARTS = 3  # per worker: a trial that kills its worker every time is also capped (MAX_ATTEMPTS)
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130
ENDED = (0, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_DB_UNAVAILABLE, EXIT_INTERRUPTED)


@dataclass(slots=True)
class Supervisor:
    """Local workers of one search; ``procs`` holds every process started, restarts included (the
    Ctrl-C path stops them all and re-queues what their pids left RUNNING)."""

    study: optuna.Study
    argv: list[str]
    n_workers: int
    n_trials: int
    threads_each: int
    log_dir: Path
    say: Callable[[str], None]
    procs: list[subprocess.Popen] = field(default_factory=list)
    restarts: list[int] = field(default_factory=list)

    def run(self, poll: Callable[[], None], interval: float = 1.0) -> list[str]:
        """Start the workers and watch them until every one has ended; return a line for each that
        ended with an error (not counting the deaths it was restarted after)."""
        current = [self._spawn(i) for i in range(self.n_workers)]
        self.procs.extend(current)
        self.restarts = [0] * self.n_workers
        ended: dict[int, int] = {}
        try:
            self._watch(current, ended, poll, interval)
        except DatabaseUnavailable:
            for proc in current:  # they cannot write either; what they leave RUNNING is found on resume
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            raise
        poll()
        # A worker given up on has had its line; one that ended on its own (database gone...) gets one.
        return [
            last_log_line(current[i]) for i, code in sorted(ended.items()) if code not in (0, EXIT_INCOMPLETE)
        ]

    def _watch(
        self,
        current: list[subprocess.Popen],
        ended: dict[int, int],
        poll: Callable[[], None],
        interval: float,
    ) -> None:
        beat = heartbeat_of(self.study)
        sweep_every = beat[0] if beat else None
        last_sweep = time.monotonic()
        while len(ended) < self.n_workers:
            poll()
            for i, proc in enumerate(current):
                code = proc.poll()  # polls every worker each round: polling reaps a dead one at once
                if code is None or i in ended:
                    continue
                if code in ENDED:
                    ended[i] = code
                    continue
                replacement = self._died(i, proc)
                if replacement is None:
                    ended[i] = 0  # its one line is said
                else:
                    current[i] = replacement
            if sweep_every is not None and time.monotonic() - last_sweep >= sweep_every:
                # The parent is idle: let it find stale trials (other machines' dead workers, or one of
                # ours killed before its first heartbeat) while every worker is busy training.
                requeue_interrupted(self.study)
                last_sweep = time.monotonic()
            time.sleep(interval)

    def _spawn(self, i: int, *, restart: int = 0) -> subprocess.Popen:
        args = [*self.argv, "--worker-index", str(i)]
        return spawn_worker(args, i, self.threads_each, self.log_dir, restart=restart)

    def _died(self, i: int, proc: subprocess.Popen) -> subprocess.Popen | None:
        """One line for a dead worker; re-queue its trial; restart it while it has restarts left."""
        requeued = requeue_interrupted(self.study, dead_pids=[proc.pid])
        how = _how(proc.returncode)
        what = f"; re-queued trial {', '.join(map(str, requeued))}" if requeued else ""
        if counts(self.study).finished >= self.n_trials:
            self.say(f"worker {i} (pid {proc.pid}) {how}{what}; the study is complete, not restarted")
            return None
        if self.restarts[i] >= MAX_RESTARTS:
            self.say(
                f"worker {i} (pid {proc.pid}) {how}{what}; not restarted: it died {MAX_RESTARTS + 1} times "
                f"(last words: {last_log_line(proc)})"
            )
            return None
        self.restarts[i] += 1
        replacement = self._spawn(i, restart=self.restarts[i])
        self.procs.append(replacement)
        self.say(
            f"worker {i} (pid {proc.pid}) {how}{what}; restarted as pid {replacement.pid} "
            f"({self.restarts[i]} of {MAX_RESTARTS})"
        )
        return replacement


def _how(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"crashed (exit code {code})"
