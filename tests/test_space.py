from __future__ import annotations

import dataclasses

import optuna
import pytest

from space.stability import (
    LOG_FLOATS,
    PARAM_NAMES,
    SpaceSpec,
    distributions,
    export_overrides,
    params_to_overrides,
    preset_params,
    suggest,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

# The seed's presets (SEED.md), as TrainConfig fields.
BASIC = dict(
    lr=1e-5,
    mel_weight=1.0,
    kl_weight=0.5,
    grad_clip=0.5,
    weight_decay=1e-7,
    warmup_steps=3000,
    adaptive_loss_weights=False,
    label_smoothing=False,
    huber_loss=False,
)
ENHANCED = dict(
    lr=5e-5,
    mel_weight=2.5,
    kl_weight=1.0,
    grad_clip=1.0,
    weight_decay=1e-6,
    warmup_steps=2000,
    adaptive_loss_weights=True,
    label_smoothing=True,
    huber_loss=True,
)
FULL = SpaceSpec(warmup_max=4000, warmup_step=50, warmup_scale=1.0)
QUICK = SpaceSpec(warmup_max=200, warmup_step=10, warmup_scale=0.05)


def test_suggest_returns_every_knob_inside_its_range() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        overrides = suggest(trial, QUICK)
        assert tuple(overrides) == PARAM_NAMES
        for name, (low, high) in LOG_FLOATS.items():
            assert low <= overrides[name] <= high
        assert 0 <= overrides["warmup_steps"] <= 200 and overrides["warmup_steps"] % 10 == 0
        assert all(
            isinstance(overrides[k], bool) for k in ("adaptive_loss_weights", "label_smoothing", "huber_loss")
        )
        study.tell(trial, 1.0)


def test_lr_range_reaches_past_the_edge_of_stability() -> None:
    # A post-norm prototype collapsed at lr 1e-2 without warmup: the range must go beyond it.
    assert LOG_FLOATS["lr"][1] >= 1e-1


# Screens of the quick study in the "prior" form, one per alignment weight
# (bench/bench_alignment_weight_sweep.py; docs/measurements.md, "The alignment weight's range"):
# (lr, mel weight) -> (the highest weight that screened unaligned, the lowest that aligned).
ALIGNMENT_EDGE = {
    (5e-4, 1.0): (0.02, 0.05),
    (5e-4, 8.2): (0.1, 0.2),
    (5e-4, 25.0): (0.2, 0.4),
    (1e-4, 8.2): (0.4, 0.8),
}
MEL_SUFFERS_AT = 1.6  # at lr 5e-4, mel weight 1: val mel +27% on its best weight's


def test_alignment_weight_range_covers_both_sides_of_its_edge() -> None:
    low, high = LOG_FLOATS["kl_weight"]
    for lr, mel in ALIGNMENT_EDGE:
        assert LOG_FLOATS["lr"][0] <= lr <= LOG_FLOATS["lr"][1]
        assert LOG_FLOATS["mel_weight"][0] <= mel <= LOG_FLOATS["mel_weight"][1]
    # Where the mel weight is high or the lr lower, the edge lies inside: both sides are sampled.
    for recipe in ((5e-4, 8.2), (5e-4, 25.0), (1e-4, 8.2)):
        unaligned, aligned = ALIGNMENT_EDGE[recipe]
        assert low <= unaligned and aligned <= high, recipe
    # ...but the low end is not far below it: within a factor 3 of the top mel weight's unaligned one.
    assert low >= ALIGNMENT_EDGE[(5e-4, 25.0)][0] / 3
    # The high end reaches where the mel pays for the alignment loss, and holds the presets (below).
    assert high >= MEL_SUFFERS_AT


@pytest.mark.parametrize("spec", [FULL, QUICK])
@pytest.mark.parametrize("preset", [BASIC, ENHANCED])
def test_enqueued_presets_land_inside_the_distributions(spec: SpaceSpec, preset: dict) -> None:
    params = preset_params(preset, spec)
    dists = distributions(spec)
    for name, value in params.items():
        assert dists[name]._contains(dists[name].to_internal_repr(value)), name
    # Optuna keeps an enqueued value only if it is inside the distribution; check it is used as is.
    study = optuna.create_study()
    study.enqueue_trial(params)
    trial = study.ask()
    assert suggest(trial, spec) == params_to_overrides(params)
    assert trial.params == params


def test_warmup_scales_proportionally() -> None:
    assert preset_params(BASIC, QUICK)["warmup_steps"] == 150
    assert preset_params(ENHANCED, QUICK)["warmup_steps"] == 100
    assert preset_params(BASIC, FULL)["warmup_steps"] == 3000
    assert export_overrides(preset_params(BASIC, QUICK), QUICK)["warmup_steps"] == 3000


def test_preset_outside_the_space_is_refused() -> None:
    with pytest.raises(ValueError, match="lr"):
        preset_params({**BASIC, "lr": 1.0}, FULL)
    with pytest.raises(ValueError, match="lacks huber_loss"):
        preset_params({k: v for k, v in BASIC.items() if k != "huber_loss"}, FULL)


def test_params_to_overrides_coerces_storage_types() -> None:
    params = {**preset_params(BASIC, QUICK), "warmup_steps": 150.0}
    overrides = params_to_overrides(params)
    assert overrides["warmup_steps"] == 150 and isinstance(overrides["warmup_steps"], int)
    with pytest.raises(ValueError, match="lack lr"):
        params_to_overrides({k: v for k, v in params.items() if k != "lr"})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(warmup_max=0), "warmup_max"),
        (dict(warmup_max=100, warmup_step=0), "warmup_step"),
        (dict(warmup_max=100, warmup_step=30), "multiple"),
        (dict(warmup_scale=0.0), "warmup_scale"),
        (dict(warmup_scale=2.0), "warmup_scale"),
    ],
)
def test_space_spec_checks_its_fields(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SpaceSpec(**kwargs)


def test_space_spec_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        QUICK.warmup_max = 5  # type: ignore[misc]


def test_trainer_presets_fit_the_space() -> None:
    """Once the trainer's presets exist, they (not just SEED.md's numbers) must fit the space."""
    config = pytest.importorskip("trainer.config")
    presets = pytest.importorskip("trainer.presets")
    for name in ("basic", "enhanced"):
        values = config.config_to_dict(presets.preset(name))
        for spec in (FULL, QUICK):
            preset_params(values, spec)
