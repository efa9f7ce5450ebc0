"""Does the short trial predict the long run? K trials of a study, re-run long, against their short ranking.

A study ranks its trials after a few hundred steps; short trials favour fast learners, and what the
user wants is a recipe that still trains, and speaks, thousands of steps later. So K finished trials
spread over the study's ranking (always ``basic``, ``enhanced`` and the best; some diverged ones; the
rest from the top, middle and bottom) run again for a long horizon (``studies.execution.long_runs``),
and the answer is three numbers: Spearman's rank correlation between the short ranking and the long
run's decode ratio, how many trials that diverged short diverge long (and where), and how many
"stable" short trials speak long. This module picks the trials, holds the typed result and reads it
back (the study user attribute ``transfer``); each long run is in the telemetry.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from common.errors import UserError
from studies import ranking
from studies.evidence.ranks import MIN_PAIRS, spearman
from studies.record import TrialRecord, preset_trials
from studies.registry import StudyDef
from trainer.judge import Judgement
from trainer.outcome import Outcome

ATTR = "transfer"
MIN_TRIALS = MIN_PAIRS
HORIZON_FACTOR = 10  # a long run is at least 10x the trial horizon


def default_steps(study_def: StudyDef) -> int:
    return HORIZON_FACTOR * study_def.horizon


def check(study_def: StudyDef, k: int, steps: int | None) -> None:
    """Fail before anything runs: too few trials asked for, or runs no longer than a trial."""
    if k < MIN_TRIALS:
        raise UserError(f"--transfer-check {k}: needs at least {MIN_TRIALS} trials to rank")
    least = default_steps(study_def)
    if steps is not None and steps < least:
        raise UserError(
            f"--steps {steps}: a transfer check's long run is at least {HORIZON_FACTOR}x the trial horizon "
            f"({least} steps for {study_def.name})"
        )


def pick(
    ranked: Sequence[TrialRecord], k: int, presets: Sequence[str] = ("basic", "enhanced")
) -> list[TrialRecord]:
    """K trials spread over the ranking: the presets and the best, up to a third diverged, then evenly
    spaced ranks of the rest (top, middle, bottom)."""
    chosen: dict[int, TrialRecord] = {}
    for r in [*preset_trials(ranked, presets).values(), ranking.best(ranked)]:
        if r is not None and len(chosen) < k:
            chosen.setdefault(r.number, r)
    diverged = [r for r in ranked if r.diverged and r.number not in chosen]
    for r in diverged[: max(1, (k - len(chosen)) // 3)]:
        if len(chosen) < k:
            chosen[r.number] = r
    rest = [r for r in ranked if r.number not in chosen]
    room = k - len(chosen)
    if room > 0 and rest:
        for i in sorted({round(x) for x in np.linspace(0, len(rest) - 1, min(room, len(rest)))}):
            chosen[rest[i].number] = rest[i]
    order = {r.number: i for i, r in enumerate(ranked)}
    return sorted(chosen.values(), key=lambda r: order[r.number])


@dataclass(frozen=True, kw_only=True, slots=True)
class LongOutcome:
    """What a long run came to: the judge's word and the figures the check compares."""

    verdict: Outcome
    diverged: bool
    divergence_step: int | None
    val_mel: float | None  # teacher forced, at its last eval (None: it diverged)
    decode_ratio: float | None  # median at its last eval (None: no decode ran)
    speaks: bool
    steps_run: int
    seconds: float

    @classmethod
    def of(cls, verdict: Judgement, seconds: float) -> LongOutcome:
        decode = verdict.decode
        ratio = float(decode.ratio) if decode is not None and math.isfinite(decode.ratio) else None
        return cls(
            verdict=verdict.outcome,
            diverged=verdict.diverged,
            divergence_step=verdict.divergence.step if verdict.divergence is not None else None,
            val_mel=verdict.val_mel,
            decode_ratio=ratio,
            speaks=verdict.speaks,
            steps_run=verdict.steps,
            seconds=round(seconds, 1),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class TransferRun:
    """One trial: where it ranked short, and its long run."""

    number: int
    preset: str | None
    short_outcome: Outcome
    short_rank: int
    short_diverged: bool
    long: LongOutcome

    @property
    def placed(self) -> bool:
        """It can be ranked by its long run: it diverged (ranks last) or has a decode ratio."""
        return self.long.diverged or self.long.decode_ratio is not None

    @property
    def finished_long(self) -> bool:
        """Its long run did not diverge and decoded."""
        return not self.long.diverged and self.long.decode_ratio is not None

    def to_attr(self) -> dict[str, Any]:
        lo = self.long
        return {
            "number": self.number,
            "preset": self.preset,
            "short_outcome": self.short_outcome.value,
            "short_rank": self.short_rank,
            "short_diverged": self.short_diverged,
            "long_verdict": lo.verdict.value,
            "long_diverged": lo.diverged,
            "long_divergence_step": lo.divergence_step,
            "val_mel": lo.val_mel,
            "decode_ratio": lo.decode_ratio,
            "speaks": lo.speaks,
            "steps_run": lo.steps_run,
            "seconds": lo.seconds,
        }

    @classmethod
    def from_attr(cls, d: Mapping[str, Any]) -> TransferRun:
        long = LongOutcome(
            verdict=Outcome.read(d.get("long_verdict")),
            diverged=bool(d.get("long_diverged", False)),
            divergence_step=d.get("long_divergence_step"),
            val_mel=d.get("val_mel"),
            decode_ratio=d.get("decode_ratio"),
            speaks=bool(d.get("speaks", False)),
            steps_run=int(d.get("steps_run", 0)),
            seconds=float(d.get("seconds", 0.0)),
        )
        return cls(
            number=int(d.get("number", -1)),
            preset=d.get("preset"),
            short_outcome=Outcome.read(d.get("short_outcome")),
            short_rank=int(d["short_rank"]),
            short_diverged=bool(d.get("short_diverged", False)),
            long=long,
        )


def rho_all(runs: Sequence[TransferRun]) -> float | None:
    """Short rank vs long decode ratio over every placed run: a long run that diverged ranks worst, one
    without a decode cannot be placed. Diverged runs tie last, so this mixes "does the ranking predict
    divergence" with "does it predict speech"; `rho_finished` asks the second question alone."""
    placed = [r for r in runs if r.placed]
    return spearman(
        [r.short_rank for r in placed],
        [math.inf if r.long.diverged else r.long.decode_ratio for r in placed],  # type: ignore[misc]
    )


def rho_finished(runs: Sequence[TransferRun]) -> float | None:
    """Short rank vs long decode ratio over the long runs that finished without diverging."""
    done = [r for r in runs if r.finished_long]
    return spearman([r.short_rank for r in done], [r.long.decode_ratio for r in done])  # type: ignore[misc]


def rho_val_mel(runs: Sequence[TransferRun]) -> float | None:
    """Short rank vs the long run's teacher-forced val mel (the study's own objective), over the long
    runs that did not diverge: does the ranking carry over in what it measured, if not in speech?"""
    done = [r for r in runs if not r.long.diverged and r.long.val_mel is not None]
    return spearman([r.short_rank for r in done], [r.long.val_mel for r in done])  # type: ignore[misc]


@dataclass(frozen=True, kw_only=True, slots=True)
class TransferCheck:
    """The check's long runs, in the short ranking's order, and the answers computed from them (so a
    check stored before an answer existed shows it too)."""

    steps: int
    runs: tuple[TransferRun, ...]
    date: str = ""

    @property
    def rho_all(self) -> float | None:
        return rho_all(self.runs)

    @property
    def rho_finished(self) -> float | None:
        return rho_finished(self.runs)

    @property
    def rho_val_mel(self) -> float | None:
        return rho_val_mel(self.runs)

    @property
    def n_finished(self) -> int:
        return sum(r.finished_long for r in self.runs)

    @property
    def diverged_short(self) -> int:
        return sum(r.short_diverged for r in self.runs)

    @property
    def diverged_short_and_long(self) -> int:
        return sum(r.long.diverged for r in self.runs if r.short_diverged)

    @property
    def long_divergence_steps(self) -> dict[str, int | None]:
        return {str(r.number): r.long.divergence_step for r in self.runs if r.long.diverged}

    @property
    def stable_short(self) -> int:
        return sum(r.short_outcome.feasible for r in self.runs)

    @property
    def stable_short_speak_long(self) -> int:
        return sum(r.long.speaks for r in self.runs if r.short_outcome.feasible)

    def to_attr(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "trials": [r.number for r in self.runs],
            "spearman_rank_vs_decode_ratio": self.rho_all,
            "spearman_finished_only": self.rho_finished,
            "spearman_rank_vs_long_val_mel": self.rho_val_mel,
            "diverged_short": self.diverged_short,
            "diverged_short_and_long": self.diverged_short_and_long,
            "long_divergence_steps": self.long_divergence_steps,
            "stable_short": self.stable_short,
            "stable_short_speak_long": self.stable_short_speak_long,
            "runs": [r.to_attr() for r in self.runs],
            "date": self.date,
        }

    @classmethod
    def from_attr(cls, d: Mapping[str, Any]) -> TransferCheck:
        runs = tuple(TransferRun.from_attr(r) for r in d.get("runs", []))
        return cls(steps=int(d["steps"]), runs=runs, date=str(d.get("date", "")))


def summarize(runs: Sequence[TransferRun], *, steps: int) -> TransferCheck:
    return TransferCheck(
        steps=steps, runs=tuple(runs), date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )


def store(study: optuna.Study, check: TransferCheck) -> None:
    study.set_user_attr(ATTR, check.to_attr())


def stored(study: optuna.Study) -> TransferCheck | None:
    found = study.user_attrs.get(ATTR)
    return TransferCheck.from_attr(found) if isinstance(found, dict) else None


def _signed(rho: float | None) -> str:
    return "not computable" if rho is None else f"{rho:+.2f}"


def lines(check: TransferCheck) -> list[str]:
    """The answer in three sentences, for the terminal and the report alike."""
    return [
        f"Spearman rank correlation, short ranking vs long-run decode ratio: {_signed(check.rho_all)} over "
        f"{len(check.runs)} trials of {check.steps} steps, diverged long runs ranked last (positive: the short "
        f"ranking predicts the long one); over the {check.n_finished} that did not diverge long: "
        f"{_signed(check.rho_finished)}; short ranking vs long-run val mel (teacher forced) over those: "
        f"{_signed(check.rho_val_mel)}",
        f"diverged short and long: {check.diverged_short_and_long} of {check.diverged_short} "
        f"that diverged short",
        f"stable short trials that speak long: {check.stable_short_speak_long} of {check.stable_short}",
    ]
