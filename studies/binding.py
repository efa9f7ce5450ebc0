"""A study's runs as trainer configs: the base level, the study's shared settings, a run's params.

Every run a study makes (a trial, a validation seed, a transfer check's long run, the lr probe) is
built here from the study definition and the Optuna params of the recipe it runs, so they differ only
in what they are meant to: the seed and the number of steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from studies.registry import StudyDef
from trainer.config import GuardConfig, TrainConfig, apply_overrides
from trainer.presets import preset
from trainer.schedules import lr_at, lr_factor

BASE_LEVEL = "basic"  # knobs the space does not search (stop weight, alignment form...) come from here


def trial_steps(study: StudyDef, warmup: int) -> int:
    """Warmup + horizon: a trial that ends inside its warmup says nothing about stability."""
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    return warmup + study.horizon


def train_overrides(study: StudyDef) -> dict[str, Any]:
    """TrainConfig overrides every run of the study shares (the space adds the searched knobs).

    ``max_steps`` is per run (``trial_steps`` for a trial); ``trial_config`` adds it.
    """
    return {
        "model_size": study.model_size,
        "precision": study.precision,
        "batch_size": study.batch_size,
        "reduction_factor": study.reduction_factor,
        "eval_every": study.eval_every,
        "alignment_loss": study.alignment_loss,
        **dict(study.form_settings),
        "guards": dict(study.scoring.guard_overrides),
    }


def form_overrides(study: StudyDef, overrides: dict[str, Any]) -> dict[str, Any]:
    """The run's knobs with the space's alignment weight on the study's alignment form: the seed's "KL"
    knob (param ``kl_weight``) weights the KL and guided losses as ``kl_weight``, and the "prior" form's
    forward-sum loss as ``forward_sum_weight`` (``kl_weight`` does not act on that form)."""
    if study.alignment_loss != "prior" or "kl_weight" not in overrides:
        return overrides
    moved = dict(overrides)
    moved["forward_sum_weight"] = moved.pop("kl_weight")
    return moved


def base_config(study: StudyDef) -> TrainConfig:
    """The TrainConfig every run of the study starts from: the base level + the study's settings."""
    return apply_overrides(preset(BASE_LEVEL), train_overrides(study), where=study.name)


def guard_config(study: StudyDef) -> GuardConfig:
    """The thresholds that judge the study's runs (the trainer's, with the study's step overrides)."""
    return base_config(study).guards


def trial_config(
    study: StudyDef, overrides: dict[str, Any], *, seed: int, where: str, steps: int | None = None
) -> TrainConfig:
    """The TrainConfig of one run: base level + the study's shared settings + the run's knobs
    (``overrides``, TrainConfig fields as ``space.suggest`` / ``space.to_overrides`` give them), for
    ``steps`` steps (default: a trial's, its warmup plus the horizon)."""
    if steps is None:
        steps = trial_steps(study, int(overrides[study.space.warmup_param]))
    changes = {**form_overrides(study, overrides), "max_steps": steps, "seed": seed}
    return apply_overrides(base_config(study), changes, where=where)


def recipe_config(
    study: StudyDef, params: dict[str, Any], *, seed: int, steps: int, where: str
) -> TrainConfig:
    """The TrainConfig of a recipe given as the study's Optuna params (a preset's or a trial's), run
    again for ``steps`` steps: validation seeds and a transfer check's long runs."""
    return trial_config(study, study.space.to_overrides(params), seed=seed, where=where, steps=steps)


def rung_lr(study: StudyDef, cfg: TrainConfig, params: Mapping[str, Any]) -> Callable[[int], float] | None:
    """The lr of a run planned to the study's speech rung (``cfg``, the trial's config; ``params``, its
    Optuna params): the study's schedule through the screen, then, past the screen's end, the lr the
    exported preset's full training has at that step (its warmup on the seed's scale, as the export
    maps it). Under ``noam`` a study's short warmup also sets a fast decay: a rung that kept it trained
    at a fifth of the full training's lr, and judged silent a recipe that speaks in its full training
    (figures: docs/measurements.md). None for a study without a speech rung: the config's schedule."""
    if study.speech_rung is None:
        return None
    space = study.space
    warmup_param = space.warmup_param
    assert warmup_param is not None  # a project study's space has a warmup
    screen_end = trial_steps(study, cfg.warmup_steps)
    full_warmup = int(space.export_overrides(dict(params))[warmup_param])

    def lr(step: int) -> float:
        # (cosine would need the full training's length, which a rung cannot know: the run's end stands in)
        if step <= screen_end:
            return lr_at(step, cfg)
        return cfg.lr * lr_factor(
            step, warmup=full_warmup, scheduler=cfg.scheduler, total_steps=cfg.max_steps
        )

    return lr
