"""What mattered: PED-ANOVA importances of the searched knobs, for val mel and for divergence."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import optuna
from optuna.trial import TrialState

from studies.record import TrialRecord


def importances(
    study: optuna.Study, records: Sequence[TrialRecord], param_names: Sequence[str]
) -> tuple[dict[str, float] | str, dict[str, float] | str]:
    """PED-ANOVA importances for val mel (complete trials) and for divergence (all finished)."""
    finished = [r for r in records if r.finished]
    complete = [r for r in finished if r.state == TrialState.COMPLETE and r.value is not None]
    distributions = _distributions(study)
    mel = _ped_anova(complete, lambda r: float(r.value), param_names, distributions)
    diverged = _ped_anova(finished, lambda r: 1.0 if r.diverged else 0.0, param_names, distributions)
    return mel, diverged


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
