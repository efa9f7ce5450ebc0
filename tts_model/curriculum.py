"""A length curriculum: the first steps of a run train on its shortest utterances only.

Short utterances are easy targets: the model can learn the frame-level mel and a monotonic alignment
on them before it must hold a long one together (curriculum learning on sequence length; Platanios et
al. 2019 grow the share of the data a model sees with its "competence"). With `steps` N, epoch e,
starting at step S(e), trains on the shortest START_SHARE + (1 - START_SHARE) * S(e) / N of the items
in the usual bucketed order; from the first epoch that starts at or after step N on, on all of them.
Epochs under the curriculum have fewer items, so a run of a given number of steps sees more epochs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# The share of the data the first epoch sees: the shortest 30%, several batches even on a small corpus.
START_SHARE = 0.3


def curriculum_subsets(
    lengths: Sequence[int], batch_size: int, steps: int, *, start: float = START_SHARE
) -> list[np.ndarray]:
    """The item indices each curriculum epoch trains on (ascending; epoch 0 first). Epochs past the list
    train on every item; `steps` 0 gives no curriculum epochs at all."""
    if batch_size < 1 or steps < 0 or not 0.0 < start <= 1.0:
        raise ValueError(
            f"batch_size >= 1, steps >= 0 and 0 < start <= 1, got {batch_size}, {steps}, {start}"
        )
    n = len(lengths)
    order = np.argsort(np.asarray(lengths), kind="stable")  # shortest first, ties by index
    subsets, step = [], 0
    while step < steps:
        share = start + (1.0 - start) * step / steps
        k = min(n, max(batch_size, math.ceil(share * n)))
        subsets.append(np.sort(order[:k]))
        step += math.ceil(k / batch_size)
    return subsets
