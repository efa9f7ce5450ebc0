"""How a run is judged: the trainer's result -> a TrialRecord with its state, value and constraints.

Pure functions, so every outcome is tested on hand-made results. A diverged run ends PRUNED with an
infeasible constraint and its reason, never FAIL: samplers learn nothing from FAIL trials, and the
map of where training diverges is what the user came for. Trials and validation runs share the one
finished-run verdict (``finished_violations`` / ``finished_verdict``).
"""

from __future__ import annotations

import math

from optuna.trial import TrialState

from studies.record import (
    C_DIVERGED,
    C_NO_STOP,
    C_UNALIGNED,
    NO_STOP,
    OUT_OF_MEMORY,
    PRUNED,
    STABLE,
    UNALIGNED,
    DecodeFacts,
    Divergence,
    TrialRecord,
)
from trainer.config import GuardConfig
from trainer.evaluate import DecodeMetrics, EvalMetrics
from trainer.loop import TrainResult

# Weight of the teacher-forced stop margin in an infeasible decode's violation (`shaped_no_stop`):
# below the 1/3 a single stopped sentence of three is worth, so a decode that stops always ranks first.
STOP_SHAPING = 0.3
# A diverged trial's violation: far worse than any finished-but-infeasible trial (violations <= ~1.5),
# so TPE learns to avoid divergence before it learns to align.
DIVERGED_VIOLATION = 10.0


def judged_after(guards: GuardConfig, warmup_steps: int) -> int:
    """The step by which every divergence guard has had the steps it needs to judge a run.

    A run stopped earlier (pruned on mel at an early rung) is ``unjudged``: no guard fired, but the
    collapse guard, say, never looked, so it must not count as stable anywhere (the lr boundary once
    called lr 0.037 stable on a trial pruned at step 100, where lr >= 3e-2 was measured to collapse).
    """
    minimums = (guards.explosion_min_steps, guards.spike_min_steps, guards.ceiling_min_steps)
    return max(*minimums, guards.collapse_min_steps, warmup_steps)


def score(result: TrainResult, guards: GuardConfig, *, warmup_steps: int = 0) -> TrialRecord:
    """The record of one finished (or pruned, or diverged) trial: state, value, constraints, evidence.

    COMPLETE with val mel as its value when it ran to the end; PRUNED otherwise. The caller writes it
    and returns the value or raises ``TrialPruned``.
    """
    s = result.summary
    evidence = {
        "steps_run": result.steps,
        # The seed's raw criteria, as information: loss weights move both.
        "seed_loss_in_1_10": round(s.loss_in_seed_band, 4),
        "seed_grad_norm_below_1": round(s.grad_norm_below_one, 4),
        "grad_norm_median": _finite(s.grad_norm_median),
        "grad_norm_p95": _finite(s.grad_norm_p95),
        "nonfinite_events": s.nonfinite_events,
        "scaler_skips": s.scaler_skips,
    }
    final = result.final_eval
    if result.oom is not None:  # an outcome of the machine, not of the recipe: FAIL, never retried
        return TrialRecord(
            state=TrialState.FAIL,
            failed_by=OUT_OF_MEMORY,
            oom_step=result.oom.step,
            oom_detail=result.oom.detail,
            **evidence,
        )
    if result.verdict is not None:  # diverged: stopped at the step a guard fired
        v = result.verdict
        return TrialRecord(
            state=TrialState.PRUNED,
            divergence=Divergence(kind=v.kind, step=v.step, detail=v.detail),
            constraints={C_DIVERGED: DIVERGED_VIOLATION, C_UNALIGNED: 0.0, C_NO_STOP: 0.0},
            **evidence,
        )
    if result.stopped_by_callback or final is None:  # pruned on val mel at a rung: stable so far
        # It never showed it can speak (no final decode): scored like a finished trial whose decode
        # never stopped, ranked among those by its alignment and stop head at its last eval. A pruned
        # trial whose stop head was already firing tells TPE as much as a finished one that was not.
        diagonality = final.diagonality if final is not None else 0.0
        margin = final.stop_end_margin if final is not None else 0.0
        no_stop = decode_violation(None, guards)
        return TrialRecord(
            state=TrialState.PRUNED,
            verdict=PRUNED,
            judged=result.steps >= judged_after(guards, warmup_steps),
            constraints={
                C_DIVERGED: -1.0,
                C_UNALIGNED: guards.collapse_diagonality - diagonality,
                C_NO_STOP: shaped_no_stop(no_stop, margin),
            },
            **evidence,
        )
    # Finished: feasible only if the attention aligned and the free-running decode stops sanely.
    unaligned, no_stop = finished_violations(final, guards)
    decode = final.decode
    return TrialRecord(
        state=TrialState.COMPLETE,
        value=final.val_mel,
        verdict=finished_verdict(unaligned, no_stop),
        constraints={
            C_DIVERGED: -1.0,
            C_UNALIGNED: unaligned,
            C_NO_STOP: shaped_no_stop(no_stop, final.stop_end_margin),
        },
        diagonality=round(final.diagonality, 4),
        sharpness=round(final.sharpness, 4),
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
    )


def finished_violations(final: EvalMetrics, guards: GuardConfig) -> tuple[float, float]:
    """(unaligned, no_stop) of a finished run's last eval; both <= 0 is feasible."""
    return guards.collapse_diagonality - final.diagonality, decode_violation(final.decode, guards)


def finished_verdict(unaligned: float, no_stop: float) -> str:
    """The words a finished run is judged by, for trials and validation runs alike."""
    if unaligned > 0:
        return UNALIGNED
    return NO_STOP if no_stop > 0 else STABLE


def decode_violation(decode: DecodeMetrics | None, guards: GuardConfig) -> float:
    """How far the free-running decode is from sane, continuous so TPE can walk towards feasible:
    the share of sentences that never stopped beyond the tolerated ``decode_max_bad_fraction`` (a short
    trial decodes few sentences: a minority may fail, not a majority), plus how far the median length
    ratio lies outside [1/decode_length_ratio, decode_length_ratio]. <= 0 is feasible.

    The median length is a stopped sentence's only when more than half stopped; otherwise it is the
    length cap, which says nothing, so such an infeasible decode (and a trial with none, pruned) scores
    the stop share alone: one stopped sentence of three then always ranks above none."""
    max_bad, max_ratio = guards.decode_max_bad_fraction, guards.decode_length_ratio
    if decode is None:
        return 1.0 - max_bad
    missed = max(0.0, (1.0 - decode.stop_rate) - max_bad)
    if decode.stop_rate <= 0.5 and missed > 0:
        return missed
    ratio = decode.length_ratio
    return missed + max(0.0, ratio - max_ratio) + max(0.0, 1.0 / max_ratio - ratio)


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


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _rounded(x: float) -> float | None:
    """NaN (not measured: no anchors for the sentences) is stored as absent."""
    return round(x, 4) if math.isfinite(x) else None
