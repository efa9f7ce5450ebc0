"""One judge: the same run history gets the same verdict as a trial, a validation seed, a transfer check's
long run, a full training's closing report and the telemetry's run status.

Each history is a hand-made `TrainResult`; every path is the real code that turns a result into what it
stores or prints, so a path that judged on its own would disagree here.
"""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from studies.evidence.transfer import LongOutcome
from studies.evidence.validate import ValidationRun
from studies.scoring import record_of
from tests.test_record import GUARDS, NEVER_STOPS, SPEAKS, SUMMARY, ev, result
from trainer.config import GuardConfig
from trainer.guards import GUARDS as GUARD_SPECS
from trainer.guards import MIN_STEPS_FIELDS, Verdict, judged_after
from trainer.judge import STATUS_DIVERGED, STATUS_FINISHED, STATUS_OOM, STATUS_PRUNED, Outcome, judge
from trainer.results import OutOfMemory, TrainResult

EXPLOSION = Verdict(kind="explosion", step=46, detail="gradient norm 1660 is 329x the median")


def oom_run() -> TrainResult:
    r = result((ev(50),))
    return TrainResult(
        steps=52,
        verdict=None,
        evals=r.evals,
        recoveries=(),
        stopped_by_callback=False,
        summary=SUMMARY,
        oom=OutOfMemory(step=53, detail="CUDA out of memory. Tried to allocate 2.50 GiB"),
    )


HISTORIES = {
    "stable": (result((ev(50), ev(2500, decode=SPEAKS))), Outcome.STABLE, STATUS_FINISHED),
    "no-stop": (result((ev(2500, decode=NEVER_STOPS),)), Outcome.NO_STOP, STATUS_FINISHED),
    "unaligned": (
        result((ev(2500, diagonality=0.19, over_prior=-0.45, decode=SPEAKS),)),
        Outcome.UNALIGNED,
        STATUS_FINISHED,
    ),
    "pruned": (result((ev(2500),), pruned=True), Outcome.PRUNED, STATUS_PRUNED),
    "unjudged": (result((ev(50),), pruned=True), Outcome.UNJUDGED, STATUS_PRUNED),
    "diverged": (result((ev(0),), verdict=EXPLOSION), "diverged:explosion", STATUS_DIVERGED),
    "oom": (oom_run(), Outcome.OOM, STATUS_OOM),
}


@pytest.mark.parametrize("name", sorted(HISTORIES))
def test_every_path_words_a_history_the_same(name: str) -> None:
    run, word, status = HISTORIES[name]
    verdict = judge(run, GUARDS, warmup_steps=0)
    assert verdict.outcome == word and verdict.status == status

    trial = record_of(verdict, run.summary)
    assert trial.outcome == word
    expected_state = {STATUS_FINISHED: TrialState.COMPLETE, STATUS_OOM: TrialState.FAIL}
    assert trial.state == expected_state.get(status, TrialState.PRUNED)
    assert trial.feasible == (word == Outcome.STABLE)

    seed = ValidationRun.of(0, "v", verdict)
    assert seed.verdict == word and seed.diverged == verdict.diverged

    long = LongOutcome.of(verdict, 1.0)
    assert long.verdict == word and long.diverged == verdict.diverged
    assert long.speaks == verdict.speaks
    assert long.val_mel == seed.val_mel == verdict.val_mel
    if trial.state == TrialState.COMPLETE:
        assert trial.value == verdict.val_mel


def test_aligned_is_judged_over_the_kl_prior_not_on_the_raw_diagonality() -> None:
    # A KL-trained model sitting on its prior: raw 0.44 passes the old 0.3 bar, 0.0 over the prior does not.
    on_prior = judge(result((ev(300, diagonality=0.44, over_prior=0.0, decode=SPEAKS),)), GUARDS)
    assert on_prior.outcome == Outcome.UNALIGNED and on_prior.unaligned == pytest.approx(
        GUARDS.aligned_over_prior
    )
    aligned = judge(result((ev(300, diagonality=0.71, over_prior=0.48, decode=SPEAKS),)), GUARDS)
    assert aligned.outcome == Outcome.STABLE and aligned.unaligned < 0
    # A foreign trainer's alignment has no over-prior figure: judged raw against collapse_diagonality.
    foreign = judge(result((ev(300, diagonality=0.44, over_prior=float("nan"), decode=SPEAKS),)), GUARDS)
    assert foreign.outcome == Outcome.STABLE
    stricter = GuardConfig(aligned_over_prior=0.6)
    assert judge(result((ev(300, over_prior=0.48, decode=SPEAKS),)), stricter).outcome == Outcome.UNALIGNED


def test_a_full_trainings_last_line_follows_the_judge() -> None:
    from trainer.cli import speech_line
    from trainer.presets import preset

    cfg = preset("basic")
    for run, _, _ in HISTORIES.values():
        verdict = judge(run, cfg.guards, warmup_steps=cfg.warmup_steps)
        assert speech_line(verdict, cfg).startswith("speaks") == verdict.speaks
    late = judge(result((ev(2500, decode=SPEAKS),), verdict=EXPLOSION), cfg.guards)
    assert "diverged at step 46" in speech_line(late, cfg)


def test_a_speaking_decode_does_not_speak_for_a_run_that_diverged() -> None:
    run = result((ev(2500, decode=SPEAKS),), verdict=EXPLOSION)
    verdict = judge(run, GUARDS)
    assert verdict.diverged and not verdict.speaks and verdict.val_mel is None


def test_every_guard_declares_its_minimum_and_judged_after_reads_all_of_them() -> None:
    fields = [f for f in GuardConfig.__dataclass_fields__ if f.endswith("_min_steps")]
    assert sorted(fields) == sorted(MIN_STEPS_FIELDS)  # a new guard's minimum must be declared
    assert {g.kind for g in GUARD_SPECS} >= {"nonfinite", "explosion", "spike", "ceiling", "collapse"}
    base = GuardConfig(explosion_min_steps=0, spike_min_steps=0, ceiling_min_steps=0, collapse_min_steps=0)
    assert judged_after(base, warmup_steps=7) == 7
    for name in MIN_STEPS_FIELDS:  # each one alone decides when its value is the largest
        cfg = GuardConfig(**{**{f: 0 for f in MIN_STEPS_FIELDS}, name: 500})
        assert judged_after(cfg, warmup_steps=7) == 500, name
