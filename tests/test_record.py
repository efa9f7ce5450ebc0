"""The trial record: every outcome of `score()` (state, value, constraints) and its storage round trip."""

from __future__ import annotations

import dataclasses
import math

import optuna
import pytest
from optuna.trial import TrialState

from studies import ranking
from studies import record as rec
from studies import record_keys as keys
from studies.display import speech_words
from studies.record import TrialRecord, load_records
from studies.scoring import DIVERGED_VIOLATION, score
from studies.trial_writes import write_record
from trainer.config import GuardConfig
from trainer.evaluate import DecodeMetrics, EvalMetrics
from trainer.guards import Verdict
from trainer.judge import Outcome
from trainer.results import TrainResult
from trainer.summary import RunSummary

GUARDS = GuardConfig()
SUMMARY = RunSummary(
    steps=120,
    loss_min=1.5,
    loss_max=9.0,
    loss_in_seed_band=0.9,
    nonfinite_events=0,
    scaler_skips=0,
    grad_norm_median=0.8,
    grad_norm_p95=2.5,
    grad_norm_below_one=0.6,
    recoveries=0,
)


def ev(
    step: int,
    *,
    diagonality: float = 0.5,
    over_prior: float = 0.5,
    margin: float = 0.5,
    decode: DecodeMetrics | None = None,
) -> EvalMetrics:
    return EvalMetrics(
        step=step,
        val_mel=2.0,
        stop_accuracy=0.99,
        stop_end_margin=margin,
        diagonality=diagonality,
        sharpness=0.1,
        decode=decode,
        over_prior=over_prior,
    )


def result(
    evals: tuple[EvalMetrics, ...], *, verdict: Verdict | None = None, pruned: bool = False
) -> TrainResult:
    return TrainResult(
        steps=evals[-1].step if evals else 7,
        verdict=verdict,
        evals=evals,
        recoveries=(),
        stopped_by_callback=pruned,
        summary=SUMMARY,
    )


SPEAKS = DecodeMetrics(sentences=3, stop_rate=1.0, length_ratio=1.05, dtw=1.9)
NEVER_STOPS = DecodeMetrics(sentences=3, stop_rate=0.0, length_ratio=2.4, dtw=3.1)


def test_a_finished_aligned_run_that_stops_is_complete_feasible_and_stable() -> None:
    r = score(result((ev(50), ev(120, decode=SPEAKS))), GUARDS)
    assert r.state == TrialState.COMPLETE and r.value == 2.0
    assert r.verdict == Outcome.STABLE and r.outcome == Outcome.STABLE
    assert r.constraints[keys.C_DIVERGED] < 0 and r.constraints[keys.C_UNALIGNED] < 0
    assert r.constraints[keys.C_NO_STOP] <= 0 and r.feasible
    assert r.decode == rec.DecodeFacts(stop_rate=1.0, length_ratio=1.05, dtw=1.9, speaks=False)


def test_a_finished_run_that_never_stops_is_complete_but_infeasible() -> None:
    r = score(result((ev(120, decode=NEVER_STOPS, margin=0.2),)), GUARDS)
    assert r.state == TrialState.COMPLETE and r.value == 2.0
    assert r.outcome == Outcome.NO_STOP and not r.feasible
    # shaped: the tolerated-half violation plus 0.3 x (1 - margin)
    assert math.isclose(r.constraints[keys.C_NO_STOP], 0.5 + 0.3 * 0.8)


def test_an_unaligned_finished_run_is_unaligned_whatever_its_decode() -> None:
    r = score(result((ev(120, diagonality=0.19, over_prior=-0.45, decode=SPEAKS),)), GUARDS)
    assert r.outcome == Outcome.UNALIGNED and not r.feasible
    assert math.isclose(r.constraints[keys.C_UNALIGNED], GUARDS.aligned_over_prior + 0.45)
    assert r.over_prior == -0.45 and r.diagonality == 0.19


