"""Each sampling process of a search draws its own stream: no worker of ``--seed 1`` replays a worker
of ``--seed 0``, and a restarted worker proposes none of its predecessor's start-up points."""

from __future__ import annotations

import itertools

import optuna
import pytest

from studies.execution import workers
from studies.execution.seeds import stream_seed
from studies.execution.workers import RESTART_ENV, sampler_seed
from studies.registry import get_study, make_sampler

STARTUP_ASKED = 4  # fewer than the quick study's 6 start-up trials: every one is TPE's random draw


def startup_params(seed: int, n: int = STARTUP_ASKED) -> list[tuple]:
    """The first ``n`` trials a sampler built as the search builds it proposes on the real space."""
    quick = get_study("stability-quick")
    assert n < quick.sampler.n_startup_trials
    study = optuna.create_study(sampler=make_sampler(quick, seed), direction="minimize")
    proposed = []
    for _ in range(n):
        trial = study.ask()
        quick.space.suggest(trial)
        proposed.append(tuple(sorted(trial.params.items())))
        study.tell(trial, 1.0)
    return proposed


def worker_params(seed: int, worker: int, monkeypatch: pytest.MonkeyPatch, *, restart: int = 0) -> set[tuple]:
    monkeypatch.setenv(RESTART_ENV, str(restart))
    return set(startup_params(sampler_seed(seed, worker, shared=False)))


def test_no_two_processes_share_a_seed() -> None:
    triples = list(itertools.product(range(10), range(8), range(4)))
    seeds = {stream_seed(s, w, r) for s, w, r in triples}
    assert len(seeds) == len(triples)
    # A tuple that differs only past the seed's 32-bit word, or by a trailing zero, is another stream.
    assert stream_seed(0, 1, 0) != stream_seed(0, 1, 0, host=0)
    with pytest.raises(ValueError, match="outside"):
        stream_seed(2**32, 0)


def test_the_lone_search_keeps_its_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RESTART_ENV, raising=False)
    assert sampler_seed(7, None, shared=False) == 7


def test_two_seeds_with_two_workers_propose_no_common_startup_point(monkeypatch: pytest.MonkeyPatch) -> None:
    by_seed = {s: [worker_params(s, w, monkeypatch) for w in range(2)] for s in (0, 1)}
    for s in (0, 1):
        assert len(by_seed[s][0] | by_seed[s][1]) == 2 * STARTUP_ASKED  # the two workers differ
    assert not (by_seed[0][0] | by_seed[0][1]) & (by_seed[1][0] | by_seed[1][1])


def test_a_restarted_worker_proposes_none_of_its_predecessors_points(monkeypatch: pytest.MonkeyPatch) -> None:
    first = worker_params(0, 1, monkeypatch, restart=0)
    again = worker_params(0, 1, monkeypatch, restart=1)
    assert not first & again
    # Nor does it replay a search whose seed is 1000 away.
    assert not again & (worker_params(1000, 0, monkeypatch) | worker_params(1000, 1, monkeypatch))


def test_workers_of_two_machines_on_one_storage_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RESTART_ENV, raising=False)
    monkeypatch.setattr(workers.socket, "gethostname", lambda: "machine-a")
    on_a = sampler_seed(0, 0, shared=True)
    monkeypatch.setattr(workers.socket, "gethostname", lambda: "machine-b")
    assert sampler_seed(0, 0, shared=True) != on_a
