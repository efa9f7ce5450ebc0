"""fp16 headroom: how many doublings a run's largest values have left before fp16 turns them into Inf.

fp16's largest finite number is 65,504. A run records, every step, the largest absolute value of the
tensors that overflow first (``tts_model.model.Peaks``: why those two, measured); its headroom is
``log2(65504 / max)``: 3 means the tensor may grow 8x before fp16 overflows, 0 means it just did. A
fp32 run can say this about fp16 before anyone trains in fp16: when the headroom's trend (a straight
line through the second half of the run after its warmup, since a max growing by a factor per step
falls linearly on this scale) reaches 0 within the run's horizon, the run gets one warning line naming the tensor
and the step. Pure functions over plain series, so they are tested on hand-made numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

FP16_MAX = 65504.0
# The tensors the trainer watches, as the telemetry names their per-step maxima, and in words.
TENSORS = {
    "attn_logit_max": "cross-attention scores (q.k^T)",
    "activation_max": "Linear / Conv1d outputs",
}
MIN_POINTS = 10  # a trend through fewer steps is noise


def headroom(peak: float) -> float:
    """log2(65504 / peak): doublings left before fp16 overflows (negative: already over; inf for 0;
    NaN for a non-finite peak, where the fp32 run itself broke)."""
    if not math.isfinite(peak):
        return math.nan
    if peak <= 0.0:
        return math.inf
    return math.log2(FP16_MAX / peak)


@dataclass(frozen=True, slots=True)
class Crossing:
    """Where a tensor's fp16 headroom reaches 0: measured (``projected`` False), or on its trend."""

    metric: str  # a TENSORS key
    step: int
    projected: bool
    horizon: int  # the run's planned last step

    @property
    def tensor(self) -> str:
        return TENSORS.get(self.metric, self.metric)

    def line(self) -> str:
        """The warning a person reads."""
        how = "passed" if not self.projected else "are on course to pass"
        return (
            f"fp16 headroom: the {self.tensor} {how} 65,504 (fp16's largest value) at step {self.step} "
            f"of {self.horizon}: in fp16 this recipe would overflow there"
        )


def trend_crossing(
    steps: Sequence[int], peaks: Sequence[float], *, horizon: int, after: int = 0
) -> tuple[int, bool] | None:
    """The step at which the headroom of this series reaches 0, if it does by ``horizon``:
    ``(step, False)`` where a recorded peak already passed 65,504, ``(step, True)`` where the straight
    line fitted (least squares) through the second half of the finite headroom values after step
    ``after`` reaches 0 by ``horizon``; None otherwise (falling too slowly, flat, rising, or fewer than
    MIN_POINTS values to fit).

    ``after`` is the run's warmup: while the lr still rises the values grow faster than they will at
    peak lr, and a line through them warns of crossings that never come (a run whose headroom levelled
    off well above 0: docs/measurements.md)."""
    pairs = [(s, headroom(p)) for s, p in zip(steps, peaks, strict=True)]
    pairs = [(s, h) for s, h in pairs if math.isfinite(h)]
    for s, h in pairs:
        if h <= 0.0:
            return (s, False) if s <= horizon else None
    pairs = [(s, h) for s, h in pairs if s > after]
    if len(pairs) < MIN_POINTS:
        return None
    tail = pairs[len(pairs) // 2 :]
    slope, intercept = _line(tail)
    if slope >= 0.0:
        return None
    at = math.ceil(-intercept / slope)
    last = pairs[-1][0]
    at = max(at, last + 1)  # the line says "already": the recorded headroom says not yet
    return (at, True) if at <= horizon else None


def first_crossing(
    steps: Sequence[int], series: Mapping[str, Sequence[float]], *, horizon: int, after: int = 0
) -> Crossing | None:
    """The earliest crossing among the watched tensors (``series``: TENSORS key -> per-step peaks)."""
    found = []
    for metric, peaks in series.items():
        hit = trend_crossing(steps, peaks, horizon=horizon, after=after)
        if hit is not None:
            found.append(Crossing(metric=metric, step=hit[0], projected=hit[1], horizon=horizon))
    return min(found, key=lambda c: (c.step, c.projected)) if found else None


class _Peaks(Protocol):
    step: int
    attn_logit_max: float
    activation_max: float


def run_crossing(steps: Sequence[_Peaks], *, horizon: int, after: int = 0) -> Crossing | None:
    """``first_crossing`` over a run's step records (``StepMetrics``)."""
    at = [s.step for s in steps]
    series = {metric: [getattr(s, metric) for s in steps] for metric in TENSORS}
    return first_crossing(at, series, horizon=horizon, after=after)


def _line(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares slope and intercept of y against x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0.0:
        return 0.0, my
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return slope, my - slope * mx
