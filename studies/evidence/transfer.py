"""Does the short trial predict the long run? K trials of a study, re-run long, against their short ranking.

A study ranks its trials after a few hundred steps; short trials favour fast learners, and what the
user wants is a recipe that still trains, and speaks, thousands of steps later. So K finished trials
spread over the study's ranking (always ``basic``, ``enhanced`` and the best; some diverged ones; the
rest from the top, middle and bottom) run again for a long horizon (``studies.execution.long_runs``),
and the answer is three numbers: Spearman's rank correlation between the short ranking and the long
run's decode ratio, how many trials that diverged short diverge long (and where), and how many
"stable" short trials speak long. This module holds the typed result, computes those numbers from it
and reads it back (the study user attribute ``transfer``); each long run is in the telemetry. Which
trials run long, and where each long run comes from, is ``studies.evidence.transfer_plan``; the answer
in words is ``studies.evidence.transfer_text``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import optuna
from optuna.trial import TrialState

from studies.evidence.ranks import spearman
from studies.record import TrialRecord
from trainer.judge import Judgement
from trainer.outcome import Outcome

ATTR = "transfer"


def short_outcome(r: TrialRecord) -> Outcome:
    """The judge's word at the end of its short run: its screen's verdict (a promoted trial's record
    carries its long rung's), or the word it ended with."""
    return r.screen.verdict if r.screen is not None else r.outcome


def short_diverged(r: TrialRecord) -> bool:
    """A divergence guard stopped its short run (a screen that ended did not diverge)."""
    return r.screen.verdict.diverged if r.screen is not None else r.diverged


class Source(StrEnum):
    """Where a trial's long run came from."""

    RUNG = "rung"  # its own long rung, run when it was promoted: nothing trained
    RESUMED = "resumed"  # its screen's saved state, trained on to the rung's end
    SCRATCH = "scratch"  # trained from step 0


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
    seconds: float  # spent by this check (0: its long rung, run before)
    source: Source = Source.SCRATCH
    resumed_from: int | None = None  # the step it went on from (its screen's end)

    @classmethod
    def of(cls, verdict: Judgement, seconds: float, *, resumed_from: int | None = None) -> LongOutcome:
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
            source=Source.SCRATCH if resumed_from is None else Source.RESUMED,
            resumed_from=resumed_from,
        )

    @classmethod
    def of_rung(cls, r: TrialRecord) -> LongOutcome:
        """A promoted trial's long rung, as its (folded) record holds it: the same judge's word and
        figures a long run of the check would have."""
        ratio = r.decode.ratio if r.decode is not None and not r.diverged else None
        return cls(
            verdict=r.outcome,
            diverged=r.diverged,
            divergence_step=r.divergence.step if r.divergence is not None else None,
            val_mel=r.value if r.state == TrialState.COMPLETE else None,
            decode_ratio=ratio if ratio is not None and math.isfinite(ratio) else None,
            speaks=r.speaks and not r.diverged,
            steps_run=r.steps_run or r.last_step or 0,
            seconds=0.0,
            source=Source.RUNG,
            resumed_from=r.resumed_from,
        )

    @property
    def steps_saved(self) -> int:
        """Steps of this long run the check did not train: all of a long rung, a resumed screen's."""
        if self.source is Source.RUNG:
            return self.steps_run
        if self.source is Source.RESUMED:
            return self.resumed_from or 0
        return 0

    @property
    def where(self) -> str:
        """Where it came from, in words."""
        if self.source is Source.RUNG:
            return "its long rung"
        if self.source is Source.RESUMED:
            return f"resumed from its screen at step {self.resumed_from}"
        return "from scratch"


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
            "long_source": lo.source.value,
            "resumed_from": lo.resumed_from,
            "long_run_from": lo.where,
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
            source=Source(d.get("long_source", Source.SCRATCH)),  # a check from before: from scratch
            resumed_from=d.get("resumed_from"),
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
    to_rung: bool = False  # the long runs are the study's speech rung: ``steps`` past each one's warmup

    @property
    def horizon(self) -> str:
        """How long its long runs are, in words."""
        if self.to_rung:
            return f"the speech rung ({self.steps} steps past each trial's warmup)"
        return f"{self.steps} steps"

    @property
    def steps_saved(self) -> int:
        """Steps of its long runs it did not train (long rungs reused, screens resumed)."""
        return sum(r.long.steps_saved for r in self.runs)

    @property
    def steps_trained(self) -> int:
        return sum(r.long.steps_run for r in self.runs) - self.steps_saved

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
            "to_rung": self.to_rung,
            "steps_saved": self.steps_saved,
            "steps_trained": self.steps_trained,
        }

    @classmethod
    def from_attr(cls, d: Mapping[str, Any]) -> TransferCheck:
        runs = tuple(TransferRun.from_attr(r) for r in d.get("runs", []))
        return cls(
            steps=int(d["steps"]),
            runs=runs,
            date=str(d.get("date", "")),
            to_rung=bool(d.get("to_rung", False)),
        )


def summarize(runs: Sequence[TransferRun], *, steps: int, to_rung: bool = False) -> TransferCheck:
    return TransferCheck(
        steps=steps,
        runs=tuple(runs),
        date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        to_rung=to_rung,
    )


def store(study: optuna.Study, check: TransferCheck) -> None:
    study.set_user_attr(ATTR, check.to_attr())


def stored(study: optuna.Study) -> TransferCheck | None:
    found = study.user_attrs.get(ATTR)
    return TransferCheck.from_attr(found) if isinstance(found, dict) else None
