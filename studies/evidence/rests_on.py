"""How much a conclusion rests on, said the same way everywhere: "rests on 5 trials", and below ``THIN``,
that it is thin and what would firm it up. A sentence drawn from one trial reads as firmly as one drawn
from fifty unless it says so."""

from __future__ import annotations

THIN = 3  # fewer than this many runs: one lucky or unlucky run decides the sentence
MORE = "run more trials (--trials 20)"


def rests_on(n: int, noun: str = "trial", *, more: str = MORE) -> str:
    words = f"rests on {n} {noun}{'' if n == 1 else 's'}"
    return words if n >= THIN else f"{words}: thin, {more}"
