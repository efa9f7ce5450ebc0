"""Successive halving inside a trial (ASHA): does a trial that has finished its screen go on to the long rung?

A 300-step trial cannot speak; a recipe's speech shows after thousands of steps. So the study screens
every trial short, and a trial whose screen ended among the best 1/eta of all screens so far goes on
training, from where it is (same model, same optimizer: no restart), to the long rung, where its last
eval's free-running decode is judged. Only an aligned screen that did not diverge goes on: one whose
decode does not stop yet may (an aligned screen's decodes can run to the length cap for hundreds of
steps more: docs/measurements.md), an unaligned one has not learnt to read the text.
The rule is asynchronous, as ASHA's: a trial compares itself with the screens recorded when it ends
its own, so it needs no other trial to wait for.
"""

from __future__ import annotations

from collections.abc import Sequence

from studies.ranking import screen_rank
from studies.registry import SpeechRung
from studies.rung_facts import RungFacts


def promote(screen: RungFacts, peers: Sequence[RungFacts], rung: SpeechRung, *, promoted_so_far: int) -> bool:
    """Promote ``screen`` when it is aligned (``Outcome.aligned``: an unaligned screen's low val mel is
    the average frame's, not a recipe nearer speech), at least ``rung.min_peers`` other trials have
    finished their screen, fewer than ``rung.max_promoted`` have been promoted, and fewer than
    floor(n / eta) of the n screens (its own included) rank above it in the study's one ranking."""
    if not screen.verdict.aligned or len(peers) < rung.min_peers:
        return False
    if rung.max_promoted is not None and promoted_so_far >= rung.max_promoted:
        return False
    keep = (len(peers) + 1) // rung.eta
    better = sum(screen_rank(p) < screen_rank(screen) for p in peers)
    return better < keep
