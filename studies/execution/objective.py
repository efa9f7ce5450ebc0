"""The objective: one Optuna trial = one short, guarded run of the real trainer, and its record.

The trainer knows nothing of Optuna; this module adapts its eval hook to `trial.report` /
`trial.should_prune`, and writes the run's ``TrialRecord`` (the judge's verdict in Optuna's terms,
``studies.scoring``). The record carries the state the trial ends in: the runner tells Optuna exactly
that, so no verdict travels as an exception.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna

from studies.binding import trial_config
from studies.execution.runs import RunSetup, run_config
from studies.paths import trial_run
from studies.record import TrialRecord, record_eval, record_start, write_record
from studies.scoring import record_of
from trainer.evaluate import EvalMetrics
from trainer.loop import RunPlan
from trainer.results import StepMetrics

Objective = Callable[[optuna.Trial], TrialRecord]


def make_objective(
    setup: RunSetup, on_step: Callable[[int, int, StepMetrics], None] | None = None
) -> Objective:
    study = setup.study
    plan = RunPlan(decode_sentences=study.scoring.decode_sentences)

    def objective(trial: optuna.Trial) -> TrialRecord:
        cfg = trial_config(study, study.space.suggest(trial), seed=setup.seed, where=f"trial {trial.number}")
        record_start(trial, cfg.max_steps)

        def on_eval(ev: EvalMetrics, _sample) -> bool:
            trial.report(ev.val_mel, ev.step)
            record_eval(trial, ev.step, ev.stop_end_margin)  # read by the pruner
            return trial.should_prune()

        step_cb = (lambda m: on_step(trial.number, cfg.max_steps, m)) if on_step is not None else None
        run = run_config(
            setup, cfg, trial_run(study.name, trial.number), plan=plan, on_step=step_cb, on_eval=on_eval
        )
        record = record_of(run.verdict, run.result.summary)
        write_record(trial, record)
        return record

    return objective
