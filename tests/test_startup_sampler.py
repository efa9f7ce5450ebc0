"""The start-up trials are the first points of one scrambled Sobol sequence, shared by the processes of a
search; TPE takes over where its own random start-up would have ended; a study resumes on the sequence."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState
from scipy.stats import qmc

from studies.execution.seeds import stream_seed
from studies.presets_seed import enqueue_presets
from studies.record_keys import CONTINUES, PRESET
from studies.registry import get_study, make_sampler, tpe_gamma
from studies.startup_sampler import FINISHED, to_unit_cube

QUICK = get_study("stability-quick")
SPACE = QUICK.space.distributions()
N_STARTUP = QUICK.sampler.n_startup_trials
TPE_MARK = "tpe:relative_params"  # the system attr TPE (constant liar) writes on a trial it sampled


@pytest.fixture(autouse=True)
def _quiet() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def sobol_index(params: dict, seed: int, n: int = 32) -> int | None:
    """Which of the first ``n`` points of the scrambled Sobol sequence of ``seed`` these params are (None:
    none of them). Log floats match to 1e-9; an int is that point rounded onto its grid; a categorical is
    the choice whose share of [0, 1) holds the point."""
    cube = to_unit_cube(params, SPACE)
    for i, u in enumerate(qmc.Sobol(len(SPACE), scramble=True, seed=seed).random(n)):
        ok = True
        for axis, (dist, x) in enumerate(zip(SPACE.values(), cube, strict=True)):
            if isinstance(dist, CategoricalDistribution):
                ok &= int(u[axis] * len(dist.choices)) == int(x * len(dist.choices))
            elif isinstance(dist, IntDistribution):
                width = dist.high - dist.low
                ok &= abs(x * width - (u[axis] * (width + dist.step) - dist.step / 2)) <= dist.step / 2 + 1e-9
            else:
                ok &= abs(x - u[axis]) < 1e-9
        if ok:
            return i
    return None


def todays_sampler(seed: int) -> optuna.samplers.TPESampler:
    """The sampler before the Sobol start-up: TPE drawing its start-up at random."""
    s = QUICK.sampler
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*`gamma`.*", category=FutureWarning)  # as make_sampler
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=s.n_startup_trials,
            multivariate=s.multivariate,
            constant_liar=s.constant_liar,
            gamma=functools.partial(tpe_gamma, s.gamma_fraction),
        )


def run_workers(
    studies: list[optuna.Study], n_trials: int, ends: list[TrialState] | None = None
) -> list[tuple]:
    """Workers on one storage, each telling its trial and asking the next in turn (presets first, as the
    search enqueues them); ``ends[k]`` is how the k-th trial told ends (COMPLETE by default).
    Returns (trial number, params, worker, finished trials when it was asked) for each sampled trial."""
    enqueue_presets(studies[0], QUICK.preset_values(), QUICK.space)
    sampled: list[tuple] = []
    told = 0

    def ask(w: int) -> optuna.Trial:
        finished = len(studies[w].get_trials(deepcopy=False, states=FINISHED))
        trial = studies[w].ask()
        QUICK.space.suggest(trial)
        if PRESET not in trial.user_attrs:
            sampled.append((trial.number, dict(trial.params), w, finished))
        return trial

    running: list[optuna.Trial | None] = [ask(w) for w in range(len(studies))]
    asked = len(running)
    while any(trial is not None for trial in running):
        for w, trial in enumerate(running):
            if trial is None:
                continue
            state = ends[told] if ends else TrialState.COMPLETE
            studies[w].tell(trial, 1.0 + trial.number if state == TrialState.COMPLETE else None, state=state)
            told += 1
            running[w] = ask(w) if asked < n_trials else None
            asked += 1
    return sorted(sampled, key=lambda s: s[0])


def startup(sampled: list[tuple]) -> list[tuple]:
    return [s for s in sampled if s[3] < N_STARTUP]


def test_two_processes_draw_one_sobol_sequence_and_spread_their_points(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'search.db'}"
    # Each its own storage object and sampler seed, as two worker processes of `--seed 7` have.
    studies = [
        optuna.create_study(
            storage=url,
            study_name="q",
            sampler=make_sampler(QUICK, stream_seed(7, w), study_seed=7),
            load_if_exists=True,
        )
        for w in range(2)
    ]
    points = startup(run_workers(studies, n_trials=10))
    # Successive points of one sequence in trial order, however the two workers took turns.
    assert [sobol_index(p, seed=7) for _, p, _, _ in points] == list(range(len(points)))
    assert {w for _, _, w, _ in points} == {0, 1} and len(points) >= 4

    # The loss tricks are categoricals: Sobol's first 4 points put each switch both ways.
    for name in QUICK.space.switches:
        assert sorted(p[name] for _, p, _, _ in points[:4]) == [False, False, True, True]

    # More even than random start-up points: below the median discrepancy of 20 random sets of as many.
    def discrepancy(params: list[dict]) -> float:
        return float(qmc.discrepancy(np.array([to_unit_cube(p, SPACE) for p in params]), method="CD"))

    def random_set(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        for _ in points:
            QUICK.space.suggest(study.ask())
        return [t.params for t in study.trials]

    sobol = discrepancy([p for _, p, _, _ in points])
    assert sobol < np.median([discrepancy(random_set(s)) for s in range(20)])


def test_tpe_takes_over_where_its_random_start_up_would_have_ended() -> None:
    """FAIL does not count towards the start-up and PRUNED does, as in TPE: the Sobol trials are exactly
    the trials today's TPE drew at random, the same schedule of endings told to both."""
    c, p, f = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL
    ends = [c, p, f, c, p, c, c, f, c, c, c, c, c, c]

    def run(sampler: optuna.samplers.BaseSampler) -> list[tuple]:
        return run_workers([optuna.create_study(sampler=sampler)], n_trials=len(ends), ends=ends)

    new, old = run(make_sampler(QUICK, 3)), run(todays_sampler(3))
    old_random = [n for n, _, _, finished in old if finished < N_STARTUP]
    new_sobol = [n for n, params, _, _ in new if sobol_index(params, seed=3) is not None]
    # Trials 0-1 are the presets; the FAIL of trial 2 buys one start-up trial more; trial 7 is TPE's.
    assert new_sobol == old_random == [2, 3, 4, 5, 6]
    assert [sobol_index(params, seed=3) for n, params, _, _ in new if n in new_sobol] == [0, 1, 2, 3, 4]


