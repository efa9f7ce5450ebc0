"""Rank agreement: Spearman's rho, as the transfer check and the rungs of a study use it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_PAIRS = 3  # fewer pairs rank nothing


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho with average ranks for ties (inf ranks last); None with < 3 pairs or no spread."""
    if len(xs) != len(ys) or len(xs) < MIN_PAIRS:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    order = np.argsort(arr, kind="stable")
    ranks = np.empty(len(arr))
    i = 0
    while i < len(arr):
        j = i
        while j + 1 < len(arr) and arr[order[j + 1]] == arr[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks
