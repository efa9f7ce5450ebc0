"""The objective of an in-process study: one trial = one call of the user's training function.

The function gets the trial's params (a dict, by the space file's names) and a ``Reporter``; its loop
calls ``reporter.step(...)`` and ``reporter.eval(metric=...)``. A guard that fires, or the pruner,
raises out of those calls (``StopRun``), which ends up here: the user's loop need not catch it. An
exception of the user's own is that trial's FAIL, with the end of its traceback in the record, the way
a command that exits non-zero is; Ctrl-C goes through to the runner, which re-queues the trial.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import optuna

from studies.execution.foreign_trial import FailureStreak, ForeignTrial, OnStep, say_once
from studies.execution.objective import Objective
from studies.execution.trainer_process import TAIL_LINES
from studies.foreign import ForeignStudy
from studies.paths import StudyPaths
from studies.record import TrialRecord
from trainer.reporter import Reporter, StopRun

TrainFn = Callable[[dict[str, Any], Reporter], object]


def make_function_objective(
    study: ForeignStudy,
    train: TrainFn,
    paths: StudyPaths,
    say: Callable[[str], None],
    on_step: OnStep | None = None,
) -> Objective:
    streak, note = FailureStreak(), say_once(say)
    name = getattr(train, "__qualname__", repr(train))

    def objective(trial: optuna.Trial) -> TrialRecord:
        streak.check()
        params = study.space.suggest(trial)
        with ForeignTrial(
            study, trial, paths, params, note=note, on_step=on_step, meta={"function": name}
        ) as run:
            assert run.reporter is not None
            failure = tail = None
            try:
                train(dict(params), run.reporter)
            except StopRun:
                pass  # a guard fired or the pruner said stop: the verdict is the reporter's
            except (Exception, SystemExit) as e:  # noqa: BLE001  (the user's loop crashed: its trial's FAIL)
                # A trainer that turns every exception into sys.exit (as some do) was still stopped by us.
                if run.reporter.verdict is None and not run.reporter.pruned:
                    failure, tail = _crash(e)
            record = run.finish(failure, output_tail=tail)
        streak.update(record)
        if failure is not None:
            say(f"trial {trial.number}: your function {failure}")
        return record

    return objective


def _crash(e: BaseException) -> tuple[str, str]:
    """A crash in one line, and the end of its traceback for the record."""
    words = str(e).splitlines()[0] if str(e) else ""
    failure = f"raised {type(e).__name__}" + (f": {words}" if words else "")
    return failure, "\n".join(traceback.format_exc().strip().splitlines()[-TAIL_LINES:])
