"""The stability search space: an Optuna trial -> TrainConfig overrides.

This is the only module that calls ``trial.suggest_*``, so the parameter names, ranges and
scales live in one place. The ranges hold the seed's presets ("basic" and "enhanced") and the lr
range reaches far past the edge of stability (1e-1): a search that never sees divergence cannot
map where it starts.

A study's horizon decides how long a warmup it can afford, so the warmup range is a field of a
small frozen ``SpaceSpec``; ``warmup_scale`` maps the seed's warmups (3000/2000 steps, sized for
epochs of real data) proportionally into a shorter study's range. Optuna params are always on the
study's scale (the warmup the trainer actually runs); ``export_overrides`` maps a chosen warmup
back to the seed's scale for a full training run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna

# (low, high) on a log scale, except warmup: the seed's ranges (SEED.md) but the alignment weight's.
LR_RANGE = (1e-6, 1e-1)
MEL_WEIGHT_RANGE = (0.5, 25.0)
# The alignment weight (param "kl_weight", the seed's KL knob) weights the study's alignment form's loss,
# in the "prior" form the forward-sum loss, so its range is measured in that form, not the seed's KL
# 0.05-2.0 (bench/bench_alignment_weight_sweep.py; figures: docs/measurements.md). The weight a screen
# needs to align grows with the mel weight and as the lr falls; the low end sits at that edge for the
# best lr's mid-range mel weights and a few times below it at high mel weights or a lower lr, so the
# search still finds the edge there and spends few trials where nothing aligns. At a low mel weight the
# whole range aligns, and the high end is where its val mel suffers.
KL_WEIGHT_RANGE = (0.1, 2.0)
GRAD_CLIP_RANGE = (0.1, 5.0)
WEIGHT_DECAY_RANGE = (1e-8, 1e-4)
SWITCHES = ("adaptive_loss_weights", "label_smoothing", "huber_loss")

# Optuna param name -> (low, high) for the log-scaled floats. Param names are TrainConfig fields.
LOG_FLOATS: dict[str, tuple[float, float]] = {
    "lr": LR_RANGE,
    "mel_weight": MEL_WEIGHT_RANGE,
    "kl_weight": KL_WEIGHT_RANGE,
    "grad_clip": GRAD_CLIP_RANGE,
    "weight_decay": WEIGHT_DECAY_RANGE,
}
WARMUP = "warmup_steps"
PARAM_NAMES: tuple[str, ...] = (*LOG_FLOATS, WARMUP, *SWITCHES)
HEADLINE = (
    ("lr", "lr"),
    ("grad_clip", "clip"),
    ("mel_weight", "mel w"),
    ("kl_weight", "kl w"),
    (WARMUP, "warmup"),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class SpaceSpec:
    """How a study sizes the space: the warmup range and the scale that maps the seed's warmups.

    ``warmup_step`` is the grid of the integer warmup param; scaled preset warmups must land on it
    (checked here) so enqueued presets are inside the distribution.
    """

    warmup_max: int = 4000
    warmup_step: int = 1
    warmup_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.warmup_max < 1:
            raise ValueError(f"SpaceSpec.warmup_max must be >= 1, got {self.warmup_max}")
        if not 1 <= self.warmup_step <= self.warmup_max:
            raise ValueError(
                f"SpaceSpec.warmup_step must be in [1, warmup_max={self.warmup_max}], got {self.warmup_step}"
            )
        if self.warmup_max % self.warmup_step:
            raise ValueError(
                f"SpaceSpec.warmup_max ({self.warmup_max}) must be a multiple of warmup_step ({self.warmup_step})"
            )
        if not (math.isfinite(self.warmup_scale) and 0.0 < self.warmup_scale <= 1.0):
            raise ValueError(f"SpaceSpec.warmup_scale must be in (0, 1], got {self.warmup_scale}")

    def scale_warmup(self, seed_warmup: int) -> int:
        """A seed-scale warmup on this study's grid (rounded to the nearest grid step, clamped)."""
        scaled = round(seed_warmup * self.warmup_scale / self.warmup_step) * self.warmup_step
        return min(max(scaled, 0), self.warmup_max)

    # -- the space as a value: what a study's readers ask of it (``space.SearchSpace``) ----------------
    @property
    def param_names(self) -> tuple[str, ...]:
        return PARAM_NAMES

    @property
    def log_params(self) -> tuple[str, ...]:
        return tuple(LOG_FLOATS)

    @property
    def switches(self) -> tuple[str, ...]:
        return SWITCHES

    @property
    def warmup_param(self) -> str:
        return WARMUP

    @property
    def headline(self) -> tuple[tuple[str, str], ...]:
        """(param, short column label) of the knobs a live view has room for."""
        return HEADLINE

    @property
    def axes(self) -> tuple[str | None, tuple[str, ...]]:
        """The stability map's x (lr) and the knobs drawn against it; the first also buckets the lr
        boundary (the gradient clip)."""
        return "lr", ("grad_clip", "mel_weight", WARMUP)

    def range_of(self, name: str) -> tuple[float, float]:
        """(low, high) of a log-scaled knob."""
        return LOG_FLOATS[name]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return suggest(trial, self)

    def to_overrides(self, params: dict[str, Any]) -> dict[str, Any]:
        return params_to_overrides(params)

    def export_overrides(self, params: dict[str, Any]) -> dict[str, Any]:
        return export_overrides(params, self)

    def preset_params(self, preset_values: dict[str, Any]) -> dict[str, Any]:
        return preset_params(preset_values, self)

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return distributions(self)