def test_a_run_pruned_on_mel_is_pruned_with_no_value_and_ranks_as_no_stop() -> None:
    r = score(result((ev(50, diagonality=0.4, margin=0.0),), pruned=True), GUARDS)
    assert r.state == TrialState.PRUNED and r.value is None and r.verdict == Outcome.UNJUDGED
    assert r.outcome == Outcome.UNJUDGED  # step 50, where the default collapse guard waits for 2000
    assert r.constraints[keys.C_DIVERGED] < 0
    assert math.isclose(r.constraints[keys.C_NO_STOP], 0.5 + 0.3)
    assert math.isclose(r.constraints[keys.C_UNALIGNED], GUARDS.aligned_over_prior - 0.5)  # over the prior


def test_a_run_pruned_before_the_guards_could_judge_it_is_unjudged() -> None:
    guards = GuardConfig(collapse_min_steps=150)
    early = score(result((ev(100),), pruned=True), guards, warmup_steps=50)
    late = score(result((ev(200),), pruned=True), guards, warmup_steps=50)
    assert early.outcome == Outcome.UNJUDGED and not early.outcome.judged
    assert late.outcome == Outcome.PRUNED and late.outcome.judged
    # the warmup counts too: the ceiling judges only after it
    assert score(result((ev(200),), pruned=True), guards, warmup_steps=250).outcome == Outcome.UNJUDGED


def test_a_diverged_run_is_pruned_with_its_reason_and_the_worst_violation() -> None:
    v = Verdict(kind="explosion", step=46, detail="gradient norm 1660 is 329x the median")
    r = score(result((ev(0),), verdict=v), GUARDS)
    assert r.state == TrialState.PRUNED and r.value is None
    assert r.outcome == "diverged:explosion" and r.diverged
    assert r.divergence == rec.Divergence(kind="explosion", step=46, detail=v.detail)
    assert r.constraints == {keys.C_DIVERGED: DIVERGED_VIOLATION, keys.C_UNALIGNED: 0.0, keys.C_NO_STOP: 0.0}


@pytest.mark.parametrize(
    "run",
    [
        result((ev(50), ev(120, decode=SPEAKS))),
        result((ev(120, decode=NEVER_STOPS),)),
        result((ev(50),), pruned=True),
        result((ev(0),), verdict=Verdict(kind="nonfinite", step=3, detail="loss is nan at step 3")),
    ],
)
def test_a_record_survives_optuna_storage(run: TrainResult) -> None:
    scored = score(run, GUARDS)
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    trial = study.ask()
    trial.set_user_attr(rec.PRESET, "basic")
    write_record(trial, scored)
    study.tell(trial, scored.value, state=scored.state)
    (back,) = load_records(study)
    assert back.state == scored.state and back.value == scored.value and back.preset == "basic"
    assert back.outcome == scored.outcome and back.feasible == scored.feasible
    assert back.divergence == scored.divergence and back.decode == scored.decode
    assert dict(back.constraints) == dict(scored.constraints)
    assert back.steps_run == scored.steps_run and back.grad_norm_p95 == scored.grad_norm_p95


def test_a_study_written_before_the_record_still_loads() -> None:
    # The attributes exactly as the objective wrote them before TrialRecord existed.
    old = {
        "max_steps": 350,
        "last_step": 46,
        "stop_end_margin": 0.01,
        "steps_run": 46,
        "seed_loss_in_1_10": 0.0,
        "seed_grad_norm_below_1": 0.0,
        "grad_norm_median": 5.04,
        "grad_norm_p95": 12.0,
        "nonfinite_events": 0,
        "diverged": True,
        "verdict": "explosion",
        "divergence_step": 46,
        "divergence_detail": "gradient norm 1660 is 329.4x the median",
        "host": "h",
        "pid": 12,
    }
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    study.add_trial(
        optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs=old, intermediate_values={0: 3.9})
    )
    (r,) = load_records(study)
    assert r.outcome == "diverged:explosion" and r.divergence.step == 46 and r.last_value == 3.9
    assert (r.host, r.pid, r.max_steps, r.stop_end_margin) == ("h", 12, 350, 0.01)


