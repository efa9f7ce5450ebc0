"""What a running trial writes into Optuna, and when: at its start, at every eval, at its screen's end,
and its record when it ends. Readers get it all back as ``studies.record.TrialRecord``."""

from __future__ import annotations

import math

import optuna

from studies.record import TrialRecord
from studies.record_keys import LAST_STEP, MAX_STEPS, PROMOTED, STOP_MARGIN
from studies.rung_facts import RungFacts


def record_start(trial: optuna.Trial, max_steps: int) -> None:
    trial.set_user_attr(MAX_STEPS, max_steps)


def record_eval(trial: optuna.Trial, step: int, stop_end_margin: float) -> None:
    """What the objective writes at every eval, before it asks the pruner (a trainer without a stop
    head has no stop margin: NaN, left out)."""
    trial.set_user_attr(LAST_STEP, step)
    if math.isfinite(stop_end_margin):
        trial.set_user_attr(STOP_MARGIN, round(stop_end_margin, 4))


def record_screen(trial: optuna.Trial, screen: RungFacts, promoted: bool) -> None:
    """What the objective writes at the screen's end, before the run goes on (or not): the facts the
    next trials' promotion reads."""
    for key, value in {**screen.to_attrs(), PROMOTED: promoted}.items():
        trial.set_user_attr(key, value)


def write_record(trial: optuna.Trial, record: TrialRecord) -> None:
    for key, value in record.to_attrs().items():
        trial.set_user_attr(key, value)
    for key, value in record.constraints.items():
        trial.set_constraint(key, value)
