"""fp16 headroom of the presets and the best, from the telemetry: the curves the report draws and its
warning lines.

Every run records, per step, the largest |value| of the tensors fp16 overflows first
(``trainer/peaks.py``); headroom = log2(65504 / max) (``trainer/headroom.py``). A preset's or the best's
curve is its trial's; a study written before the trainer kept these figures has none there, so the
curve is taken from the recipe's x1 margin rung (the same recipe, seed and step count) when one ran.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from studies.evidence.margin import Margin
from studies.paths import trial_run
from studies.record import TrialRecord
from trainer.headroom import TENSORS, Crossing, first_crossing, headroom
from trainer.telemetry import read_run, step_series


@dataclass(frozen=True, kw_only=True, slots=True)
class HeadroomCurve:
    """One run's per-step peaks of the watched tensors, and where its headroom reaches 0 (if it does)."""

    name: str  # "basic", "enhanced", "best"
    source: str  # "trial 3", "margin x1 run"
    steps: tuple[int, ...]
    peaks: Mapping[str, tuple[float, ...]]  # TENSORS key -> max |value| per step
    horizon: int  # the run's planned last step
    crossing: Crossing | None = None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.source})"

    def headroom(self, metric: str) -> list[float]:
        return [headroom(p) for p in self.peaks[metric]]

    @property
    def end(self) -> tuple[str, float] | None:
        """(tensor, headroom) of the tightest watched tensor at the last step with finite peaks."""
        last = {}
        for metric, values in self.peaks.items():
            finite = [headroom(v) for v in values if math.isfinite(v)]
            if finite:
                last[metric] = finite[-1]
        if not last:
            return None
        metric = min(last, key=last.__getitem__)
        return TENSORS[metric], last[metric]

    def warning(self) -> str | None:
        if self.crossing is None:
            return None
        return f"{self.label}: {self.crossing.line()}"


def read_curve(tele: Path, run_id: str, *, name: str, source: str) -> HeadroomCurve | None:
    """A run's curve from the telemetry, judged over its planned steps after its warmup (its config
    there); None when it recorded no finite peak (a run from before the trainer kept them, or none)."""
    run = read_run(tele, run_id)
    if run is None:
        return None
    series = {metric: step_series(tele, run_id, metric) for metric in TENSORS}
    steps = tuple(s for s, _ in next(iter(series.values())))
    if not any(math.isfinite(v) for pairs in series.values() for _, v in pairs):
        return None
    peaks = {metric: tuple(v for _, v in pairs) for metric, pairs in series.items()}
    horizon = int(run["config"].get("max_steps") or (steps[-1] if steps else 0))
    after = int(run["config"].get("warmup_steps") or 0)
    crossing = first_crossing(steps, peaks, horizon=horizon, after=after)
    return HeadroomCurve(
        name=name, source=source, steps=steps, peaks=peaks, horizon=horizon, crossing=crossing
    )


def curves(
    study_name: str, marked: Mapping[str, TrialRecord], margins: Mapping[str, Margin], tele: Path | None
) -> dict[str, HeadroomCurve]:
    """basic, enhanced, best: each one's trial curve, else its x1 margin rung's."""
    if tele is None:
        return {}
    found: dict[str, HeadroomCurve] = {}
    for name in dict.fromkeys([*marked, *margins]):
        r = marked.get(name)
        curve = None
        if r is not None:
            curve = read_curve(tele, trial_run(study_name, r.number), name=name, source=f"trial {r.number}")
        m = margins.get(name)
        x1 = next((g for g in m.rungs if g.multiplier == 1.0), None) if m is not None else None
        if curve is None and x1 is not None and x1.run_id:
            curve = read_curve(tele, x1.run_id, name=name, source="x1 margin run")
        if curve is not None:
            found[name] = curve
    return found
