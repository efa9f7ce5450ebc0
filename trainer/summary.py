"""The seed's signs of success, reported plainly at the end of a run (reported, not enforced)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol


class _Step(Protocol):
    loss: float
    grad_norm: float | None  # None: not measured (a trainer that does not report it)
    skipped: bool


@dataclass(frozen=True, slots=True)
class RunSummary:
    steps: int
    loss_min: float
    loss_max: float
    loss_in_seed_band: float  # fraction of steps with total loss in the seed's 1..10 band
    # Steps whose loss, or whose gradient norm outside a GradScaler skip, was NaN/Inf: real divergence
    # events. A skip's gradients are inf by definition (that is how the scaler calibrates its scale), so
    # counting them here would report "NaN/Inf events" for every healthy fp16 run.
    nonfinite_events: int
    scaler_skips: int  # fp16: finite losses whose scaled gradients overflowed, so the scaler skipped
    grad_norm_median: float  # pre-clip
    grad_norm_p95: float
    grad_norm_below_one: (
        float  # fraction of steps with pre-clip norm < 1 (the seed's other sign); NaN: none measured
    )
    recoveries: int


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    idx = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[idx]


def summarize(steps: list[_Step], recoveries: int) -> RunSummary:
    finite_loss = [s.loss for s in steps if math.isfinite(s.loss)]
    measured = [s for s in steps if s.grad_norm is not None]
    norms = sorted(s.grad_norm for s in measured if math.isfinite(s.grad_norm))
    n = max(len(steps), 1)
    return RunSummary(
        steps=len(steps),
        loss_min=min(finite_loss, default=math.nan),
        loss_max=max(finite_loss, default=math.nan),
        loss_in_seed_band=sum(1.0 <= v <= 10.0 for v in finite_loss) / n,
        nonfinite_events=sum(
            not math.isfinite(s.loss) or not (s.skipped or s.grad_norm is None or math.isfinite(s.grad_norm))
            for s in steps
        ),
        scaler_skips=sum(bool(s.skipped) for s in steps),
        grad_norm_median=_percentile(norms, 0.5),
        grad_norm_p95=_percentile(norms, 0.95),
        grad_norm_below_one=sum(v < 1.0 for v in norms) / n if measured else math.nan,
        recoveries=recoveries,
    )
