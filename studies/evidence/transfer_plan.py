"""Which trials a transfer check runs long, and where each long run comes from.

In a study with a speech rung, the long run *is* the speech rung (the long run the user cares about),
and most of it already exists: a trial promoted to the rung has its long run in the study, a screen not
promoted left its state at its screen's end (``studies.promotion``). So each trial's long run comes from
the first of (``source``): its own long rung (nothing trained), its screen's state resumed to the rung's
end, or a run from scratch (a trial that diverged or was pruned before its screen's end left no state).
The short ranking is then each trial as it stood at its screen's end (``short_ranked``): a promoted
trial's study rank carries its long rung, which here is the very run it is compared with.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from common.errors import UserError
from studies import ranking
from studies.evidence.ranks import MIN_PAIRS
from studies.evidence.transfer import Source, short_diverged
from studies.ranking import screen_rank, trial_rank
from studies.record import TrialRecord, preset_trials
from studies.registry import StudyDef

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
