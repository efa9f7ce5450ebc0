from __future__ import annotations

import dataclasses
import json
import re

import pytest

from common.errors import UserError
from trainer.config import (
    ConfigError,
    GuardConfig,
    TrainConfig,
    apply_overrides,
    config_to_dict,
    model_sizes,
    with_overrides,
)
from trainer.presets import PRESETS, load_preset_file, preset, preset_to_json

SEED_TABLE = {
    # knob: (enhanced, basic), from the seed's table
    "lr": (5e-5, 1e-5),
    "mel_weight": (2.5, 1.0),
    "kl_weight": (1.0, 0.5),
    "grad_clip": (1.0, 0.5),
    "weight_decay": (1e-6, 1e-7),
    "warmup_steps": (2000, 3000),
    "adaptive_loss_weights": (True, False),
    "label_smoothing": (True, False),
    "huber_loss": (True, False),
}


def test_defaults_build_and_are_frozen():
    cfg = TrainConfig()
    assert cfg.precision == "fp32" and cfg.checkpoint_every == 1000 and cfg.scheduler == "noam"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        TrainConfig(1e-5)  # type: ignore[misc]  # keyword-only


def test_config_error_is_a_user_error():
    assert issubclass(ConfigError, UserError)


@pytest.mark.parametrize("knob", list(SEED_TABLE))
def test_presets_hold_the_seeds_values(knob):
    enhanced, basic = SEED_TABLE[knob]
    assert getattr(preset("basic"), knob) == basic
    assert getattr(preset("enhanced"), knob) == enhanced


def test_experimental_preset():
    cfg = preset("experimental")
    assert (cfg.lr, cfg.warmup_steps, cfg.weight_decay, cfg.grad_clip) == (8e-5, 1500, 5e-7, 0.8)
    assert (cfg.mel_weight, cfg.kl_weight) == (22.0, 1.8)
    assert cfg.adaptive_loss_weights and cfg.label_smoothing and cfg.huber_loss


def test_every_preset_is_fp32_and_diffable_plain_data():
    for name, overrides in PRESETS.items():
        assert preset(name).precision == "fp32"
        assert json.loads(json.dumps(dict(overrides))) == dict(overrides)
    assert TrainConfig() == preset("basic")  # the defaults are the seed's fix


def test_presets_cannot_be_mutated():
    with pytest.raises(TypeError):
        PRESETS["basic"]["lr"] = 1.0  # type: ignore[index]


