"""Does the study hold exactly N finished trials? The exit code and the one line that say so.

Every process of a search (the parent, each worker) ends by asking this, so exit 0 means what it
says: N finished and nothing of ours RUNNING. Otherwise one line (how many of N, what is RUNNING or
failed and why, what to do) and ``EXIT_INCOMPLETE``, distinct from 2 (bad input) and 130 (Ctrl-C).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from studies.continuations_fold import is_continuation
from studies.execution.runner import DUPLICATE, SURPLUS, retried_numbers
from studies.record import FINISHED
from studies.record_keys import FAILED_BY as FAILED_BY_ATTR
from studies.record_keys import HOST as HOST_ATTR
from studies.record_keys import PID as PID_ATTR

EXIT_INCOMPLETE = 3  # the study does not hold N finished trials yet; distinct from 2 (bad input) and 130


@dataclass(frozen=True, slots=True)
class Completion:
    """Whether a study holds exactly N finished trials, and what stands in the way if not."""

    n: int
    finished: int
    running: tuple[int, ...]  # trials still RUNNING that the processes asked about started
    failed: tuple[tuple[str, int], ...]  # (failed_by, how many) over FAIL trials never retried

    @property
    def ok(self) -> bool:
        return self.finished == self.n and not self.running

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else EXIT_INCOMPLETE

    def line(self) -> str:
        """One line for a user: how far, what is in the way, what to do."""
        parts = [f"incomplete: {self.finished} of {self.n} trials finished"]
        if self.finished > self.n:
            parts[0] += f" (more than {self.n}: two workers raced past the surplus check)"
        if self.running:
            parts.append(f"still RUNNING: {', '.join(map(str, self.running))}")
        if self.failed:
            parts.append("failed and not retried: " + ", ".join(f"{k} x {why}" for why, k in self.failed))
        return "; ".join(parts) + "; run the same command to continue"


def completion(study: optuna.Study, n: int, pids: Iterable[int] = ()) -> Completion:
    """How the study stands against `--trials n`; `pids` are this machine's processes of this search
    (the caller and its workers): their RUNNING trials count against it, other machines' do not."""
    host, mine = socket.gethostname(), {os.getpid(), *pids}
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    running = tuple(
        t.number
        for t in trials
        if t.state == TrialState.RUNNING
        and t.user_attrs.get(HOST_ATTR) == host
        and t.user_attrs.get(PID_ATTR) in mine
    )
    failed: dict[str, int] = {}
    for t in trials:
        reason = str(t.user_attrs.get(FAILED_BY_ATTR, "no reason recorded"))
        if t.state == TrialState.FAIL and t.number not in retried and reason not in (SURPLUS, DUPLICATE):
            failed[reason] = failed.get(reason, 0) + 1
    return Completion(
        n=n,
        finished=sum(t.state in FINISHED and not is_continuation(t) for t in trials),
        running=running,
        failed=tuple(sorted(failed.items())),
    )


def exit_status(study: optuna.Study, n: int, say: Callable[[str], None], pids: Iterable[int] = ()) -> int:
    """0 when the study holds exactly `n` finished trials and none of ours is RUNNING; otherwise
    ``say`` one line (how many of n, what is RUNNING or failed and why, what to do) and return 3."""
    done = completion(study, n, pids)
    if not done.ok:
        say(done.line())
    return done.exit_code
