"""One trial of a user's trainer, whichever way it runs: its reporter, its telemetry, its record.

A command line (``command_trial.py``) and a Python function (``inprocess.py``) differ only in how the
numbers arrive; both hand them to the ``Reporter`` made here, so the same guards stop them, the same
pruner prunes them (``trial.report`` / ``should_prune`` at every eval, as for the project's trainer),
the same judge words them, and the same ``TrialRecord`` is written. A trainer that crashed without a
divergence, or ended without ever reporting its metric, is FAIL (``failed_by`` "trainer failed", not
re-queued: doing the same again would end the same way); after ``MAX_FAILURES_IN_A_ROW`` of those the
worker stops and says why, instead of asking for trial after trial of a broken trainer. A first trial
that reported no metric (or called ``reporter.report``) stops it at once, with the hint that fixes it:
that is how the trainer prints, not something the params change.

A run that goes quiet for ``stall_s`` (no metrics line, no reporter call) or runs past ``timeout_s`` is
the same kind of FAIL ("stalled after step K ..."): ``RunWatch`` keeps both clocks. A command is
stopped by its reader; a function in this process by a SIGALRM at the deadline, which raises
``Stalled`` wherever the loop hangs in Python code (a sleep, a queue, a lock, a socket) but not inside a
C call that never returns to the interpreter, nor in another thread: those end at the loop's next
reporter call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from common.errors import UserError
from studies.foreign import LAST_LOSS, ForeignStudy
from studies.paths import StudyPaths, trial_run
from studies.record import TrialRecord
from studies.record_keys import TRAINER_FAILED
from studies.scoring import record_of
from studies.trial_writes import record_eval, write_record
from trainer.evaluate import EvalMetrics
from trainer.hooks import RunWriter, open_writer
from trainer.judge import judge
from trainer.reporter import ReportedStep, Reporter, Stalled, StopRun
from trainer.telemetry import STATUS_FAILED

MAX_FAILURES_IN_A_ROW = 3
NO_METRIC = "ended without reporting its validation metric"
NO_NUMBERS = "reported no numbers at all"
OnStep = Callable[[int, int | None, ReportedStep], None]  # (trial number, its usual steps, the step)
Hint = Callable[[bool], str]  # (whether it reported steps) -> what to check when no metric came
REFIRE_S = 1.0  # a Stalled the loop swallowed is raised again this often


class TrainerKeepsFailing(UserError):
    """The user's trainer failed several trials in a row: something is wrong with it, not the params."""


class FailureStreak:
    """Trials of this process that the trainer failed in a row; too many stops the worker."""

    def __init__(self) -> None:
        self.count, self.last, self.ran = 0, "", 0
        self.fatal: str | None = None  # set by a first trial that shows the trainer does not report

    def check(self) -> None:
        """Raise when this worker must stop; the runner asks before it asks Optuna for a trial."""
        if self.fatal is not None:
            raise TrainerKeepsFailing(f"{self.fatal}; fix it, then run the same command to continue")
        if self.count >= MAX_FAILURES_IN_A_ROW:
            raise TrainerKeepsFailing(
                f"your trainer failed {self.count} trials in a row (the last: {self.last}); fix it, then run "
                "the same command to continue"
            )

    def update(self, record: TrialRecord, *, unread: bool = False) -> None:
        """``unread``: the trial failed because the search could not read its metric (the protocol)."""
        failed = record.failed_by == TRAINER_FAILED
        self.count = self.count + 1 if failed else 0
        self.last = f"trial {record.number}: {record.fail_detail}" if failed else ""
        if failed and unread and self.ran == 0:
            self.fatal = f"your trainer's first trial here (trial {record.number}) {record.fail_detail}"
        self.ran += 1


class StreakObjective:
    """An objective whose worker stops on the streak: the runner calls ``ready`` before it asks Optuna
    for a trial, so a worker that stops leaves no trial behind (a FAIL with no params)."""

    def __init__(self, run: Callable[[optuna.Trial], TrialRecord], streak: FailureStreak) -> None:
        self._run, self.streak = run, streak

    def ready(self) -> None:
        self.streak.check()

    def __call__(self, trial: optuna.Trial) -> TrialRecord:
        self.streak.check()
        return self._run(trial)


