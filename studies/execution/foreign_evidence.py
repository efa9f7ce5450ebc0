"""`--margin` and `--validate` for a study of your trainer: the same command at lr x 2^k, or at other seeds.

Each run is one run of the command outside the search, guarded, clocked and judged as a trial is: it is a
trial of a scratch in-memory study without a pruner (a margin rung or a validation seed runs to its end or
to a guard), run by the command objective itself, so nothing about how a run is read is written twice.
Its telemetry and folder sit under ``runs/<study>/evidence/<label>/``; the typed results (``Margin``,
``Validation``) are stored in the study as the project's are, and the report shows them.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna

from common.errors import UserError
from studies import ranking
from studies.evidence import edge_hint, margin, validate
from studies.execution.command_trial import make_command_objective
from studies.execution.foreign_trial import say_once
from studies.foreign import ForeignStudy
from studies.paths import StudyPaths
from studies.record import TrialRecord, load_records

EVIDENCE = "evidence"  # the folder under the study's that holds these runs


def check_names(study_def: ForeignStudy, flag: str, names: Sequence[str]) -> None:
    """Fail before anything runs: a name that is neither one of the space's presets nor "best"."""
    known = (*study_def.presets, margin.BEST)
    for name in names:
        if name not in known:
            raise UserError(
                f"{flag} {name!r}: not a preset of {study_def.source.name}; known: {', '.join(known)}"
            )


def recipe(study: optuna.Study, study_def: ForeignStudy, name: str) -> tuple[dict[str, Any], int | None]:
    """A preset's params on the space's scale, or the best trial's (and its number)."""
    if name != margin.BEST:
        return study_def.space.preset_params(study_def.preset_values()[name]), None
    best = ranking.best(load_records(study))
    if best is None:
        raise UserError(
            f"{name}: study {study.study_name!r} has no feasible trial yet; run more trials first"
        )
    return dict(best.params), best.number


def run_once(
    study_def: ForeignStudy,
    paths: StudyPaths,
    params: dict[str, Any],
    *,
    seed: int,
    label: str,
    say: Callable[[str], None],
) -> TrialRecord:
    """One guarded, judged run of the command with ``params`` and ``seed``, outside the search."""
    scratch_paths = StudyPaths(paths.dir / EVIDENCE, label)
    scratch_paths.dir.mkdir(parents=True, exist_ok=True)
    scratch = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(), pruner=optuna.pruners.NopPruner(), study_name=label
    )
    scratch.enqueue_trial(params)
    trial = scratch.ask()
    objective = make_command_objective(dataclasses.replace(study_def, name=label), scratch_paths, seed, say)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a rung's lr past the space's range is meant: Optuna warns of it
        return objective(trial)


def run_margin(
    study: optuna.Study,
    study_def: ForeignStudy,
    paths: StudyPaths,
    names: Sequence[str],
    *,
    seed: int,
    max_multiplier: float,
    say: Callable[[str], None],
) -> dict[str, margin.Margin]:
    """Each named recipe's lr edge (``margin.bracket``, started where the study's trials say the edge
    lies: ``edge_hint``), each rung a run of the command; stored."""
    lr = study_def.lr_param
    assert lr is not None  # search.py refuses --margin without one
    say, found = say_once(say), {}  # what is off for lack of a signal: once, not once a run
    trials = [(float(r.params[lr]), r.verdict) for r in load_records(study) if r.verdict and lr in r.params]
    hint = edge_hint.edge_hint(margin.stored(study), trials, None)
    if hint is not None:
        say(f"margin: from just below {lr} {hint.lr:.2g}, where {hint.source} put the edge")
    for name in names:
        params, number = recipe(study, study_def, name)
        base = float(params[lr])

        def rung(
            multiplier: float, name: str = name, params: dict = params, base: float = base
        ) -> margin.Rung:
            label = f"margin-{name}-x{multiplier:g}"
            r = run_once(study_def, paths, {**params, lr: base * multiplier}, seed=seed, label=label, say=say)
            d = r.divergence
            say(f"margin {name} x{multiplier:g} ({lr} {base * multiplier:.3g}): {r.outcome}")
            return margin.Rung(
                multiplier=multiplier,
                lr=base * multiplier,
                outcome=r.outcome,
                steps_run=r.steps_run or 0,
                run_id=label,
                divergence_kind=None if d is None else d.kind,
                divergence_step=None if d is None else d.step,
                val_mel=_finite(r.value),
            )

        start, stride = (1.0, edge_hint.COARSE_STRIDE) if hint is None else (hint.start(base), margin.FACTOR)
        rungs = margin.bracket(
            rung, base_lr=base, start=start, stride=stride, max_multiplier=max_multiplier, max_lr=math.inf
        )
        steps = study_def.steps or max(r.steps_run for r in rungs)
        found[name] = margin.summarize(name, rungs, trial=number, base_lr=base, steps=steps)
        margin.store(study, found[name])
    return found


def run_validation(
    study: optuna.Study,
    study_def: ForeignStudy,
    paths: StudyPaths,
    names: Sequence[str],
    *,
    seeds: int,
    base_seed: int,
    say: Callable[[str], None],
) -> dict[str, validate.Validation]:
    """Each named recipe at seeds base_seed .. base_seed + seeds - 1 (the command's ``{seed}``); stored."""
    say, found = say_once(say), {}
    for name in names:
        params, number = recipe(study, study_def, name)
        runs = []
        for seed in range(base_seed, base_seed + seeds):
            label = f"validate-{name}-seed{seed}"
            r = run_once(study_def, paths, params, seed=seed, label=label, say=say)
            say(f"validate {name} seed {seed}: {r.outcome}")
            d = r.divergence
            runs.append(
                validate.ValidationRun(
                    seed=seed,
                    run_id=label,
                    verdict=r.outcome,
                    steps_run=r.steps_run or 0,
                    val_mel=None if d is not None else _finite(r.value),
                    divergence_step=None if d is None else d.step,
                    detail=None if d is None else d.detail,
                    last_val_mel=_finite(r.last_value) if d is not None else None,
                )
            )
        steps = study_def.steps or max(r.steps_run for r in runs)
        found[name] = validate.summarize(name, runs, steps=steps, trial=number, params=params)
        validate.store(study, found[name])
    return found


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
