"""How numbers and switches read on screen and in the report: one formatter for both."""

from __future__ import annotations

import math


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