def say_once(say: Callable[[str], None]) -> Callable[[str], None]:
    """``say`` that says each line once per process: which guards are off is the same every trial."""
    said: set[str] = set()

    def once(line: str) -> None:
        if line not in said:
            said.add(line)
            say(line)

    return once


class Deadlines:
    """A run's two clocks: the quiet since its last report (``stall_s``) and its wall time
    (``timeout_s``); None: no limit. ``what``: what a report is, for the line that says it stalled."""

    def __init__(self, stall_s: float | None, timeout_s: float | None, what: str) -> None:
        self.stall_s, self.timeout_s, self.what = stall_s, timeout_s, what
        self.start()

    def start(self) -> None:
        self.began = self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def overdue(self, step: int | None) -> str | None:
        """Why the run is over (``step``: its last, None before its first), or None."""
        now = time.monotonic()
        at = "before its first step" if step is None else f"at step {step}"
        if self.timeout_s is not None and now - self.began >= self.timeout_s:
            return f"timed out after {self.timeout_s:g} s {at} ([study] timeout_s)"
        if self.stall_s is not None and now - self.last >= self.stall_s:
            after = "before its first step" if step is None else f"after step {step}"
            return f"stalled {after} (no {self.what} for {self.stall_s:g} s)"
        return None

    def left_s(self) -> float | None:
        """Seconds to the nearer deadline (None: none)."""
        ends = [self.last + self.stall_s] if self.stall_s is not None else []
        ends += [self.began + self.timeout_s] if self.timeout_s is not None else []
        return max(min(ends) - time.monotonic(), 0.001) if ends else None


class RunWatch:
    """The reporter's ``Watch``: every report resets the stall clock, and one that comes too late ends
    the run. ``check`` is for a reader between lines; ``armed`` for a loop in this process."""

    def __init__(self, deadlines: Deadlines) -> None:
        self.deadlines = deadlines
        self.reporter: Reporter | None = None
        self._armed = False

    def _step(self) -> int | None:
        assert self.reporter is not None
        return self.reporter.steps if self.reporter.stepped else None

    def enter(self) -> str | None:
        self._set(None)
        why = self.deadlines.overdue(self._step())
        self.deadlines.beat()
        return why

    def leave(self) -> None:
        if self._armed:
            self._set(self.deadlines.left_s())

    def check(self) -> None:
        """Raise ``Stalled`` (through the reporter, so every later call raises it too) once overdue."""
        why = self.deadlines.overdue(self._step())
        if why is not None:
            assert self.reporter is not None
            self.reporter.halt(Stalled(why))

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        """A SIGALRM at each deadline while the loop runs (on the main thread only: elsewhere the run
        ends at its next reporter call)."""
        if threading.current_thread() is not threading.main_thread() or self.deadlines.left_s() is None:
            yield
            return
        previous = signal.signal(signal.SIGALRM, self._fire)
        self._armed = True
        try:
            self._set(self.deadlines.left_s())
            yield
        finally:
            try:
                self._armed = False  # from here on an alarm raises nothing
            finally:  # even when one raised just before
                signal.setitimer(signal.ITIMER_REAL, 0.0)
                signal.signal(signal.SIGALRM, previous)

    def _fire(self, signum: int, frame: object) -> None:
        if not self._armed:
            return
        self._set(REFIRE_S)  # again, should the loop swallow this one
        why = self.deadlines.overdue(self._step())
        if why is None:  # early: a report reset the clock meanwhile
            self._set(self.deadlines.left_s())
            return
        assert self.reporter is not None
        self.reporter.halt(Stalled(why))

    def _set(self, seconds: float | None) -> None:
        if self._armed:
            signal.setitimer(signal.ITIMER_REAL, seconds or 0.0)


