"""What mattered: PED-ANOVA importances of the searched knobs, for val mel and for divergence."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from studies.evidence.rests_on import rests_on
from studies.record import TrialRecord


@dataclass(frozen=True, slots=True)
class Importance:
    """PED-ANOVA importances for one target, and how many trials they rest on."""

    target: str  # the study's metric, or "divergence"
    trials: int
    values: Mapping[str, float] | None  # None: not computable, ``why`` says why
    why: str = ""

    def line(self) -> str:
        rests = rests_on(self.trials)
        if self.values is None:
            return f"importance for {self.target}: {self.why} ({rests})"
        ranked = ", ".join(f"{k} {v:.2f}" for k, v in self.values.items() if math.isfinite(v))
        return f"importance for {self.target} (PED-ANOVA, {rests}): {ranked}"


def importances(
    study: optuna.Study, records: Sequence[TrialRecord], param_names: Sequence[str], metric: str = "val mel"
) -> tuple[Importance, Importance]:
    """PED-ANOVA importances for the metric (complete trials) and for divergence (all finished)."""
    finished = [r for r in records if r.finished]
    complete = [r for r in finished if r.state == TrialState.COMPLETE and r.value is not None]
    distributions = _distributions(study)
    found = []
    for target, group, score in (
        (metric, complete, lambda r: float(r.value)),
        ("divergence", finished, lambda r: 1.0 if r.diverged else 0.0),
    ):
        values = _ped_anova(group, score, param_names, distributions)
        if isinstance(values, str):
            found.append(Importance(target, len(group), None, values))
        else:
            found.append(Importance(target, len(group), values))
    return found[0], found[1]


def _distributions(study: optuna.Study) -> dict[int, dict]:
    return {t.number: t.distributions for t in study.get_trials(deepcopy=False)}


def _ped_anova(
    records: list[TrialRecord],
    target: Callable[[TrialRecord], float],
    param_names: Sequence[str],
    distributions: dict[int, dict],
) -> dict[str, float] | str:
    """Evaluate on a throwaway in-memory copy, so PRUNED trials can count and the study stays untouched."""
    if len(records) < 4:
        return f"needs at least 4 trials, has {len(records)}"
    values = [target(r) for r in records]
    if len(set(values)) < 2:
        return "all trials scored alike"
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the scratch study would log its creation
    try:
        copy = optuna.create_study(direction="minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    for r, v in zip(records, values, strict=True):
        params = {k: r.params[k] for k in param_names if k in r.params}
        dists = {k: distributions[r.number][k] for k in params}
        copy.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=v))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            return optuna.importance.get_param_importances(copy, evaluator=evaluator)
    except (ValueError, RuntimeError) as e:
        return f"not computable: {e}"
