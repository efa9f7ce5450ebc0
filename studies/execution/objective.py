"""The objective: one Optuna trial = one short, guarded run of the real trainer, and its record.

The trainer knows nothing of Optuna; this module adapts its eval hook to `trial.report` /
`trial.should_prune`, and writes the run's ``TrialRecord`` (the judge's verdict in Optuna's terms,
``studies.scoring``). The record carries the state the trial ends in: the runner tells Optuna exactly
that, so no verdict travels as an exception.

In a study with a speech rung, the run is planned to the long rung and its screen's end is a rung of
the trainer (``RunPlan.rungs``): there the screen is judged, recorded, and ``studies.promotion``
decides whether the same run goes on (the same trial, the same model: no restart) or ends there.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import optuna

from studies.binding import trial_config, trial_steps
from studies.evidence.diagnoses import measured_edge
from studies.execution.cores import CoreShare, Takeover
from studies.execution.runs import RunSetup, run_config
from studies.paths import trial_run
from studies.promotion import promote
from studies.record import TrialRecord, load_records
from studies.rung_facts import RungFacts
from studies.scoring import record_of
from studies.trial_writes import record_eval, record_screen, record_start, write_record
from trainer.evaluate import EvalMetrics
from trainer.judge import finished_at
from trainer.loop import RunPlan
from trainer.results import StepMetrics

Objective = Callable[[optuna.Trial], TrialRecord]


def make_objective(
    setup: RunSetup,
    on_step: Callable[[int, int, StepMetrics], None] | None = None,
    *,
    share: CoreShare | None = None,
) -> Objective:
    """``share``: a local worker's cores, taken when its trial is the last one running
    (``studies.execution.cores``)."""
    study = setup.study
    rung = study.speech_rung

    def objective(trial: optuna.Trial) -> TrialRecord:
        overrides = study.space.suggest(trial)
        warmup = int(overrides[study.space.warmup_param])
        screen_end = trial_steps(study, warmup)
        steps = screen_end if rung is None else warmup + rung.horizon
        cfg = trial_config(study, overrides, seed=setup.seed, where=f"trial {trial.number}", steps=steps)
        record_start(trial, screen_end)
        screen: list[RungFacts] = []  # set at the screen's end when the study has a speech rung
        takeover = Takeover(share, trial.study, trial.number) if share is not None else None

        def on_eval(ev: EvalMetrics, _sample) -> bool:
            if takeover is not None:
                takeover.check(ev.step)
            trial.report(ev.val_mel, ev.step)
            record_eval(trial, ev.step, ev.stop_end_margin)  # read by the pruner
            # Past the screen, a promoted trial is judged at its rung's end, not pruned on mel on the way.
            return ev.step <= screen_end and trial.should_prune()

        def on_rung(ev: EvalMetrics) -> bool:
            assert rung is not None
            verdict = finished_at(ev, cfg.guards, steps=ev.step)
            decode = ev.decode
            facts = RungFacts(
                step=ev.step,
                val_mel=ev.val_mel,
                verdict=verdict.outcome,
                decode_ratio=_finite(decode.ratio) if decode is not None else None,
                speaks=verdict.speaks,
            )
            others = [r for r in load_records(trial.study) if r.number != trial.number]
            peers = [r.screen for r in others if r.screen is not None]
            promoted_so_far = sum(r.promoted is True for r in others)
            go_on = promote(facts, peers, rung, promoted_so_far=promoted_so_far)
            record_screen(trial, facts, go_on)
            screen.append(facts)
            return go_on

        plan = RunPlan(
            decode_sentences=study.scoring.decode_sentences, rungs=(screen_end,) if rung is not None else ()
        )
        step_cb = (lambda m: on_step(trial.number, cfg.max_steps, m)) if on_step is not None else None
        try:
            run = run_config(
                setup,
                cfg,
                trial_run(study.name, trial.number),
                plan=plan,
                on_step=step_cb,
                edge=measured_edge(trial.study),  # a divergence's lr against the study's edge
                on_eval=on_eval,
                on_rung=on_rung if rung is not None else None,
            )
        finally:
            if takeover is not None:
                takeover.restore()
        record = record_of(run.verdict, run.result.summary)
        if screen:
            promoted = run.result.steps > screen[0].step
            record = dataclasses.replace(record, screen=screen[0], promoted=promoted, rung=int(promoted))
        write_record(trial, record)
        return record

    return objective


def _finite(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None
