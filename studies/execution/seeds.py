"""The sampler seed of each process of a search, derived from ``--seed``.

Every process that samples for one study (local worker i, its restarts, processes on other machines)
must draw its own random stream: two processes on one stream propose the same start-up points and
the study pays twice for one trial. Arithmetic on the seed (``seed + i``, ``seed + 1000 * restart``)
does not give that: worker 1 of ``--seed 0`` is worker 0 of ``--seed 1``, and ``--seed 1000`` is the
first restart of ``--seed 0``. Hashing the whole tuple through NumPy's ``SeedSequence`` does.
"""

from __future__ import annotations

SEED_LIMIT = 2**32  # TPESampler hands its seed to numpy's RandomState, which takes 0 .. 2**32 - 1


def stream_seed(seed: int, worker: int, restart: int = 0, *, host: int | None = None) -> int:
    """The sampler seed of local worker ``worker`` after ``restart`` restarts, under study seed ``seed``;
    ``host`` (a hash of host and pid) sets apart processes on other machines sharing one storage.

    Distinct tuples give unrelated seeds (SeedSequence's hash: a collision is a 1 in 2**32 chance, not a
    pattern), so no two processes of one search, nor of two searches with nearby seeds, share a stream.
    The seed is SeedSequence's entropy and the rest its ``spawn_key``, not one entropy list: an entropy
    list is read as 32-bit words with trailing zeros ignored, so ``[2**32, 0, 0]`` and ``[0, 1]`` would
    both hash as ``[0, 1, 0]``; the entropy is padded to a fixed width before the key is mixed in.
    """
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed {seed} is outside 0 .. {SEED_LIMIT - 1}")
    if worker < 0 or restart < 0:
        raise ValueError(f"worker {worker} and restart {restart} must be >= 0")
    import numpy as np  # here, not at the top: search.py's checks read SEED_LIMIT and must start fast

    key = (worker, restart) if host is None else (worker, restart, host)
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1)[0])
