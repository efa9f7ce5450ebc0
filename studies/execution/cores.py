"""The last trial left running takes the cores its finished peers left idle.

`--workers N` shares a machine's cores out (cores // N torch threads each): N one-thread trainings do
more steps per second in total than one N-thread one (figures: docs/measurements.md). But a study with a
speech rung ends on one long promoted trial: the other workers have no trial left to start, leave,
and that trial would go on at one thread beside an idle core. So at each eval a worker's trial asks
the study whether it is alone (``is_alone``); if so its process raises torch's threads to all the
cores, once, and lowers them again when the trial ends. Nothing can start beside it afterwards: a
retry is queued only when a running trial fails, and it is the only one running.

Only local workers whose threads the search shared out do this (``--threads`` is the user's choice).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import optuna
import torch
from optuna.trial import TrialState

from studies.continuations_fold import is_continuation
from studies.record import FINISHED


@dataclass(frozen=True, slots=True)
class Counts:
    """A study's trials by state, as every worker reads them before it acts: the N of ``--trials N``
    (continuation trials, which run a screen's long rung, are not among them: ``continuing``)."""

    finished: int
    running: int
    waiting: int
    continuing: int = 0  # continuation trials running now


def counts(study: optuna.Study) -> Counts:
    every = study.get_trials(deepcopy=False)
    trials = [t for t in every if not is_continuation(t)]
    return Counts(
        finished=sum(t.state in FINISHED for t in trials),
        running=sum(t.state == TrialState.RUNNING for t in trials),
        waiting=sum(t.state == TrialState.WAITING for t in trials),
        continuing=sum(t.state == TrialState.RUNNING and is_continuation(t) for t in every),
    )


def is_alone(c: Counts, n_trials: int) -> bool:
    """The asking trial (itself running) is the only one running, none is queued, and the study needs
    no other trial started: finished + running already make ``n_trials``."""
    return c.running + c.continuing <= 1 and c.waiting == 0 and c.finished + c.running >= n_trials


@dataclass(frozen=True, slots=True)
class CoreShare:
    """A local worker's share of the machine: the cores it may take when alone, of a study of ``n_trials``."""

    cores: int
    n_trials: int

    @classmethod
    def for_worker(cls, n_trials: int) -> CoreShare:
        return cls(cores=os.cpu_count() or 1, n_trials=n_trials)


class Takeover:
    """One trial's use of a ``CoreShare``: ``check`` at each eval, ``restore`` when the trial ends."""

    def __init__(self, share: CoreShare, study: optuna.Study, number: int) -> None:
        self.share, self.study, self.number = share, study, number
        self.before: int | None = None  # torch's threads before the takeover; None: not taken

    def check(self, step: int) -> None:
        if self.before is not None or torch.get_num_threads() >= self.share.cores:
            return
        if is_alone(counts(self.study), self.share.n_trials):
            self.before = torch.get_num_threads()
            torch.set_num_threads(self.share.cores)
            print(
                f"trial {self.number}: the only trial left running: torch threads {self.before} -> "
                f"{self.share.cores} from step {step}",
                file=sys.stderr,
            )

    def restore(self) -> None:
        if self.before is not None:
            torch.set_num_threads(self.before)
            self.before = None
