"""A run's verdict as an Optuna trial: the judge's `Judgement` -> a TrialRecord (state, value, constraints).

The verdict itself is the trainer's one judge (`trainer/judge.py`); this module only says it in the
terms a sampler reads. A diverged run ends PRUNED with an infeasible constraint and its reason, never
FAIL: samplers learn nothing from FAIL trials, and the map of where training diverges is what the user
came for. Feasible means it ran to its end aligned, with a free-running decode that stops; TPE ranks
infeasible trials by their summed violation, so the violations are continuous.
"""

from __future__ import annotations

import math

from optuna.trial import TrialState

from studies.record import DecodeFacts, Divergence, TrialRecord
from studies.record_keys import C_DIVERGED, C_NO_STOP, C_UNALIGNED, OUT_OF_MEMORY
from trainer.config import GuardConfig
from trainer.evaluate import DecodeMetrics
from trainer.guards import ALIGNED_CHECK, DECODE_CHECK
from trainer.judge import Judgement, judge
from trainer.results import TrainResult
from trainer.summary import RunSummary

# Weight of the teacher-forced stop margin in an infeasible decode's violation (`shaped_no_stop`):
# below the 1/3 a single stopped sentence of three is worth, so a decode that stops always ranks first.
STOP_SHAPING = 0.3
# A diverged trial's violation: far worse than any finished-but-infeasible trial (violations <= ~1.5),
# so TPE learns to avoid divergence before it learns to align.
DIVERGED_VIOLATION = 10.0


def score(result: TrainResult, guards: GuardConfig, *, warmup_steps: int = 0) -> TrialRecord:
    """The record of one run judged under ``guards``: ``record_of(judge(result, ...), result.summary)``."""
    return record_of(judge(result, guards, warmup_steps=warmup_steps), result.summary)


def record_of(verdict: Judgement, summary: RunSummary) -> TrialRecord:
    """The trial record of a judged run: COMPLETE with its val mel as the value when it ran to its end,
    PRUNED when it diverged or was stopped early, FAIL when the device ran out of memory."""
    evidence = {
        "steps_run": verdict.steps,
        # The seed's raw criteria, as information: loss weights move both.
        "seed_loss_in_1_10": _rounded(summary.loss_in_seed_band),
        "seed_grad_norm_below_1": _rounded(summary.grad_norm_below_one),
        "grad_norm_median": _finite(summary.grad_norm_median),
        "grad_norm_p95": _finite(summary.grad_norm_p95),
        "nonfinite_events": summary.nonfinite_events,
        "scaler_skips": summary.scaler_skips,
        "guards_off": verdict.guards_off or None,  # a trainer that lacks a signal: those guards were off
    }
    if verdict.oom is not None:  # an outcome of the machine, not of the recipe: FAIL, never retried
        return TrialRecord(
            state=TrialState.FAIL,
            verdict=verdict.outcome,
            failed_by=OUT_OF_MEMORY,
            oom_step=verdict.oom.step,
            oom_detail=verdict.oom.detail,
            **evidence,
        )
    if verdict.divergence is not None:  # stopped at the step a guard fired
        v = verdict.divergence
        return TrialRecord(
            state=TrialState.PRUNED,
            verdict=verdict.outcome,
            divergence=Divergence(kind=v.kind, step=v.step, detail=v.detail),
            diagnosis=verdict.diagnosis,
            constraints=_measured(
                {C_DIVERGED: DIVERGED_VIOLATION, C_UNALIGNED: 0.0, C_NO_STOP: 0.0}, verdict.guards_off
            ),
            **evidence,
        )
    final = verdict.final
    margin = final.stop_end_margin if final is not None else 0.0
    constraints = _measured(
        {
            C_DIVERGED: -1.0,
            C_UNALIGNED: verdict.unaligned,
            C_NO_STOP: shaped_no_stop(verdict.no_stop, margin),
        },
        verdict.guards_off,
    )
    if verdict.stopped_early:  # pruned on val mel at a rung: stable so far
        # A pruned trial whose stop head was already firing tells TPE as much as a finished one that
        # was not: its no-stop violation is shaped by its last eval's stop margin.
        return TrialRecord(
            state=TrialState.PRUNED,
            verdict=verdict.outcome,  # pruned, or unjudged when a guard had not had its steps yet
            constraints=constraints,
            **evidence,
        )
    assert final is not None  # a finished run has its last eval
    decode = final.decode
    return TrialRecord(
        state=TrialState.COMPLETE,
        value=final.val_mel,
        verdict=verdict.outcome,
        constraints=constraints,
        diagonality=_rounded(final.diagonality),
        over_prior=_rounded(final.over_prior),
        sharpness=_rounded(final.sharpness),
        decode=None if decode is None else decode_facts(decode),
        **evidence,
    )


def decode_facts(decode: DecodeMetrics) -> DecodeFacts:
    return DecodeFacts(
        stop_rate=decode.stop_rate,
        length_ratio=round(decode.length_ratio, 3),
        dtw=round(decode.dtw, 4),
        ratio=_rounded(decode.ratio),
        walk=_rounded(decode.walk),
        speaks=decode.speaks,
        sentence_ratios=tuple(_rounded(s.ratio) for s in decode.per_sentence),
    )


def shaped_no_stop(violation: float, stop_end_margin: float) -> float:
    """An infeasible decode violation plus how far the stop head is from knowing where speech ends.

    A decode that never stops is all or nothing (every such trial scores the same), so TPE, which ranks
    infeasible trials by their summed violation, could not tell a model one step from stopping from one
    that has not started. The teacher-forced stop margin (p(stop) at the last frame minus before it) is
    the continuous signal underneath; the last-frame probability alone is not, since an untrained head
    says ~0.5 everywhere. Feasibility is unchanged: a feasible decode (<= 0) stays as it is.
    """
    if violation <= 0:
        return violation
    margin = stop_end_margin if math.isfinite(stop_end_margin) else 0.0
    return violation + STOP_SHAPING * (1.0 - min(max(margin, 0.0), 1.0))


def _measured(constraints: dict[str, float], guards_off: tuple[str, ...]) -> dict[str, float]:
    """The constraints of the checks that were on: a trainer without an alignment or a decode has no
    such constraint at all (not 0: TPE would read "exactly on the edge")."""
    off = {C_UNALIGNED: ALIGNED_CHECK in guards_off, C_NO_STOP: DECODE_CHECK in guards_off}
    return {k: v for k, v in constraints.items() if not off.get(k) and not math.isnan(v)}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _rounded(x: float) -> float | None:
    """NaN (not measured: no anchors for the sentences) is stored as absent."""
    return round(x, 4) if math.isfinite(x) else None
