"""The objective of an in-process study: one trial = one call of the user's training function.

The function gets the trial's params (a dict, by the space file's names) and a ``Reporter``; its loop
calls ``reporter.step(...)`` and ``reporter.eval(metric=...)``. A guard that fires, or the pruner,
raises out of those calls (``StopRun``), which ends up here: the user's loop need not catch it. An
exception of the user's own is that trial's FAIL, with the end of its traceback in the record, the way
a command that exits non-zero is; Ctrl-C goes through to the runner, which re-queues the trial. A loop
that hangs is interrupted at ``stall_s`` (or ``timeout_s``) where a signal reaches it
(``RunWatch.armed``: Python code, sleeps, locks, queues; not a C call that never returns, nor another
thread), else it ends at its next reporter call. A value the function returns is not read: said once,
with how to report it.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import optuna

from studies.execution.foreign_trial import (
    FailureStreak,
    ForeignTrial,
    OnStep,
    StreakObjective,
    say_once,
)
from studies.execution.objective import Objective
from studies.execution.trainer_process import TAIL_LINES
from studies.foreign import ForeignStudy
from studies.paths import StudyPaths
from studies.record import TrialRecord
from trainer.reporter import Reporter, StopRun

TrainFn = Callable[[dict[str, Any], Reporter], object]
SILENT = "call reporter.step(loss=...) every step and reporter.eval(metric=...) every eval"
NO_EVAL = 'call reporter.eval(metric=...) at each eval, or with no eval, [metrics] score = "last_loss"'


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
        params = study.space.suggest(trial)
        returned: list[object] = []
        with ForeignTrial(
            study,
            trial,
            paths,
            params,
            note=note,
            on_step=on_step,
            meta={"function": name},
            hint=lambda stepped: _hint(stepped, returned),
        ) as run:
            assert run.reporter is not None
            failure = tail = None
            try:
                with run.watch.armed():
                    returned.append(train(dict(params), run.reporter))
            except StopRun:
                pass  # a guard fired or the pruner said stop: the verdict is the reporter's
            except (Exception, SystemExit) as e:  # noqa: BLE001  (the user's loop crashed: its trial's FAIL)
                # A trainer that turns every exception into sys.exit (as some do) was still stopped by us.
                if run.reporter.verdict is None and not run.reporter.pruned:
                    failure, tail = _crash(e)
            if returned and returned[0] is not None and run.reporter.reported:
                note(f"{_returned(returned[0])} (the trial's value is the last reporter.eval)")
            record = run.finish(failure, output_tail=tail)
        streak.update(record, unread=run.unread)
        if record.fail_detail is not None and streak.fatal is None:  # else the search's last line says it
            say(f"trial {trial.number}: your function {record.fail_detail}")
        return record

    return StreakObjective(objective, streak)


def _returned(value: object) -> str:
    shown = repr(value) if len(repr(value)) <= 40 else f"a {type(value).__name__}"
    return f"train returned {shown}, which the search does not read: report it with reporter.eval(metric=...)"


def _hint(stepped: bool, returned: list[object]) -> str:
    """What to do when the function reported no metric: it may have returned it, Optuna's way."""
    if returned and returned[0] is not None:
        return _returned(returned[0])
    return NO_EVAL if stepped else SILENT


def _crash(e: BaseException) -> tuple[str, str]:
    """A crash in one line, and the end of its traceback for the record."""
    words = str(e).splitlines()[0] if str(e) else ""
    failure = f"raised {type(e).__name__}" + (f": {words}" if words else "")
    return failure, "\n".join(traceback.format_exc().strip().splitlines()[-TAIL_LINES:])
