"""Successive halving by rank (ASHA's rule on all the screens): which finished screens go on to the long rung?

A 300-step trial cannot speak; a recipe's speech shows after thousands of steps. So the study screens
every trial short, and the screens that rank among the best 1/eta of *all* the study's screens go on,
from where they stopped (same model, same optimizer, same data position: the screen is never trained
again), to the long rung, where their last eval's free-running decode is judged. Only an aligned screen
that did not diverge goes on: one whose decode does not stop yet may (an aligned screen's decodes can run
to the length cap for hundreds of steps more: docs/measurements.md), an unaligned one has not learnt to
read the text.

The rule, re-read whenever a worker is about to start a trial (so it needs no trial to wait for):

- once n >= ``min_peers`` + 1 trials have ended, the screens among the top floor(n / eta) of them may
  go on, ranked by the one ranking (``studies.ranking.screen_rank``; ties: the lower trial number).
  A trial pruned or diverged before its screen's end counts among the n and ranks below every screen
  (it lost its screen): 1/eta of the trials, as successive halving means, not 1/eta of the pruner's
  survivors, which would give a 10-trial study fewer promotions than its cap;
- while fewer than floor(N / eta) screens hold a promotion (N: the trials asked for, ``--trials N``),
  the best of those not yet promoted takes the next one.

So the order screens finish in does not matter: a screen that finished before it had peers (the presets,
always the first trials) or was passed over while a better one held the top goes on later, as soon as
the study's screens make room for it (floor(n / eta) grows with n) and it ranks there. A promotion once
made stands (ASHA's too): a better screen later takes the next slot, never a held one. With eta 3 and
10 trials (a cap of 3), slots open at the 4th, 6th and 9th trial to end, each to the best screen not yet
promoted then; so a study of 10 trials promotes 3 screens whenever 3 of its screens aligned. Resumed
with ``--trials 20`` the cap is 6: three more slots, open to every screen not yet promoted, old or new.

How it maps onto Optuna, which cannot reopen a finished trial (``studies.execution.continuation``):
every screen ends its trial at the screen and leaves its state in its trial folder (one checkpoint); a
promotion runs the long rung in a *continuation trial*: a new trial with the screen's params and a
``continues`` attribute, which resumes that checkpoint and is folded back onto the screen's trial by
``studies.record.load_records``, so the live view, summary, report and export show one trial. A
continuation is not one of ``--trials N``: N counts screens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from studies.ranking import screen_rank
from studies.registry import SpeechRung
from studies.rung_facts import RungFacts


@dataclass(frozen=True, kw_only=True, slots=True)
class Screen:
    """A finished screen of the study, and whether it holds a promotion (claimed, running or done)."""

    number: int
    facts: RungFacts
    promoted: bool = False


def promote(
    screen: RungFacts,
    peers: Sequence[RungFacts],
    rung: SpeechRung,
    *,
    promoted_so_far: int,
    planned: int,
    ended: int | None = None,
) -> bool:
    """May ``screen`` go on? When it is aligned (``Outcome.aligned``: an unaligned screen's low val mel
    is the average frame's, not a recipe nearer speech), at least ``rung.min_peers`` other trials have
    ended, fewer than ``rung.most_promoted(planned)`` hold a promotion, and fewer than floor(n / eta)
    screens rank above it in the study's one ranking. n: the trials that have ended, its own included
    (``ended``: screens or not; by default the screens); ``planned``: the trials asked for."""
    n = max(ended or 0, len(peers) + 1)
    if not screen.verdict.aligned or n - 1 < rung.min_peers:
        return False
    if promoted_so_far >= rung.most_promoted(planned):
        return False
    keep = n // rung.eta
    better = sum(screen_rank(p) < screen_rank(screen) for p in peers)
    return better < keep


def due(screens: Sequence[Screen], rung: SpeechRung, *, planned: int, ended: int | None = None) -> list[int]:
    """The trial numbers of the screens to promote now, best first: each unpromoted screen that
    ``promote`` lets go on against all the others, as long as the cap has room. ``planned``: the
    trials asked for (``--trials N``); ``ended``: the study's trials that have ended, screens or not
    (by default the screens)."""
    taken = sum(s.promoted for s in screens)
    out: list[int] = []
    for s in sorted(screens, key=lambda s: (screen_rank(s.facts), s.number)):
        if s.promoted:
            continue
        peers = [o.facts for o in screens if o.number != s.number]
        if promote(s.facts, peers, rung, promoted_so_far=taken + len(out), planned=planned, ended=ended):
            out.append(s.number)
    return out