def suggest(trial: optuna.Trial, spec: SpaceSpec) -> dict[str, Any]:
    """Ask the trial for every knob; return TrainConfig overrides (field -> value)."""
    params: dict[str, Any] = {}
    for name, (low, high) in LOG_FLOATS.items():
        params[name] = trial.suggest_float(name, low, high, log=True)
    params[WARMUP] = trial.suggest_int(WARMUP, 0, spec.warmup_max, step=spec.warmup_step)
    for name in SWITCHES:
        params[name] = trial.suggest_categorical(name, (False, True))
    return params_to_overrides(params)


def params_to_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """Optuna params (a trial's or a FrozenTrial's) -> TrainConfig overrides on the study's scale.

    Param names are TrainConfig field names, so this only checks completeness and coerces types
    (storages may hand back ints as floats).
    """
    missing = [name for name in PARAM_NAMES if name not in params]
    if missing:
        raise ValueError(f"params lack {', '.join(missing)}; expected {', '.join(PARAM_NAMES)}")
    overrides: dict[str, Any] = {name: float(params[name]) for name in LOG_FLOATS}
    overrides[WARMUP] = int(params[WARMUP])
    overrides.update({name: bool(params[name]) for name in SWITCHES})
    return overrides


def export_overrides(params: dict[str, Any], spec: SpaceSpec) -> dict[str, Any]:
    """Overrides for a full training run: the warmup mapped back to the seed's scale."""
    overrides = params_to_overrides(params)
    overrides[WARMUP] = round(overrides[WARMUP] / spec.warmup_scale)
    return overrides


def preset_params(preset_values: dict[str, Any], spec: SpaceSpec) -> dict[str, Any]:
    """A preset's TrainConfig fields -> the Optuna params to enqueue (warmup scaled to the study).

    Raises ValueError if a value lies outside the space: an enqueued value outside its
    distribution would silently be re-sampled by Optuna, and the preset would never be judged.
    """
    missing = [name for name in PARAM_NAMES if name not in preset_values]
    if missing:
        raise ValueError(f"preset lacks {', '.join(missing)}")
    params: dict[str, Any] = {}
    for name, (low, high) in LOG_FLOATS.items():
        value = float(preset_values[name])
        if not low <= value <= high:
            raise ValueError(f"preset {name}={value} lies outside the search range [{low}, {high}]")
        params[name] = value
    params[WARMUP] = spec.scale_warmup(int(preset_values[WARMUP]))
    for name in SWITCHES:
        params[name] = bool(preset_values[name])
    return params


def distributions(spec: SpaceSpec) -> dict[str, optuna.distributions.BaseDistribution]:
    """The distributions ``suggest`` uses, for checks and for ``optuna.create_trial`` in tests."""
    dists: dict[str, optuna.distributions.BaseDistribution] = {
        name: optuna.distributions.FloatDistribution(low, high, log=True)
        for name, (low, high) in LOG_FLOATS.items()
    }
    dists[WARMUP] = optuna.distributions.IntDistribution(0, spec.warmup_max, step=spec.warmup_step)
    for name in SWITCHES:
        dists[name] = optuna.distributions.CategoricalDistribution((False, True))
    return dists
