"""Does the short trial predict the long run? K trials of a study, re-run long, against their short ranking.

A study ranks its trials after a few hundred steps; short trials favour fast learners, and what the
user wants is a recipe that still trains, and speaks, thousands of steps later. So K finished trials
spread over the study's ranking (always ``basic``, ``enhanced`` and the best; some diverged ones; the
rest from the top, middle and bottom) run again for a long horizon (``studies.execution.long_runs``),
and the answer is three numbers: Spearman's rank correlation between the short ranking and the long
run's decode ratio, how many trials that diverged short diverge long (and where), and how many
"stable" short trials speak long. This module picks the trials, holds the typed result and reads it
back (the study user attribute ``transfer``); each long run is in the telemetry.

In a study with a speech rung, the long run *is* the speech rung (the long run the user cares about),
and most of it already exists: a trial promoted to the rung has its long run in the study, a screen not
promoted left its state at its screen's end (``studies.promotion``). So each trial's long run comes from
the first of (``source``): its own long rung (nothing trained), its screen's state resumed to the rung's
end, or a run from scratch (a trial that diverged or was pruned before its screen's end left no state).
The short ranking is then each trial as it stood at its screen's end (``short_ranked``): a promoted
trial's study rank carries its long rung, which here is the very run it is compared with.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from common.errors import UserError
from studies import ranking
from studies.evidence.ranks import MIN_PAIRS, spearman
from studies.ranking import screen_rank, trial_rank
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
    """Fail before anything runs: too few trials asked for, or runs no longer than a trial. (Without
    ``--steps``, a study with a speech rung runs to its rung, whatever the rung's length.)"""
    if k < MIN_TRIALS:
        raise UserError(f"--transfer-check {k}: needs at least {MIN_TRIALS} trials to rank")
    least = default_steps(study_def)
    if steps is not None and steps < least:
        raise UserError(
            f"--steps {steps}: a transfer check's long run is at least {HORIZON_FACTOR}x the trial horizon "
            f"({least} steps for {study_def.name})"
        )


def short_ranked(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """The finished trials, best first, each as it stood at the end of its short run: a screen by its
    screen's facts (``ranking.screen_rank``, as promotion ranks it), any other trial as it ended
    (``ranking.trial_rank``). In a study without a speech rung this is the study's one ranking."""

    def key(r: TrialRecord):
        return (screen_rank(r.screen) if r.screen is not None else trial_rank(r), r.number)

    return sorted((r for r in records if r.finished), key=key)


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


def source(r: TrialRecord, *, rung_end: int | None, saved: bool) -> Source:
    """Where trial ``r``'s long run comes from. ``rung_end``: the step its long run ends at when that
    is the study's speech rung (None: no rung, or ``--steps N``: from scratch, as a run to another end
    cannot reuse a screen planned to the rung). ``saved``: its screen's checkpoint is on disk."""
    if rung_end is None:
        return Source.SCRATCH
    if r.finished and (r.rung or 0) >= 1 and r.max_steps in (None, rung_end):
        return Source.RUNG  # promoted, and its long rung ended (diverged or not)
    if r.screen is not None and saved and r.screen.step < rung_end:
        return Source.RESUMED
    return Source.SCRATCH  # diverged or pruned before its screen's end, or a study from before screens


def pick(
    ranked: Sequence[TrialRecord], k: int, presets: Sequence[str] = ("basic", "enhanced")
) -> list[TrialRecord]:
    """K trials spread over the ranking: the presets and the best, up to a third diverged, then evenly
    spaced ranks of the rest (top, middle, bottom)."""
    chosen: dict[int, TrialRecord] = {}
    for r in [*preset_trials(ranked, presets).values(), ranking.best(ranked)]:
        if r is not None and len(chosen) < k:
            chosen.setdefault(r.number, r)
    diverged = [r for r in ranked if short_diverged(r) and r.number not in chosen]
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


def _signed(rho: float | None) -> str:
    return "not computable" if rho is None else f"{rho:+.2f}"


def saved_line(check: TransferCheck) -> str:
    """Where each long run came from, and the steps that saved."""
    each = ", ".join(f"trial {r.number} {r.long.where}" for r in check.runs)
    total = check.steps_saved + check.steps_trained
    return (
        f"long runs: {each}; {check.steps_saved:,} of their {total:,} steps came from the study "
        f"({check.steps_trained:,} trained by this check)"
    )


def lines(check: TransferCheck) -> list[str]:
    """The answer in three sentences, and where the long runs came from, for the terminal and the
    report alike."""
    return [
        f"Spearman rank correlation, short ranking vs long-run decode ratio: {_signed(check.rho_all)} over "
        f"{len(check.runs)} trials of {check.horizon}, diverged long runs ranked last (positive: the short "
        f"ranking predicts the long one); over the {check.n_finished} that did not diverge long: "
        f"{_signed(check.rho_finished)}; short ranking vs long-run val mel (teacher forced) over those: "
        f"{_signed(check.rho_val_mel)}",
        f"diverged short and long: {check.diverged_short_and_long} of {check.diverged_short} "
        f"that diverged short",
        f"stable short trials that speak long: {check.stable_short_speak_long} of {check.stable_short}",
        saved_line(check),
    ]
