"""Long runs side by side: ``--workers N`` runs an evidence command's runs in N worker processes.

A transfer check is K runs of thousands of steps each, one after the other an hour and more on a CPU.
Two one-thread processes train more steps per second in total than one two-thread process (figures:
docs/measurements.md), so the runs are spread over worker processes, each with ``cores / N`` torch
threads. The workers are started by the same ``spawn_worker`` as a search's trial
workers (threads, card, log file, Ctrl-C), one process per run: ``python -m studies.execution.pool
JOB_FILE``. A job file holds the function, its job and the ``SetupSpec`` (pickled); the worker builds
its own ``RunSetup`` (the data from the feature cache: seconds), runs the job and writes the result
beside it, then exits. A run that fails stops the whole command, as it would in this process.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from studies.execution.runs import RunSetup, SetupSpec
from studies.execution.workers import last_log_line, spawn_worker, stop_workers, worker_threads
from tts_model.cache import atomic_write

Job = TypeVar("Job")
Out = TypeVar("Out")
POLL_S = 0.5


class WorkerFailed(RuntimeError):
    """A long-run worker exited without a result."""


def run_jobs(
    fn: Callable[[RunSetup, Job], Out],
    jobs: Sequence[Job],
    *,
    setup: RunSetup,
    workers: int,
    spec: SetupSpec | None,
    threads_each: int = 1,
) -> Iterator[tuple[int, Out]]:
    """``fn(setup, job)`` for every job, yielding ``(index, result)`` as each finishes.

    One worker (or no ``spec``): in this process, in order. More: ``fn`` must be a module-level
    function, and jobs and results must pickle.
    """
    if workers <= 1 or len(jobs) <= 1 or spec is None:
        for i, job in enumerate(jobs):
            yield i, fn(setup, job)
        return
    folder = spec.paths.worker_logs / f"jobs-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    waiting = list(range(len(jobs)))
    running: dict[int, subprocess.Popen] = {}  # job index -> its process
    slots: dict[int, int] = {}  # job index -> its worker slot (the card it gets, its log)
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                i = waiting.pop(0)
                path = folder / f"job-{i}.pkl"
                atomic_write(path, lambda tmp, i=i: tmp.write_bytes(pickle.dumps((fn, jobs[i], spec))))
                args = ["-m", "studies.execution.pool", str(path)]
                slot = min(set(range(workers)) - set(slots.values()))
                slots[i] = slot
                running[i] = spawn_worker(
                    args, slot, threads_each, spec.paths.worker_logs, name="long-run", title="long run"
                )
            for i, proc in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del running[i], slots[i]
                result = _result_path(folder / f"job-{i}.pkl")
                if code != 0 or not result.exists():
                    raise WorkerFailed(f"long run {i + 1} of {len(jobs)} failed: {last_log_line(proc)}")
                yield i, pickle.loads(result.read_bytes())
            time.sleep(POLL_S)
    finally:
        stop_workers(list(running.values()))
        shutil.rmtree(folder, ignore_errors=True)


def _result_path(job_file: Path) -> Path:
    return job_file.with_suffix(".out.pkl")


def _work(job_file: Path) -> None:
    """The worker's side: build the setup, run the one job, write its result atomically."""
    fn, job, spec = pickle.loads(job_file.read_bytes())
    torch.set_num_threads(worker_threads(torch.get_num_threads()))
    out = fn(spec.build(), job)
    atomic_write(_result_path(job_file), lambda tmp: tmp.write_bytes(pickle.dumps(out)))


if __name__ == "__main__":
    _work(Path(sys.argv[1]))
