"""Long runs side by side: ``--workers N`` runs an evidence command's runs in N spawned processes.

A transfer check is K runs of thousands of steps each, one after the other an hour and more on a CPU.
Two one-thread processes train more steps per second in total than one two-thread process (6.9 against
4.7 on a 2-core machine, tiny model, batch 16), so the runs are spread over worker processes, each with
``cores / N`` torch threads. A worker loads the data itself (from the feature cache: seconds) instead of
receiving it pickled, and is spawned, not forked: torch's thread pools do not survive a fork.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from studies.objective import TrialSetup
from studies.registry import StudyDef

Job = TypeVar("Job")
Out = TypeVar("Out")


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerSpec:
    """What a worker process needs to build the same ``TrialSetup`` as the parent."""

    study: StudyDef
    train_data: Path | None
    val_data: Path | None
    device: torch.device
    telemetry_path: Path
    seed: int
    threads: int


_setup: TrialSetup | None = None  # the worker process's own, built once by _start


def _start(spec: WorkerSpec) -> None:
    from studies.launch import load_data

    global _setup
    torch.set_num_threads(spec.threads)
    data = load_data(spec.train_data, spec.val_data, None)
    _setup = TrialSetup(spec.study, data, spec.device, spec.telemetry_path, spec.seed)


def _call(fn: Callable[[TrialSetup, Job], Out], job: Job) -> Out:
    assert _setup is not None, "worker started without its setup"
    return fn(_setup, job)


def run_jobs(
    fn: Callable[[TrialSetup, Job], Out],
    jobs: Sequence[Job],
    *,
    setup: TrialSetup,
    workers: int,
    spec: WorkerSpec | None,
) -> Iterator[tuple[int, Out]]:
    """``fn(setup, job)`` for every job, yielding ``(index, result)`` as each finishes.

    One worker: in this process, in order. More: ``fn`` must be a module-level function, and jobs and
    results must pickle. A run that raises stops the whole command, as it would in this process.
    """
    if workers <= 1 or len(jobs) <= 1 or spec is None:
        for i, job in enumerate(jobs):
            yield i, fn(setup, job)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)), mp_context=context, initializer=_start, initargs=(spec,)
    ) as pool:
        futures = {pool.submit(_call, fn, job): i for i, job in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
