"""Continuation trials: which trials are one, and each folded onto its screen trial (one trial, one identity).

A screen promoted after it ended runs its long rung in a trial of its own (``studies.promotion``): not
one more trial of the study's count, and folded by ``studies.record.load_records`` onto the screen it
continues.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial, TrialState

from studies.record_keys import CONTINUES

if TYPE_CHECKING:
    from studies.record import TrialRecord


def is_continuation(t: FrozenTrial) -> bool:
    """A trial that runs another trial's long rung: not one more trial of ``--trials N``."""
    return CONTINUES in t.user_attrs


def fold_continuations(records: list[TrialRecord]) -> list[TrialRecord]:
    """Optuna cannot reopen a finished trial, so a screen promoted after it ended runs its long rung in a
    continuation trial (``studies.promotion``). Readers see one trial: the screen's number, params, preset
    and screen, with the continuation's state, result and curve past the screen. A continuation that
    failed (interrupted, or a claim that lost a race) is left out: the screen stands as it ended."""
    by_number = {r.number: r for r in records}
    live: dict[int, TrialRecord] = {}  # screen number -> its newest continuation that did not fail
    for r in records:
        if r.continues is not None and r.state != TrialState.FAIL and r.continues in by_number:
            live[r.continues] = r
    out: list[TrialRecord] = []
    for r in records:
        if r.continues is not None:
            continue
        c = live.get(r.number)
        if c is not None:
            r = replace(
                c,
                number=r.number,
                params=r.params,
                intermediate={**r.intermediate, **c.intermediate},
                preset=r.preset,
                retry_of=r.retry_of,
                attempt=r.attempt,
                screen=r.screen,
                promoted=True,
                continues=None,
                continued_as=c.number,
            )
        out.append(r)
    return out
