"""Where the lr edge probably lies, from what a study already knows, so a margin starts next to it.

The margin's answer is a rung that survived next to one that diverged (``margin.bracket``). Walked up
from the recipe's own lr, that took 12 rungs for ``basic`` (1,024x below the edge); started next to the
edge it takes two. The edge belongs to the model and data more than to the recipe (every recipe of the
quick study broke at about the same absolute lr: docs/measurements.md), so any run of the study that
diverged says where to start:

1. the margins already stored (their rungs are the recipe's own runs at known lrs);
2. the study's trials: the smallest lr that diverged, and the largest below it that survived;
3. the lr probe's lowest-loss lr (fastai's marker: the divergence lies above it).

A hint only decides where the search starts: a wrong one costs rungs, never a wrong answer.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from studies.evidence.lr_probe import ProbeResult
from studies.evidence.margin import Margin
from trainer.outcome import Outcome

COARSE_STRIDE = 8.0  # with no hint: x1, x8, x64 ... then bisection (7 rungs for basic's 1,024x, not 12)


@dataclass(frozen=True, kw_only=True, slots=True)
class EdgeHint:
    """An lr near the edge and what it was read from (said when the margin starts)."""

    lr: float
    source: str

    def start(self, base_lr: float) -> float:
        """The largest power-of-2 multiplier of ``base_lr`` at or below the hint: the rung expected to
        survive, whose double is expected to diverge."""
        return 2.0 ** math.floor(math.log2(self.lr / base_lr) + 1e-9)


def from_margins(margins: Mapping[str, Margin]) -> EdgeHint | None:
    """The median of the stored margins' edges (the geometric middle of each one's largest rung that
    survived and first that diverged)."""
    edges = {}
    for name, m in margins.items():
        top, edge = m.largest_survived, m.first_diverged
        if top is not None and edge is not None:
            edges[name] = math.sqrt(top.lr * edge.lr)
    if not edges:
        return None
    names = ", ".join(edges)
    return EdgeHint(lr=statistics.median(edges.values()), source=f"the margins already measured ({names})")


def from_trials(trials: Iterable[tuple[float, Outcome]]) -> EdgeHint | None:
    """From (lr, outcome) of the study's finished trials: between the smallest lr that diverged and the
    largest below it that survived; half the first when none below survived. None when none diverged."""
    pairs = list(trials)
    diverged = [lr for lr, o in pairs if o.diverged]
    if not diverged:
        return None
    low = min(diverged)
    below = [lr for lr, o in pairs if o.survived and lr < low]
    if not below:
        return EdgeHint(lr=low / 2, source=f"the study's trials (the lowest lr that diverged: {low:.2g})")
    high = max(below)
    return EdgeHint(
        lr=math.sqrt(high * low),
        source=f"the study's trials (survived up to lr {high:.2g}, diverged from {low:.2g})",
    )


def from_probe(probe: ProbeResult | None) -> EdgeHint | None:
    if probe is None or probe.min_loss_lr is None or not probe.min_loss_lr > 0:
        return None
    return EdgeHint(lr=probe.min_loss_lr, source="the lr probe's lowest-loss lr")


def edge_hint(
    margins: Mapping[str, Margin], trials: Iterable[tuple[float, Outcome]], probe: ProbeResult | None
) -> EdgeHint | None:
    """The first hint of the three sources, in the module's order."""
    return from_margins(margins) or from_trials(trials) or from_probe(probe)
