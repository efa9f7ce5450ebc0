"""The one judge: a run's history -> its verdict, for every kind of run.

A search trial, a full training, a validation seed, a transfer check's long run and the lr probe all
end here, so the same history gets the same word wherever it ran. The history is the trainer's
`TrainResult` (steps run, the guard verdict that stopped it, its evals with the last decode, an
out-of-memory stop, whether its caller stopped it early); the rules are the run's `GuardConfig`.

The words are ``Outcome``'s values (DESIGN.md, "What the verdict words mean"), stored as they read:
- ``oom``: the device ran out of memory, an outcome of the recipe's size, not of its stability;
- ``diverged:<kind>``: a divergence guard stopped it (nonfinite, explosion, spike, ceiling, collapse);
- ``pruned`` / ``unjudged``: stopped early by its caller (the search's pruner) after, or before, every
  guard had the steps it needs to judge it; an unjudged run never counts as stable;
- ``stable`` / ``unaligned`` / ``no-stop``: it ran to its end; stable only if its attention aligned
  and its free-running decode stopped at a sane length.
A second word counts something else and says so: a run *survived* when every guard judged it and none
fired (stable, unaligned, no-stop, pruned): the lr boundary and the margin count that, not stability.

A trainer this project did not write reports fewer signals (trainer/reporter.py): a guard or check
whose signal is missing is off (``TrainResult.guards_off``), here as in the guards. A run without an
alignment is never ``unaligned``, one without a free-running decode never ``no-stop``; its violation
of that check is NaN (not measured), and the record leaves that constraint out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainer.config import GuardConfig
from trainer.diagnosis import Diagnosis
from trainer.evaluate import DecodeMetrics, EvalMetrics
from trainer.guards import ALIGNED_CHECK, DECODE_CHECK, Verdict, judged_after
from trainer.outcome import Outcome
from trainer.results import OutOfMemory, TrainResult
from trainer.telemetry import STATUS_DIVERGED, STATUS_FINISHED, STATUS_OOM, STATUS_PRUNED


@dataclass(frozen=True, kw_only=True, slots=True)
class Judgement:
    """A run's verdict and the figures it rests on.

    unaligned / no_stop: how far the run is from aligned attention and from a sane free-running
    decode (<= 0: there; continuous, so a sampler can walk towards feasible). NaN where the run did
    not get as far as measuring them (diverged, out of memory) or has no such signal (guards_off).
    """

    outcome: Outcome
    steps: int
    divergence: Verdict | None = None
    oom: OutOfMemory | None = None
    judged: bool = True  # every guard had the steps it needs (False only for a run stopped early)
    final: EvalMetrics | None = None
    unaligned: float = math.nan
    no_stop: float = math.nan
    guards_off: tuple[str, ...] = ()  # the run's guards and checks that were off (a missing signal)
    # Why it diverged (trainer/diagnosis.py): set beside the verdict by the caller that replays the run
    # (studies/execution/runs.py); None for a run that did not diverge or was not replayed.
    diagnosis: Diagnosis | None = None

    @property
    def diverged(self) -> bool:
        return self.divergence is not None

    @property
    def stopped_early(self) -> bool:
        """Its caller stopped it (pruned or unjudged)."""
        return self.outcome.stopped_early

    @property
    def val_mel(self) -> float | None:
        """The last eval's val mel of a run that neither diverged nor ran out of memory."""
        if self.divergence is not None or self.oom is not None or self.final is None:
            return None
        return self.final.val_mel

    @property
    def decode(self) -> DecodeMetrics | None:
        return self.final.decode if self.final is not None else None

    @property
    def speaks(self) -> bool:
        """Its last eval's free-running decode speaks, and no guard stopped it."""
        decode = self.decode
        return decode is not None and decode.speaks and self.divergence is None and self.oom is None

    @property
    def status(self) -> str:
        """How the run ended, as the telemetry's run record says it."""
        if self.oom is not None:
            return STATUS_OOM
        if self.divergence is not None:
            return STATUS_DIVERGED
        return STATUS_PRUNED if self.stopped_early else STATUS_FINISHED

    def verdict_columns(self) -> dict[str, object] | None:
        """The telemetry's verdict columns: the guard verdict that stopped the run, or where and why
        memory ran out (no kind: the run's status says "oom")."""
        if self.divergence is not None:
            v = self.divergence
            return {"kind": v.kind, "step": v.step, "detail": v.detail}
        return None if self.oom is None else {"step": self.oom.step, "detail": self.oom.detail}