def test_tpe_marks_the_trials_after_the_start_up() -> None:
    study = optuna.create_study(sampler=make_sampler(QUICK, 5))
    sampled = run_workers([study], n_trials=10)
    tpe_sampled = [
        n for n, _, _, _ in sampled if any(k.startswith(TPE_MARK) for k in study.trials[n].system_attrs)
    ]
    assert tpe_sampled == [n for n, _, _, finished in sampled if finished >= N_STARTUP] == [6, 7, 8, 9]
    assert all(sobol_index(p, seed=5) is None for n, p, _, _ in sampled if n in tpe_sampled)


def test_a_resumed_study_goes_on_along_the_sequence(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'search.db'}"

    def process() -> optuna.Study:
        return optuna.create_study(
            storage=url, study_name="q", sampler=make_sampler(QUICK, 11), load_if_exists=True
        )

    run_workers([process()], n_trials=4)  # the presets and 2 start-up trials, then the search stops
    resumed = process()
    run_workers([resumed], n_trials=6)  # the presets are seeded already: 6 sampled trials
    trials = resumed.trials
    assert len(trials) == 10 and all(t.state == TrialState.COMPLETE for t in trials)
    assert [sobol_index(t.params, seed=11) for t in trials[2:6]] == [0, 1, 2, 3]
    assert all(sobol_index(t.params, seed=11) is None for t in trials[6:])
    assert all(any(k.startswith(TPE_MARK) for k in t.system_attrs) for t in trials[6:])


def test_tpe_models_the_screens_and_not_their_continuations() -> None:
    """A continuation trains a screen's params on to the long rung: its val mel is measured at another
    horizon, and while it runs the constant liar would count it bad at the best screen's params. So a
    study with continuations, finished and running, gets TPE's proposal of the same study without them;
    plain TPE's proposal moves (the control: the test can fail)."""
    screens = optuna.create_study(sampler=make_sampler(QUICK, 7))
    run_workers([screens], n_trials=8)
    best, second = sorted(screens.trials, key=lambda t: t.value)[:2]

    def continuation(of: optuna.trial.FrozenTrial, state: TrialState) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(
            params=of.params,
            distributions=of.distributions,
            value=of.value / 2 if state == TrialState.COMPLETE else None,
            user_attrs={CONTINUES: of.number},
            state=state,
        )

    def proposal(sampler: optuna.samplers.BaseSampler, with_continuations: bool) -> dict:
        study = optuna.create_study(sampler=sampler)
        study.add_trials(screens.trials)
        if with_continuations:
            study.add_trial(continuation(best, TrialState.COMPLETE))
            study.add_trial(continuation(second, TrialState.RUNNING))
        trial = study.ask()
        QUICK.space.suggest(trial)
        return dict(trial.params)

    assert proposal(make_sampler(QUICK, 8), True) == proposal(make_sampler(QUICK, 8), False)
    assert proposal(todays_sampler(8), True) != proposal(todays_sampler(8), False)