def test_unknown_preset_lists_levels():
    with pytest.raises(ConfigError, match="basic, enhanced, experimental"):
        preset("turbo")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": -1.0}, "field 'lr' must be > 0 and <= 1, got -1.0"),
        ({"lr": 0.0}, "field 'lr' must be > 0"),
        ({"lr": float("nan")}, "field 'lr' must be a finite number"),
        ({"grad_clip": -0.1}, "field 'grad_clip' must be >= 0"),
        ({"warmup_steps": -1}, "field 'warmup_steps' must be >= 0"),
        ({"kl_weight": -0.5}, "field 'kl_weight' must be >= 0"),
        ({"mel_weight": 0.0}, "field 'mel_weight' must be > 0"),
        ({"scheduler": "linear"}, "field 'scheduler' must be one of 'noam', 'cosine', 'constant'"),
        ({"precision": "fp8"}, "field 'precision' must be one of 'fp32', 'bf16', 'fp16'"),
        ({"alignment_loss": "ctc"}, "field 'alignment_loss'"),
        ({"prior_scaling": 0.0}, "field 'prior_scaling' must be > 0 and <= 100"),
        ({"prior_anneal_start": -1}, "field 'prior_anneal_start' must be >= 0"),
        ({"prior_anneal_end": 100}, "field 'prior_anneal_end' must be >= 250, got 100"),  # before the start
        ({"forward_sum_weight": -0.1}, "field 'forward_sum_weight' must be >= 0"),
        ({"norm": "mid"}, "field 'norm'"),
        ({"model_size": "huge"}, "field 'model_size' must be one of"),
        ({"batch_size": 0}, "field 'batch_size' must be >= 1"),
        ({"recovery_lr_factor": 1.0}, "field 'recovery_lr_factor' must be > 0 and < 1"),
        ({"adaptive_momentum": 1.0}, "field 'adaptive_momentum'"),
        ({"lr": True}, "field 'lr' must be a number, got True"),
        ({"warmup_steps": 2.5}, "field 'warmup_steps' must be an integer, got 2.5"),
        ({"huber_loss": 1}, "field 'huber_loss' must be true or false"),
        ({"guards": 5}, "field 'guards' must be a GuardConfig"),
    ],
)
def test_bad_values_fail_at_construction_naming_field_and_range(changes, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        TrainConfig(**changes)


def test_model_sizes_are_the_models():
    sizes = model_sizes()
    assert {"tiny", "normal"} <= sizes
    for size in sizes:
        assert TrainConfig(model_size=size).model_size == size


def test_guard_config_checks():
    with pytest.raises(ConfigError, match="field 'explosion_factor' must be > 1"):
        GuardConfig(explosion_factor=0.5)
    with pytest.raises(ConfigError, match="field 'spike_alpha' must be > 0 and < 1"):
        GuardConfig(spike_alpha=1.0)


def test_ints_given_for_floats_are_stored_as_floats():
    cfg = TrainConfig(mel_weight=25)
    assert isinstance(cfg.mel_weight, float) and cfg.mel_weight == 25.0


def test_apply_overrides_coerces_json_numbers_and_names_where():
    cfg = apply_overrides(preset("basic"), {"warmup_steps": 1000.0, "lr": 1}, where="trial 3")
    assert cfg.warmup_steps == 1000 and isinstance(cfg.warmup_steps, int) and cfg.lr == 1.0
    with pytest.raises(ConfigError, match=r"^trial 3: field 'lr' must be a number, got 'fast'$"):
        apply_overrides(cfg, {"lr": "fast"}, where="trial 3")
    with pytest.raises(ConfigError, match=r"^trial 3: unknown field 'lrr' \(did you mean 'lr'\?\)$"):
        apply_overrides(cfg, {"lrr": 1e-3}, where="trial 3")


def test_apply_overrides_nested_guards():
    base = preset("basic")
    cfg = apply_overrides(base, {"guards": {"spike_z": 8.0}}, where="x")
    assert cfg.guards.spike_z == 8.0 and cfg.guards.explosion_factor == base.guards.explosion_factor
    with pytest.raises(ConfigError, match=r"^x: field 'guards.spike_z' must be > 0, got -1.0$"):
        apply_overrides(base, {"guards": {"spike_z": -1.0}}, where="x")
    with pytest.raises(
        ConfigError, match=r"^x: unknown field 'guards.spike' \(did you mean 'guards.spike_z'"
    ):
        apply_overrides(base, {"guards": {"spike": 1.0}}, where="x")
    replaced = apply_overrides(base, {"guards": GuardConfig(mel_ceiling=20.0)}, where="x")
    assert replaced.guards.mel_ceiling == 20.0


def test_with_overrides_and_original_untouched():
    base = preset("basic")
    cfg = with_overrides(base, lr=3e-4, scheduler="cosine")
    assert (cfg.lr, cfg.scheduler, base.lr) == (3e-4, "cosine", 1e-5)


def test_config_to_dict_is_json_safe_with_nested_guards():
    data = config_to_dict(preset("enhanced"))
    assert isinstance(data["guards"], dict) and data["guards"]["mel_ceiling"] == 10.0
    assert json.loads(json.dumps(data)) == data


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_json_round_trips(tmp_path, name):
    cfg = with_overrides(preset(name), guards=GuardConfig(spike_z=7.5), precision="bf16")
    provenance = {"study": "stability", "trial": 12, "value": 0.81, "date": "2025-01-01", "data": "ab12"}
    path = tmp_path / "p.json"
    path.write_text(preset_to_json(cfg, provenance))
    loaded, prov = load_preset_file(path, TrainConfig())
    assert loaded == cfg and prov == provenance
    path.write_text(preset_to_json(cfg))
    assert load_preset_file(path, TrainConfig()) == (cfg, None)


def test_preset_file_is_applied_over_the_base(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"lr": 2e-4, "guards": {"mel_ceiling": 12}}')
    cfg, prov = load_preset_file(path, preset("enhanced"))
    assert cfg.lr == 2e-4 and cfg.mel_weight == 2.5 and cfg.guards.mel_ceiling == 12.0 and prov is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"lr": -1.0}', "field 'lr' must be > 0 and <= 1, got -1.0"),
        ('{"lr": "fast"}', "field 'lr' must be a number, got 'fast'"),
        ('{"lr": true}', "field 'lr' must be a number, got True"),
        ('{"warmup_steps": 10.5}', "field 'warmup_steps' must be an integer, got 10.5"),
        ('{"grad_clip": -1}', "field 'grad_clip' must be >= 0, got -1.0"),
        ('{"scheduler": "step"}', "field 'scheduler' must be one of"),
        ('{"precision": "fp64"}', "field 'precision' must be one of"),
        ('{"mel_wieght": 2.0}', "unknown field 'mel_wieght' (did you mean 'mel_weight'?)"),
        ('{"guards": {"spike_z": "high"}}', "field 'guards.spike_z' must be a number"),
        ('{"provenance": [1]}', "field 'provenance' must be an object"),
        ('{"lr": 1e-4,\n "mel_weight": }', "not valid JSON at line 2 column"),
        ("[1, 2]", "top level must be a JSON object"),
    ],
)
def test_bad_preset_files_fail_with_one_line_naming_file_and_field(tmp_path, text, message):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_preset_file(path, TrainConfig())
    assert str(info.value).startswith(f"preset {path}: {message}")
    assert "\n" not in str(info.value)


def test_missing_preset_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_preset_file(tmp_path / "nope.json", TrainConfig())