def test_the_stored_verdict_is_the_judges_word_and_older_forms_read_as_the_same_word() -> None:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    v = Verdict(kind="spike", step=7, detail="mel 9 is 12 sigma above its EMA")
    now = [
        (score(result((ev(0),), verdict=v), GUARDS), TrialState.PRUNED),
        (score(result((ev(50),), pruned=True), GUARDS), TrialState.PRUNED),
    ]
    for r, state in now:
        trial = study.ask()
        write_record(trial, r)
        study.tell(trial, state=state)
    older = [  # (state, attributes as earlier versions stored them): diverged, unjudged, out of memory
        (TrialState.PRUNED, {"diverged": True, "verdict": "spike", "divergence_step": 7}),
        (TrialState.PRUNED, {"verdict": "pruned", "judged": False}),
        (TrialState.FAIL, {"failed_by": keys.OUT_OF_MEMORY, "oom_step": 3}),
    ]
    for state, attrs in older:
        study.add_trial(optuna.trial.create_trial(state=state, user_attrs=attrs))
    stored = [t.user_attrs.get(keys.VERDICT) for t in study.get_trials()]
    assert stored[:2] == ["diverged:spike", "unjudged"]  # written as the judge says them
    outcomes = [r.outcome for r in load_records(study)]
    assert outcomes == [Outcome.SPIKE, Outcome.UNJUDGED, Outcome.SPIKE, Outcome.UNJUDGED, Outcome.OOM]
    assert [r.divergence.kind for r in load_records(study) if r.divergence] == ["spike", "spike"]


def test_outcomes_of_unfinished_trials() -> None:
    assert TrialRecord(state=TrialState.RUNNING).outcome == Outcome.RUNNING
    assert TrialRecord(state=TrialState.WAITING).outcome == Outcome.WAITING
    assert TrialRecord(state=TrialState.FAIL).outcome == Outcome.FAILED
    assert TrialRecord(state=TrialState.PRUNED).outcome == Outcome.PRUNED


def test_best_feasible_and_newest_preset_trial() -> None:
    a = TrialRecord(number=0, state=TrialState.COMPLETE, value=2.0, constraints={"x": -1.0}, preset="basic")
    b = TrialRecord(number=1, state=TrialState.COMPLETE, value=1.0, constraints={"x": 0.5})  # infeasible
    c = TrialRecord(number=2, state=TrialState.COMPLETE, value=1.5, constraints={"x": -1.0}, preset="basic")
    assert ranking.best([a, b, c]) is c
    assert rec.preset_trials([a, b, c]) == {"basic": c}
    assert rec.preset_trials([a, b, c], ("enhanced", "basic")) == {"basic": c}


def test_the_speech_measure_is_recorded_and_a_trial_that_speaks_is_best() -> None:
    from tts_model.speech_measure import SentenceMeasure

    rows = tuple(
        SentenceMeasure(id=f"u{i}", stopped=True, length_ratio=1.0, dtw=1.0, walk=0.7, ratio=r)
        for i, r in enumerate((0.3, 0.4, 0.9))
    )
    speaking = DecodeMetrics(
        sentences=3, stop_rate=1.0, length_ratio=1.0, dtw=1.0, per_sentence=rows, speaks=True
    )
    r = score(result((ev(120, decode=speaking),)), GUARDS)
    assert r.decode.speaks and math.isclose(r.decode.ratio, 0.4)
    assert speech_words(r) == "speaks 0.40 (median of 3)"
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    trial = study.ask()
    write_record(trial, r)
    study.tell(trial, r.value)
    (back,) = load_records(study)
    assert back.speaks and math.isclose(back.decode.ratio, 0.4) and math.isclose(back.decode.walk, 0.7)
    assert back.decode.sentence_ratios == (0.3, 0.4, 0.9)  # each sentence's, in decode order
    older = dataclasses.replace(back, decode=dataclasses.replace(back.decode, sentence_ratios=()))
    assert speech_words(older) == "speaks 0.40"  # a study from before the count was recorded
    # A sentence without anchors has no ratio: kept in its place as None, not dropped or made NaN.
    facts = rec.DecodeFacts(stop_rate=1.0, length_ratio=1.0, dtw=1.0, ratio=0.2, sentence_ratios=(0.2, None))
    unanchored = TrialRecord(state=TrialState.COMPLETE, value=1.0, decode=facts)
    trial = study.ask()
    write_record(trial, unanchored)
    study.tell(trial, 1.0)
    assert load_records(study)[-1].decode.sentence_ratios == (0.2, None)
    silent = TrialRecord(number=9, state=TrialState.COMPLETE, value=0.5, constraints={"x": -1.0})
    assert speech_words(silent) == "-" and ranking.best([silent, back]) is back  # speaks beats a lower mel
