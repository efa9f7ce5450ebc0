"""How a run ended, in the one word a person reads everywhere: the judge's vocabulary (``trainer.judge``).

Its own module, free of torch, so every reader (the record, the report, a CLI's one-line refusal) can
name an outcome without loading the model.
"""

from __future__ import annotations

from enum import StrEnum

DIVERGED_PREFIX = "diverged:"


class Outcome(StrEnum):
    """How a run ended, in the one word a person reads everywhere (a table, a plot, the stored trial).

    Every reader asks the predicates below instead of comparing words: where two tables count different
    things they read two predicates, each defined here once (``survived`` is not ``stable``).
    """

    STABLE = "stable"  # ran to its end, attention aligned, free-running decode stops at a sane length
    UNALIGNED = "unaligned"  # ran to its end, attention never aligned to the text
    NO_STOP = "no-stop"  # ran to its end aligned, but its free-running decode does not stop sanely
    PRUNED = "pruned"  # stopped by the search's pruner after every guard had the steps to judge it
    UNJUDGED = "unjudged"  # stopped by the pruner before every guard could judge it
    OOM = "oom"  # the device ran out of memory: the recipe's size, not its stability
    NONFINITE = DIVERGED_PREFIX + "nonfinite"
    EXPLOSION = DIVERGED_PREFIX + "explosion"
    SPIKE = DIVERGED_PREFIX + "spike"
    CEILING = DIVERGED_PREFIX + "ceiling"
    COLLAPSE = DIVERGED_PREFIX + "collapse"
    # a trial that has not ended (yet), or ended by a failure that is not the recipe's
    RUNNING = "running"
    WAITING = "waiting"
    FAILED = "failed"
    UNRECORDED = "unrecorded"  # ended with no verdict recorded: a trial this tool did not write

    @classmethod
    def read(cls, word: object) -> Outcome:
        """A stored word back as its outcome; one this version does not know (or none) is unrecorded."""
        try:
            return cls(str(word))
        except ValueError:
            return cls.UNRECORDED

    @classmethod
    def diverged_by(cls, kind: str) -> Outcome:
        """The word of a run the guard ``kind`` stopped (``explosion`` -> ``diverged:explosion``)."""
        return cls(DIVERGED_PREFIX + kind)

    @property
    def diverged(self) -> bool:
        """A divergence guard stopped it."""
        return self.value.startswith(DIVERGED_PREFIX)

    @property
    def kind(self) -> str | None:
        """The guard that stopped a diverged run (``explosion``), None otherwise."""
        return self.value[len(DIVERGED_PREFIX) :] if self.diverged else None

    @property
    def finished(self) -> bool:
        """It ran to its last step: stable, unaligned or no-stop."""
        return self in (Outcome.STABLE, Outcome.UNALIGNED, Outcome.NO_STOP)

    @property
    def stopped_early(self) -> bool:
        """The search's pruner stopped it: pruned or unjudged."""
        return self in (Outcome.PRUNED, Outcome.UNJUDGED)

    @property
    def judged(self) -> bool:
        """Every divergence guard had the steps it needs to judge it (or one fired)."""
        return self.finished or self.diverged or self is Outcome.PRUNED

    @property
    def survived(self) -> bool:
        """Judged, and no divergence guard fired: what the lr boundary and the margin count. A run can
        survive without being stable (unaligned, no-stop, pruned); unjudged and oom runs neither
        survived nor diverged."""
        return self.judged and not self.diverged

    @property
    def aligned(self) -> bool:
        """It ran to its end with its attention aligned (stable or no-stop): the runs that may go on to
        the speech rung, and that rank above every other infeasible run."""
        return self in (Outcome.STABLE, Outcome.NO_STOP)

    @property
    def feasible(self) -> bool:
        """The only outcome the export, the "best" and the sampler's constraints accept."""
        return self is Outcome.STABLE

    @property
    def ended(self) -> bool:
        """The run is over (not running nor waiting to start)."""
        return self not in (Outcome.RUNNING, Outcome.WAITING)

    def meaning(self, metric: str = "val mel") -> str:
        """The word in a few more words, for a plot's legend (``metric``: the study's own)."""
        return _MEANINGS.get(self, self.value).format(metric=metric)


_MEANINGS = {
    Outcome.STABLE: "stable",
    Outcome.UNALIGNED: "finished, attention unaligned",
    Outcome.NO_STOP: "finished, decode does not stop",
    Outcome.PRUNED: "pruned for {metric}",
    Outcome.UNJUDGED: "pruned before the guards could judge it",
}
