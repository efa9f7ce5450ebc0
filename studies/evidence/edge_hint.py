"""Where the lr edge probably lies, from what a study already knows, so a margin starts next to it.

The margin's answer is a rung that survived next to one that diverged (``margin.bracket``). Walked up
from the recipe's own lr, that took 12 rungs for ``basic`` (1,024x below the edge); started next to the
edge it takes two. The edge belongs to the model and data more than to the recipe (every recipe of the
quick study broke at about the same absolute lr: docs/measurements.md), so any run of the study that
diverged says where to start:

1. the margins already stored (their rungs are the recipe's own runs at known lrs);
2. the study's trials: the smallest lr that diverged;
3. the lr probe's lowest-loss lr (fastai's marker: the divergence lies above it).

A diverged rung stops early (the quick study's broke at step 150 of 390), a rung that survives runs to
its end: so the search starts just below the lowest lr seen to diverge, the rung most likely to survive
of those that may not, and steps down while rungs diverge. A hint only decides where the search starts:
a wrong one costs rungs, never a wrong answer.
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
    """The lowest lr seen to diverge (or, from the probe, an estimate of it) and what it was read from."""

    lr: float
    source: str

    def start(self, base_lr: float) -> float:
        """The largest power-of-2 multiplier of ``base_lr`` strictly below the hint: the rung expected to
        survive, whose double is expected to diverge."""
        return 2.0 ** (math.ceil(math.log2(self.lr / base_lr) - 1e-9) - 1)


def from_margins(margins: Mapping[str, Margin]) -> EdgeHint | None:
    """The median over the stored margins of the first lr that diverged."""
    edges = {}
    for name, m in margins.items():
        edge = m.first_diverged
        if edge is not None and m.largest_survived is not None:
            edges[name] = edge.lr
    if not edges:
        return None
    names = ", ".join(edges)
    return EdgeHint(lr=statistics.median(edges.values()), source=f"the margins already measured ({names})")


def from_trials(trials: Iterable[tuple[float, Outcome]]) -> EdgeHint | None:
    """The smallest lr of a finished trial that diverged; None when none did."""
    diverged = [lr for lr, o in trials if o.diverged]
    if not diverged:
        return None
    low = min(diverged)
    return EdgeHint(lr=low, source=f"the study's trials (the lowest lr that diverged: {low:.2g})")


def from_probe(probe: ProbeResult | None) -> EdgeHint | None:
    """Twice the probe's lowest-loss lr: fastai's rule puts the divergence above that marker."""
    if probe is None or probe.min_loss_lr is None or not probe.min_loss_lr > 0:
        return None
    return EdgeHint(lr=2 * probe.min_loss_lr, source="the lr probe (twice its lowest-loss lr)")


def edge_hint(
    margins: Mapping[str, Margin], trials: Iterable[tuple[float, Outcome]], probe: ProbeResult | None
) -> EdgeHint | None:
    """The first hint of the three sources, in the module's order."""
    return from_margins(margins) or from_trials(trials) or from_probe(probe)
