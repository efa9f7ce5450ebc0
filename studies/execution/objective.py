"""The objective: one Optuna trial = one short, guarded run of the real trainer, and its record.

The trainer knows nothing of Optuna; this module adapts its eval hook to `trial.report` /
`trial.should_prune`, and writes the run's ``TrialRecord`` (the judge's verdict in Optuna's terms,
``studies.scoring``). The record carries the state the trial ends in: the runner tells Optuna exactly
that, so no verdict travels as an exception.

In a study with a speech rung, the run is planned to the long rung and its screen's end is a rung of
the trainer (``RunPlan.rungs``): there the screen is judged and recorded, and the run ends, leaving its
state in the trial's folder. ``studies.promotion`` decides, by rank among all the study's screens, which
screens go on: the objective's ``claim`` (called by the worker before it asks for a trial) makes the
continuation trial of one that is due, and this objective runs it by resuming the screen's state (the
same model, optimizer and data position: its screen is not trained again) to the long rung, under the
screen's trial number (telemetry, sample, live view) so the study shows one trial.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

from studies.binding import rung_lr, trial_config, trial_steps
from studies.evidence.diagnoses import measured_edge
from studies.execution import continuation
from studies.execution.cores import CoreShare, Takeover
from studies.execution.runs import RunSetup, run_config
from studies.paths import trial_run
from studies.record import TrialRecord
from studies.record_keys import CONTINUES
from studies.rung_facts import RungFacts
from studies.scoring import record_of
from studies.trial_writes import record_eval, record_screen, record_start, write_record
from trainer.evaluate import EvalMetrics
from trainer.judge import finished_at
from trainer.loop import RunPlan
from trainer.results import StepMetrics

Objective = Callable[[optuna.Trial], TrialRecord]
NO_SCREEN_STATE = "no screen state"  # the FAILED_BY of a continuation whose screen's checkpoint is gone


def make_objective(
    setup: RunSetup,
    on_step: Callable[[int, int, StepMetrics], None] | None = None,
    *,
    share: CoreShare | None = None,
) -> Objective:
    """``share``: a local worker's cores, taken when its trial is the last one running
    (``studies.execution.cores``). In a study with a speech rung the objective has a ``claim``
    (``studies.execution.continuation.claim``) that the runner calls before it asks for a trial."""
    study = setup.study
    rung = study.speech_rung

    def state_dir(number: int) -> Path:
        """Where trial ``number``'s screen leaves its state for a later promotion."""
        return setup.paths.trial_dir(number)

    def objective(trial: optuna.Trial) -> TrialRecord:
        continues = trial.user_attrs.get(CONTINUES) if rung is not None else None
        number = trial.number if continues is None else int(continues)  # the trial the study shows
        overrides = study.space.suggest(trial)
        warmup = int(overrides[study.space.warmup_param])
        screen_end = trial_steps(study, warmup)
        steps = screen_end if rung is None else continuation.rung_end(rung, warmup)
        cfg = trial_config(study, overrides, seed=setup.seed, where=f"trial {number}", steps=steps)
        record_start(trial, screen_end if continues is None else steps)
        if continues is not None and not continuation.screen_state(state_dir(number), screen_end).exists():
            # claimed for a checkpoint that has gone since: never train the screen again from step 0
            gone = TrialRecord(state=TrialState.FAIL, failed_by=NO_SCREEN_STATE, continues=number)
            write_record(trial, gone)
            return gone
        screen: list[RungFacts] = []  # set at the screen's end when the study has a speech rung
        asked: list[bool] = []  # a continuation: has it asked whether an older claim holds its screen?
        lost: list[bool] = []  # ... and one did: it stops as a duplicate
        takeover = Takeover(share, trial.study, trial.number) if share is not None else None

        def on_eval(ev: EvalMetrics, _sample) -> bool:
            if continues is not None and not asked:  # a claim's race, asked again once it has surely landed
                asked.append(True)
                if continuation.outranked(trial.study, trial._trial_id):
                    lost.append(True)
                    return True
            if takeover is not None:
                takeover.check(ev.step)
            trial.report(ev.val_mel, ev.step)
            record_eval(trial, ev.step, ev.stop_end_margin)  # read by the pruner
            # On the long rung a promoted run is judged at its end, not pruned on mel on the way.
            return continues is None and ev.step <= screen_end and trial.should_prune()

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
            record_screen(trial, facts, False)
            screen.append(facts)
            return False  # the screen ends here, its state saved; a promotion resumes it (studies.promotion)

        decode = study.scoring.decode_sentences
        lr = rung_lr(study, cfg, trial.params)  # past the screen, the full training's lr
        if rung is None:
            plan = RunPlan(decode_sentences=decode)
        elif continues is None:
            plan = RunPlan(
                decode_sentences=decode, rungs=(screen_end,), out_dir=state_dir(number), lr_schedule=lr
            )
        else:
            # to the rung's end, judged there on the rung's count of sentences (more than a screen's)
            plan = continuation.resume_plan(rung.decode_sentences, state_dir(number), lr)
        step_cb = (lambda m: on_step(number, cfg.max_steps, m)) if on_step is not None else None
        try:
            run = run_config(
                setup,
                cfg,
                trial_run(study.name, number),
                plan=plan,
                on_step=step_cb,
                with_diagnosis=True,
                edge=measured_edge(trial.study),  # a divergence's lr against the study's edge
                on_eval=on_eval,
                on_rung=on_rung if rung is not None and continues is None else None,
            )
        finally:
            if takeover is not None:
                takeover.restore()
        if lost:
            duplicate = TrialRecord(
                state=TrialState.FAIL, failed_by=continuation.DUPLICATE_CLAIM, continues=number
            )
            write_record(trial, duplicate)
            return duplicate
        record = record_of(run.verdict, run.result.summary)
        if screen:
            record = dataclasses.replace(record, screen=screen[0], promoted=False, rung=0)
        if continues is not None:
            resumed = continuation.resumed_at(run.result)  # its screen's step
            record = dataclasses.replace(
                record, continues=number, promoted=True, rung=1, resumed_from=resumed
            )
            if record.finished:  # its screen's state has served; an unpromoted screen keeps its own
                shutil.rmtree(state_dir(number) / "checkpoints", ignore_errors=True)
        write_record(trial, record)
        return record

    def claim(s: optuna.Study, planned: int) -> optuna.Trial | None:
        assert rung is not None
        return continuation.claim(s, rung, lambda n: state_dir(n) / "checkpoints", planned)

    if rung is not None:
        objective.claim = claim  # type: ignore[attr-defined]
    return objective


def _finite(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None
