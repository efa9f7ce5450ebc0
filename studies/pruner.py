"""A pruner that stops diverged trials at once and slow ones at fixed rungs, and understands NaN.

Optuna's own pruners get NaN wrong for this search: ``MedianPruner``/``PercentilePruner`` judge a
trial by its *best* value over steps (``nanmin``), so a trial whose latest eval is NaN survives on
an earlier good value; and they compare only against COMPLETE trials, while most trials of a
stability search end PRUNED. Here:

- divergence prunes now: a non-finite latest value, or a trial recorded diverged (its record, or its
  violated ``diverged`` constraint);
- a trial at its last eval is never pruned on its value (``at_last_eval``): a prune saves the steps to
  come, and it has none. It is judged and keeps its value, however close to the bar: pruned there, a
  trial that ran its course lost its value over a difference of 1e-5;
- at a step >= ``min_step`` and past the trial's own warmup (the param ``warmup_param``; a trial
  still ramping its lr up is not judged against trials at peak lr) the latest value is compared with the finite values that other
  finished (COMPLETE or PRUNED) trials reported at that *same* step; the trial survives only if
  it is within the best ``keep_fraction`` of them (0.5 = median rule, 1/3 = successive halving
  with reduction factor 3). Peers' NaN/Inf never enter the comparison, and peers that diverged
  later are left out by default, so fast-learning settings that blow up do not set the bar for
  stable ones;
- a trial that is learning to *speak* is not pruned on mel: while its recorded teacher-forced stop
  margin at the latest eval is at least ``protect_stop_margin``.
  Val mel and feasibility pull apart early on: a low mel weight, which lets the stop head learn where
  speech ends, also makes mel fall more slowly: a trial learning to stop can trail on mel at a rung
  while every trial that outruns it there never stops a decode (figures: docs/measurements.md).
  Pruning it would remove the only kind of trial that can become feasible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import TrialState

from studies.record import FINISHED, TrialRecord

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


def is_diverged(trial: FrozenTrial) -> bool:
    """True when the objective recorded the trial diverged (see ``TrialRecord.diverged``)."""
    return TrialRecord.from_trial(trial).diverged


@dataclass(frozen=True, kw_only=True, slots=True)
class PrunerSettings:
    """How hard ``StabilityPruner`` prunes; a study definition holds one (``StudyDef.pruner``).

    keep_fraction: share of peers a trial must be among the best of to continue, in (0, 1].
    min_step: no mel-based pruning before this step (the trial's report steps, warmup included).
    n_startup_trials: no mel-based pruning until this many trials have finished.
    n_min_peers: no mel-based pruning at a step with fewer finite peer values than this.
    exclude_diverged_peers: leave out peers that diverged (their early values are often good).
    respect_warmup: no mel-based pruning before the trial's own warmup (its warmup param).
    protect_stop_margin: no mel-based pruning while the trial's teacher-forced stop margin is >= this
        (None: off). Trials whose stop head has not learned sit at 0.00-0.04 after 300-400 steps; one on
        its way measured 0.23 at step 200.
    """

    keep_fraction: float = 0.5
    min_step: int = 0
    n_startup_trials: int = 5
    n_min_peers: int = 3
    exclude_diverged_peers: bool = True
    respect_warmup: bool = True
    protect_stop_margin: float | None = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"PrunerSettings.keep_fraction must be in (0, 1], got {self.keep_fraction}")
        if self.min_step < 0:
            raise ValueError(f"PrunerSettings.min_step must be >= 0, got {self.min_step}")
        if self.n_startup_trials < 0:
            raise ValueError(f"PrunerSettings.n_startup_trials must be >= 0, got {self.n_startup_trials}")
        if self.n_min_peers < 1:
            raise ValueError(f"PrunerSettings.n_min_peers must be >= 1, got {self.n_min_peers}")


def at_last_eval(study: optuna.Study, max_steps: int | None, step: int) -> bool:
    """Has the trial reached its last eval? Its recorded ``max_steps`` says; a trial without one (a user's
    trainer whose length the search is not told) is there when it reached the step where the trials that
    ran to their end (COMPLETE) had their last eval."""
    if max_steps is not None:
        return step >= max_steps
    ends = [t.last_step for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    ends = [e for e in ends if e is not None]
    return bool(ends) and step >= max(ends)


class StabilityPruner(BasePruner):
    """Prune on divergence at once, and on validation mel at rung steps against finished peers.

    ``warmup_param``: the space's name for a trial's warmup (``respect_warmup`` reads it; None: the
    space has none, as a user's may not).
    """

    def __init__(
        self, settings: PrunerSettings | None = None, *, warmup_param: str | None = "warmup_steps"
    ) -> None:
        self.settings = PrunerSettings() if settings is None else settings
        self._warmup_param = warmup_param

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        # Divergence first: it needs no peers and no warmup.
        step = trial.last_step
        if step is not None and not math.isfinite(trial.intermediate_values[step]):
            return True
        record = TrialRecord.from_trial(trial)
        if record.diverged:
            return True
        if step is None or step < self.settings.min_step or self.settings.keep_fraction >= 1.0:
            return False
        if at_last_eval(study, record.max_steps, step):
            return False  # it ran its course: the judge words it and its value counts, however close
        warmup = trial.params.get(self._warmup_param, 0) if self._warmup_param else 0
        if self.settings.respect_warmup and step < warmup:
            return False
        if self.settings.protect_stop_margin is not None:
            margin = record.stop_end_margin
            if margin is not None and math.isfinite(margin) and margin >= self.settings.protect_stop_margin:
                return False

        finished = study.get_trials(deepcopy=False, states=FINISHED)
        if len(finished) < self.settings.n_startup_trials:
            return False
        peers = [
            t.intermediate_values[step]
            for t in finished
            if t.number != trial.number
            and step in t.intermediate_values
            and math.isfinite(t.intermediate_values[step])
            and not (self.settings.exclude_diverged_peers and is_diverged(t))
        ]
        if len(peers) < self.settings.n_min_peers:
            return False

        value = trial.intermediate_values[step]
        sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
        # The bar is the keep_fraction quantile of the peers (lower is better after the sign flip).
        bar = float(np.quantile(sign * np.asarray(peers, dtype=float), self.settings.keep_fraction))
        return sign * value > bar
