"""A trial at the end of its screen (the short rung): the facts its promotion to the long rung is decided on.

The objective writes them when the screen ends, before the run goes on (or not); the next trials'
promotion reads them back, and the summary and the report show them beside the long rung's result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from studies.record_keys import SCREEN_RATIO, SCREEN_SPEAKS, SCREEN_STEP, SCREEN_VALUE, SCREEN_VERDICT
from trainer.outcome import Outcome


@dataclass(frozen=True, kw_only=True, slots=True)
class RungFacts:
    step: int
    val_mel: float
    verdict: Outcome  # the judge's word at that eval (stable / unaligned / no-stop)
    decode_ratio: float | None = None
    speaks: bool = False

    def to_attrs(self) -> dict[str, Any]:
        attrs = {
            SCREEN_STEP: self.step,
            SCREEN_VALUE: self.val_mel,
            SCREEN_VERDICT: self.verdict.value,
            SCREEN_RATIO: self.decode_ratio,
            SCREEN_SPEAKS: self.speaks,
        }
        return {k: v for k, v in attrs.items() if v is not None}

    @classmethod
    def from_attrs(cls, a: Mapping[str, Any]) -> RungFacts | None:
        """The screen's facts in a trial's user attributes, None where it has none (no speech rung, or
        its screen has not ended)."""
        if SCREEN_VALUE not in a or SCREEN_VERDICT not in a:
            return None
        ratio = a.get(SCREEN_RATIO)
        return cls(
            step=int(a.get(SCREEN_STEP) or 0),
            val_mel=float(a[SCREEN_VALUE]),
            verdict=Outcome.read(a[SCREEN_VERDICT]),
            decode_ratio=float(ratio)
            if isinstance(ratio, (int, float)) and not isinstance(ratio, bool)
            else None,
            speaks=a.get(SCREEN_SPEAKS) is True,
        )
