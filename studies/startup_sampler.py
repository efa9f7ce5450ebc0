"""TPE whose start-up trials are points of one scrambled Sobol sequence, not independent random draws.

A quick study has a handful of start-up trials, and a handful of independent uniform draws clump, e.g.
all of them where the alignment weight is too low to align (docs/measurements.md, "Start-up
coverage"). The first 2^m points of a scrambled Sobol sequence put one point in each 2^-m-th of every
knob's range, so the start-up trials cover the space before TPE models it.

The search's processes share one sequence: every process builds it with the same seed (``--seed``),
and a trial takes the point whose index is its own number less the enqueued trials before it, so the
processes walk one sequence without ever drawing the same point. (Optuna's ``QMCSampler`` keeps a
counter in the study's system attrs instead, read and then written: two processes asking at once drew
the same point, twice, in a chaos test of restarted workers.) TPE keeps each process's own seed.

Start-up lasts exactly as long as TPE's own: while fewer than ``n_startup_trials`` trials are COMPLETE
or PRUNED (the presets among them, FAIL trials not), so TPE takes over where it would have stopped
drawing at random.

TPE models the study's screens only, never its continuation trials (``studies.promotion``): a
continuation trains a screen's params on to the long rung, so its val mel is measured at another horizon
(lower than any screen's: seen by TPE, the promoted points fill its "good" set twice over), and while it
runs, the constant liar counts it among the bad trials, at the very params of the best screen.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from studies.continuations_fold import is_continuation

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what TPE's n_startup_trials counts


class SobolStartupTPESampler(optuna.samplers.TPESampler):
    """``TPESampler`` (``tpe_options``, its ``seed`` this process's) with a Sobol start-up.

    space: the study's distributions, every param it suggests, in the space's order (Sobol's first axes
    are the most even together, so the first params get them). sobol_seed: the same in every process of
    a search, so they share one sequence.
    """

    def __init__(
        self,
        *,
        space: Mapping[str, BaseDistribution],
        sobol_seed: int | None,
        n_startup_trials: int,
        **tpe_options: Any,
    ) -> None:
        super().__init__(n_startup_trials=n_startup_trials, **tpe_options)
        self._startup_trials = n_startup_trials
        # A param with one value takes no axis: Optuna fills it in without asking the sampler.
        self._startup_space = {name: d for name, d in space.items() if not d.single()}
        with warnings.catch_warnings():
            # QMCSampler is marked experimental since Optuna 3.0; its sampling is unchanged through 5.x.
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            self._sobol = _NumberedSobol(
                qmc_type="sobol",
                scramble=True,
                seed=sobol_seed,
                warn_asynchronous_seeding=False,
                warn_independent_sampling=False,
            )
        self._sobol_trial_ids: set[int] = set()  # trials told "start-up" by infer_relative_search_space

    def in_startup(self, study: optuna.Study) -> bool:
        """TPE's own test: fewer finished (COMPLETE or PRUNED) screens than ``n_startup_trials``."""
        return len(_Screens(study).get_trials(deepcopy=False, states=FINISHED)) < self._startup_trials

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        # The phase is decided once per trial here, not again in sample_relative: a trial ending
        # between the two calls must not hand TPE a space it did not infer.
        if self.in_startup(study):
            self._sobol_trial_ids.add(trial._trial_id)
            return dict(self._startup_space)
        return super().infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if trial._trial_id in self._sobol_trial_ids:
            self._sobol_trial_ids.discard(trial._trial_id)
            # The point's index is the trial's number less the enqueued trials before it (presets,
            # re-runs: they are not sampled): numbers are handed out by the storage one by one, so two
            # processes asking at once never get the same point (a counter read and then written could).
            earlier = study.get_trials(deepcopy=False)
            enqueued = sum(t.number < trial.number and "fixed_params" in t.system_attrs for t in earlier)
            self._sobol.index = trial.number - enqueued
            return self._sobol.sample_relative(study, trial, search_space)
        return super().sample_relative(_Screens(study), trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return super().sample_independent(_Screens(study), trial, param_name, param_distribution)


class _Screens:
    """The study as TPE reads it: every trial but the continuations; all else is the study's own."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, *args: Any, **kwargs: Any) -> list[FrozenTrial]:
        return [t for t in self._study._get_trials(*args, **kwargs) if not is_continuation(t)]

    def get_trials(self, *args: Any, **kwargs: Any) -> list[FrozenTrial]:
        return [t for t in self._study.get_trials(*args, **kwargs) if not is_continuation(t)]

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


class _NumberedSobol(optuna.samplers.QMCSampler):
    """Optuna's QMCSampler, its point chosen by ``index`` (set for each trial) instead of a counter in the
    study's system attrs."""

    index = 0

    def _find_sample_id(self, study: optuna.Study, search_space: dict[str, BaseDistribution]) -> int:
        return self.index


def to_unit_cube(params: Mapping[str, Any], space: Mapping[str, BaseDistribution]) -> np.ndarray:
    """A trial's params as a point of [0, 1]^d, one axis per param of ``space`` in its order: log params
    in log space, a categorical at the middle of its choice's share. How evenly start-up points spread is
    measured on this cube (``bench/bench_startup_coverage.py``, the tests)."""
    point = []
    for name, dist in space.items():
        value = params[name]
        if isinstance(dist, CategoricalDistribution):
            point.append((dist.choices.index(value) + 0.5) / len(dist.choices))
            continue
        low, high, x = float(dist.low), float(dist.high), float(value)
        if dist.log:  # a FloatDistribution or an IntDistribution
            low, high, x = math.log(low), math.log(high), math.log(x)
        point.append((x - low) / (high - low) if high > low else 0.5)
    return np.array(point)
