"""The seed's signs of success, reported plainly at the end of a run (reported, not enforced)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


class _Step(Protocol):
    loss: float
    grad_norm: float
    skipped: bool


@dataclass(frozen=True, slots=True)
class RunSummary:
    steps: int
    loss_min: float
    loss_max: float
    loss_in_seed_band: float  # fraction of steps with total loss in the seed's 1..10 band
    nonfinite_events: int  # steps whose loss or gradient norm was NaN/Inf
    skipped_steps: int  # fp16 GradScaler skips
    grad_norm_median: float  # pre-clip
    grad_norm_p95: float
    grad_norm_below_one: float  # fraction of steps with pre-clip norm < 1 (the seed's other sign)
    recoveries: int


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


def summarize(steps: list[_Step], recoveries: int) -> RunSummary:
    finite_loss = [s.loss for s in steps if math.isfinite(s.loss)]
    norms = sorted(s.grad_norm for s in steps if math.isfinite(s.grad_norm))
    n = max(len(steps), 1)
    return RunSummary(
        steps=len(steps),
        loss_min=min(finite_loss, default=math.nan),
        loss_max=max(finite_loss, default=math.nan),
        loss_in_seed_band=sum(1.0 <= v <= 10.0 for v in finite_loss) / n,
        nonfinite_events=sum(not (math.isfinite(s.loss) and math.isfinite(s.grad_norm)) for s in steps),
        skipped_steps=sum(bool(s.skipped) for s in steps),
        grad_norm_median=_percentile(norms, 0.5),
        grad_norm_p95=_percentile(norms, 0.95),
        grad_norm_below_one=sum(v < 1.0 for v in norms) / n,
        recoveries=recoveries,
    )