def judge(result: TrainResult, guards: GuardConfig, *, warmup_steps: int = 0) -> Judgement:
    """The verdict of one run, from what it recorded and the thresholds it ran under."""
    final, off = result.final_eval, result.guards_off
    if result.oom is not None:
        return Judgement(outcome=Outcome.OOM, steps=result.steps, oom=result.oom, final=final, guards_off=off)
    if result.verdict is not None:
        v = result.verdict
        return Judgement(
            outcome=Outcome.diverged_by(v.kind), steps=result.steps, divergence=v, final=final, guards_off=off
        )
    if result.stopped_by_callback or final is None:
        # Stopped before its end: it never showed it can speak (no final decode), so its decode counts
        # as one that never stopped; its alignment is its last eval's.
        judged = result.steps >= judged_after(guards, warmup_steps, off=off)
        return Judgement(
            outcome=Outcome.PRUNED if judged else Outcome.UNJUDGED,
            steps=result.steps,
            judged=judged,
            final=final,
            unaligned=unaligned_violation(final, guards) if ALIGNED_CHECK not in off else math.nan,
            no_stop=decode_violation(None, guards) if DECODE_CHECK not in off else math.nan,
            guards_off=off,
        )
    return finished_at(final, guards, steps=result.steps, off=off)


def finished_at(
    final: EvalMetrics, guards: GuardConfig, *, steps: int, off: tuple[str, ...] = ()
) -> Judgement:
    """The verdict of a run that ran to ``final`` (its last eval, or the eval that ends a rung): aligned,
    and a free-running decode that stops at a sane length (each check off when ``off`` names it)."""
    unaligned = unaligned_violation(final, guards) if ALIGNED_CHECK not in off else math.nan
    no_stop = decode_violation(final.decode, guards) if DECODE_CHECK not in off else math.nan
    return Judgement(
        outcome=finished_verdict(unaligned, no_stop),
        steps=steps,
        final=final,
        unaligned=unaligned,
        no_stop=no_stop,
        guards_off=off,
    )


def unaligned_violation(final: EvalMetrics | None, guards: GuardConfig) -> float:
    """How far the eval's attention is from aligned, > 0 unaligned: the diagonality over the KL prior's
    own below `aligned_over_prior` (a run with no eval counts as the prior itself, 0). A foreign
    trainer's alignment (no over-prior measure) is judged raw against `collapse_diagonality`."""
    if final is None:
        return guards.aligned_over_prior
    if math.isnan(final.over_prior):
        return guards.collapse_diagonality - final.diagonality
    return guards.aligned_over_prior - final.over_prior


def finished_verdict(unaligned: float, no_stop: float) -> Outcome:
    """The word for a run that ran to its end: aligned first, then a decode that stops. A NaN
    violation (the check was off: no such signal) is no violation."""
    if unaligned > 0:
        return Outcome.UNALIGNED
    return Outcome.NO_STOP if no_stop > 0 else Outcome.STABLE


def decode_violation(decode: DecodeMetrics | None, guards: GuardConfig) -> float:
    """How far the free-running decode is from sane, continuous so TPE can walk towards feasible:
    the share of sentences that never stopped beyond the tolerated ``decode_max_bad_fraction`` (a short
    trial decodes few sentences: a minority may fail, not a majority), plus how far the median length
    ratio lies outside [1/decode_length_ratio, decode_length_ratio]. <= 0 is feasible.

    The median length is a stopped sentence's only when more than half stopped; otherwise it is the
    length cap, which says nothing, so such an infeasible decode (and a run with none, stopped early)
    scores the stop share alone: one stopped sentence of three then always ranks above none."""
    max_bad, max_ratio = guards.decode_max_bad_fraction, guards.decode_length_ratio
    if decode is None:
        return 1.0 - max_bad
    missed = max(0.0, (1.0 - decode.stop_rate) - max_bad)
    if decode.stop_rate <= 0.5 and missed > 0:
        return missed
    ratio = decode.length_ratio
    return missed + max(0.0, ratio - max_ratio) + max(0.0, 1.0 / max_ratio - ratio)