class ForeignTrial:
    """Open it around the run (``with``): the telemetry writer lives that long."""

    def __init__(
        self,
        study: ForeignStudy,
        trial: optuna.Trial,
        paths: StudyPaths,
        params: Mapping[str, Any],
        *,
        note: Callable[[str], None],
        on_step: OnStep | None = None,
        meta: Mapping[str, Any] | None = None,
        hint: Hint | None = None,
        what: str = "reporter call",
    ) -> None:
        """``hint``: what to check when the run reported no metric (how its numbers are read); ``what``:
        what a report is, for the line that says it stalled."""
        self.study, self.trial, self.params = study, trial, dict(params)
        self.run_id = trial_run(study.name, trial.number)
        self.warmup = study.warmup_of(params)
        self._writer_cm = open_writer(paths.telemetry)
        self._note, self._on_step, self._meta = note, on_step, dict(meta or {})
        self._hint = hint
        self.watch = RunWatch(Deadlines(study.stall_s, study.timeout_s, what))
        self.writer: RunWriter | None = None
        self.reporter: Reporter | None = None
        self.unread = False  # it failed for want of a metric the search could read

    def __enter__(self) -> ForeignTrial:
        self.writer = self._writer_cm.__enter__()
        self.writer.start_run(self.run_id, self.params, {"trainer": "foreign", **self._meta})
        step_cb = None
        if self._on_step is not None:
            on_step, number, usual = self._on_step, self.trial.number, self.study.steps
            step_cb = lambda r: on_step(number, usual, r)  # noqa: E731
        self.reporter = Reporter(
            self.study.guards,
            warmup_steps=self.warmup,
            run_id=self.run_id,
            writer=self.writer,
            on_step=step_cb,
            on_eval=self._on_eval,
            note=self._note,
            watch=self.watch,
            score_last_loss=self.study.score == LAST_LOSS,
        )
        self.watch.reporter = self.reporter
        self.watch.deadlines.start()  # with the run, not with the search's setup of it
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer_cm.__exit__(*exc)

    def _on_eval(self, ev: EvalMetrics) -> bool:
        self.trial.report(ev.val_mel, ev.step)
        record_eval(self.trial, ev.step, ev.stop_end_margin)
        return self.trial.should_prune()

    def finish(self, failure: str | None = None, **facts: Any) -> TrialRecord:
        """Judge the run and write its record; ``failure``: why it is FAIL instead (a crash), or None.
        ``facts``: TrialRecord fields the way it ran adds (the command, its exit code, how it stopped)."""
        reporter = self.reporter
        assert reporter is not None and self.writer is not None
        if failure is None and reporter.stalled is not None:
            failure = str(reporter.stalled)
        if failure is None and reporter.score_last_loss and reporter.stepped and not reporter.over:
            with contextlib.suppress(StopRun):  # its one eval may diverge (non-finite) or be pruned
                reporter.score_last()
        result = reporter.result()
        if failure is None and result.verdict is None and not result.stopped_by_callback:
            if not reporter.reported:
                failure = NO_METRIC if reporter.stepped else NO_NUMBERS
                hint = self._hint(reporter.stepped) if self._hint is not None else ""
                failure += f" ({hint})" if hint else ""
                self.unread = True
        self.unread = self.unread or reporter.misused
        if failure is not None:
            record = TrialRecord(
                state=TrialState.FAIL,
                failed_by=TRAINER_FAILED,
                fail_detail=failure,
                steps_run=result.steps,
                guards_off=result.guards_off,
                **facts,
            )
            self.writer.finish_run(self.run_id, STATUS_FAILED, {"detail": failure})
        else:
            verdict = judge(result, self.study.guards, warmup_steps=self.warmup)
            record = record_of(verdict, result.summary)
            facts.pop("output_tail", None)  # kept for failures only: the record of a good run stays small
            record = dataclasses.replace(record, **facts)
            self.writer.finish_run(self.run_id, verdict.status, verdict.verdict_columns())
        write_record(self.trial, record)
        return dataclasses.replace(record, number=self.trial.number)
