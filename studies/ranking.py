"""The one "best": a single rank key that the export, the summary, the report, the transfer check, the
conclusions and the promotion to the speech rung all share, so no two of them can name different trials.

Best first: a feasible (``stable``) run; among the rest an aligned one (``no-stop``: it reads the text,
its decode does not stop yet) before any other, and a diverged one last; then a run that speaks before
one that does not, then one judged at the deeper rung (a longer run's val mel is not comparable with a
shorter one's), then the lower study value. Teacher-forced mel alone can look excellent for a model
that cannot speak, so it decides last.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from studies.record import TrialRecord
from studies.rung_facts import RungFacts


class Rank(NamedTuple):
    """Compared as a tuple, lower is better."""

    tier: int  # 0 feasible, 1 aligned, 2 another run that did not diverge, 3 diverged
    silent: bool  # its last free-running decode does not speak
    shallower: int  # minus the rung it was judged at
    value: float  # the study's value (inf: none)


def rank(
    *, feasible: bool, aligned: bool, diverged: bool, speaks: bool, rung: int, value: float | None
) -> Rank:
    tier = 0 if feasible else 1 if aligned else 3 if diverged else 2
    known = value is not None and math.isfinite(value)
    return Rank(tier, not speaks, -rung, value if known else math.inf)


def trial_rank(r: TrialRecord) -> Rank:
    return rank(
        feasible=r.feasible,
        aligned=r.outcome.aligned,
        diverged=r.diverged,
        speaks=r.speaks,
        rung=r.rung or 0,
        value=r.value if r.value is not None else r.last_value,
    )


def screen_rank(screen: RungFacts) -> Rank:
    """A trial at the end of its screen, ranked as a trial that ended there would be."""
    v = screen.verdict
    return rank(
        feasible=v.feasible,
        aligned=v.aligned,
        diverged=v.diverged,
        speaks=screen.speaks,
        rung=0,
        value=screen.val_mel,
    )


def ranked(records: Iterable[TrialRecord]) -> list[TrialRecord]:
    """The finished trials, best first (ties: the lower trial number)."""
    return sorted((r for r in records if r.finished), key=lambda r: (trial_rank(r), r.number))


def best(records: Iterable[TrialRecord]) -> TrialRecord | None:
    """The best trial, if it is feasible with a value: the one the export, the summary and the report
    name "best"."""
    order = ranked(records)
    top = order[0] if order else None
    return top if top is not None and top.feasible and top.value is not None else None
