"""How numbers and switches read on screen and in the report: one formatter for both."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from studies.record import TrialRecord


def fmt(x: object) -> str:
    if isinstance(x, bool):
        return "on" if x else "off"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        return f"{x:.1e}" if 0 < abs(x) < 1e-2 else f"{x:.3g}"
    return str(x)


def fmt_value(x: float | None) -> str:
    """A val mel, or '-' when there is none."""
    return "-" if x is None else f"{x:.4f}"


def duration(seconds: float) -> str:
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def speech_words(r: TrialRecord) -> str:
    """The end-of-trial speech measure in a few words, shown next to the verdict everywhere: the word, the
    median decode ratio, and how many decoded sentences the median is over (a study's speech rung
    decodes more than its screens; a study from before this was recorded shows no count)."""
    d = r.decode
    if d is None or d.ratio is None:
        return "-"
    over = f" (median of {len(d.sentence_ratios)})" if d.sentence_ratios else ""
    return f"{'speaks' if d.speaks else 'silent'} {d.ratio:.2f}{over}"


def shown_step(r: TrialRecord) -> str:
    """The step a view shows for a trial not running in this process."""
    step = r.last_step if r.last_step is not None else r.steps_run
    return "" if step is None else str(step)
