"""The study's answer in a terminal: top trials, the presets' verdicts, why trials diverged, what mattered."""

from __future__ import annotations

import math
import warnings
from collections import Counter

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.table import Table

from space.stability import PARAM_NAMES
from studies.live import feasible, fmt, last_value, outcome
from studies.presets_seed import PRESET_ATTR
from studies.runner import FINISHED


def preset_trials(study: optuna.Study) -> dict[str, FrozenTrial]:
    """The newest finished trial of each preset tag."""
    found: dict[str, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=FINISHED):
        name = t.user_attrs.get(PRESET_ATTR)
        if name is not None:
            found[str(name)] = t
    return found


def best_feasible(study: optuna.Study) -> FrozenTrial | None:
    candidates = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if feasible(t)]
    return min(candidates, key=lambda t: t.value) if candidates else None


def importances(study: optuna.Study) -> tuple[dict[str, float] | str, dict[str, float] | str]:
    """PED-ANOVA importances for val mel (feasible complete trials) and for divergence (all finished)."""
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    complete = [t for t in finished if t.state == TrialState.COMPLETE and t.value is not None]
    mel = _ped_anova(complete, lambda t: float(t.value))
    diverged = _ped_anova(finished, lambda t: 1.0 if t.user_attrs.get("diverged") else 0.0)
    return mel, diverged


def _ped_anova(trials: list[FrozenTrial], target) -> dict[str, float] | str:
    """Evaluate on a throwaway in-memory copy, so PRUNED trials can count and the study stays untouched."""
    if len(trials) < 4:
        return f"needs at least 4 trials, has {len(trials)}"
    values = [target(t) for t in trials]
    if len(set(values)) < 2:
        return "all trials scored alike"
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the scratch study would log its creation
    try:
        copy = optuna.create_study(direction="minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    for t, v in zip(trials, values, strict=True):
        params = {k: t.params[k] for k in PARAM_NAMES if k in t.params}
        dists = {k: t.distributions[k] for k in params}
        copy.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=v))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            return optuna.importance.get_param_importances(copy, evaluator=evaluator)
    except (ValueError, RuntimeError) as e:
        return f"not computable: {e}"


def print_summary(study: optuna.Study, console: Console) -> None:
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    console.print(f"\n[bold]study {study.study_name}[/]: {len(finished)} finished trials")

    ranked = sorted((t for t in finished if feasible(t)), key=lambda t: t.value)[:5]
    top = Table(title="top feasible trials (lowest validation mel)")
    for col in ("#", "val mel", *PARAM_NAMES):
        top.add_column(col)
    for t in ranked:
        top.add_row(str(t.number), f"{t.value:.4f}", *(fmt(t.params.get(p)) for p in PARAM_NAMES))
    console.print(
        top if ranked else "no feasible trial yet: no finished trial aligned and stopped its decode"
    )

    side = Table(title="the presets and the best, side by side")
    side.add_column("")
    columns = {**preset_trials(study)}
    best = best_feasible(study)
    if best is not None:
        columns["best"] = best
    for name in columns:
        side.add_column(name)
    rows = [("trial", lambda t: str(t.number))]
    rows += [(p, lambda t, p=p: fmt(t.params.get(p))) for p in PARAM_NAMES]
    rows += [
        ("verdict", outcome),
        ("divergence step", lambda t: str(t.user_attrs.get("divergence_step", "-"))),
        ("val mel", lambda t: "-" if last_value(t) is None else f"{last_value(t):.4f}"),
        ("attention diagonality", lambda t: fmt(t.user_attrs.get("diagonality", "-"))),
        ("seed: loss in 1..10", lambda t: fmt(t.user_attrs.get("seed_loss_in_1_10", "-"))),
        ("seed: grad norm < 1", lambda t: fmt(t.user_attrs.get("seed_grad_norm_below_1", "-"))),
    ]
    for label, get in rows:
        side.add_row(label, *(get(t) for t in columns.values()))
    console.print(side)

    reasons = Counter(outcome(t) for t in finished)
    console.print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))
    half = len(finished) // 2
    if half >= 2:
        ordered = sorted(finished, key=lambda t: t.number)
        early = sum(bool(t.user_attrs.get("diverged")) for t in ordered[:half]) / half
        late = sum(bool(t.user_attrs.get("diverged")) for t in ordered[half:]) / (len(ordered) - half)
        console.print(f"diverged: {early:.0%} of the first {half} trials, {late:.0%} of the rest")

    mel, div = importances(study)
    for title, imp in (("val mel", mel), ("divergence", div)):
        if isinstance(imp, str):
            console.print(f"importance for {title}: {imp}")
        else:
            ranked_imp = ", ".join(f"{k} {v:.2f}" for k, v in imp.items() if math.isfinite(v))
            console.print(f"importance for {title} (PED-ANOVA): {ranked_imp}")
