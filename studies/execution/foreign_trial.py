"""One trial of a user's trainer, whichever way it runs: its reporter, its telemetry, its record.

A command line (``command_trial.py``) and a Python function (``inprocess.py``) differ only in how the
numbers arrive; both hand them to the ``Reporter`` made here, so the same guards stop them, the same
pruner prunes them (``trial.report`` / ``should_prune`` at every eval, as for the project's trainer),
the same judge words them, and the same ``TrialRecord`` is written. A trainer that crashed without a
divergence, or ended without ever reporting its metric, is FAIL (``failed_by`` "trainer failed", not
re-queued: doing the same again would end the same way); after ``MAX_FAILURES_IN_A_ROW`` of those the
worker stops and says why, instead of asking for trial after trial of a broken trainer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from common.errors import UserError
from studies.foreign import ForeignStudy
from studies.paths import StudyPaths, trial_run
from studies.record import TrialRecord
from studies.record_keys import TRAINER_FAILED
from studies.scoring import record_of
from studies.trial_writes import record_eval, write_record
from trainer.evaluate import EvalMetrics
from trainer.hooks import RunWriter, open_writer
from trainer.judge import judge
from trainer.reporter import ReportedStep, Reporter
from trainer.telemetry import STATUS_FAILED

MAX_FAILURES_IN_A_ROW = 3
NO_METRIC = "ended without reporting its validation metric"
NO_NUMBERS = "reported no numbers at all"
OnStep = Callable[[int, int | None, ReportedStep], None]  # (trial number, its usual steps, the step)


class TrainerKeepsFailing(UserError):
    """The user's trainer failed several trials in a row: something is wrong with it, not the params."""


class FailureStreak:
    """Trials of this process that the trainer failed in a row; too many stops the worker."""

    def __init__(self) -> None:
        self.count, self.last = 0, ""

    def check(self) -> None:
        if self.count >= MAX_FAILURES_IN_A_ROW:
            raise TrainerKeepsFailing(
                f"your trainer failed {self.count} trials in a row (the last: {self.last}); fix it, then run "
                "the same command to continue"
            )

    def update(self, record: TrialRecord) -> None:
        failed = record.failed_by == TRAINER_FAILED
        self.count = self.count + 1 if failed else 0
        self.last = f"trial {record.number}: {record.fail_detail}" if failed else ""


def say_once(say: Callable[[str], None]) -> Callable[[str], None]:
    """``say`` that says each line once per process: which guards are off is the same every trial."""
    said: set[str] = set()

    def once(line: str) -> None:
        if line not in said:
            said.add(line)
            say(line)

    return once


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
        silent_hint: str = "",
    ) -> None:
        """``silent_hint``: what to check when the run reported nothing (how its numbers are read)."""
        self.study, self.trial, self.params = study, trial, dict(params)
        self.run_id = trial_run(study.name, trial.number)
        self.warmup = study.warmup_of(params)
        self._writer_cm = open_writer(paths.telemetry)
        self._note, self._on_step, self._meta = note, on_step, dict(meta or {})
        self._silent_hint = silent_hint
        self.writer: RunWriter | None = None
        self.reporter: Reporter | None = None

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
        )
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
        assert self.reporter is not None and self.writer is not None
        result = self.reporter.result()
        if failure is None and result.verdict is None and not result.stopped_by_callback:
            if result.steps == 0 and not self.reporter.reported:
                failure = NO_NUMBERS + (f" ({self._silent_hint})" if self._silent_hint else "")
            elif not self.reporter.reported:
                failure = NO_METRIC
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
