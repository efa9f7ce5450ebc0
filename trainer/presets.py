"""Named optimisation levels from the seed, and preset files (JSON of TrainConfig fields).

Presets are plain data, overrides over the TrainConfig defaults, so two levels diff at a glance.
Precision is not part of a level: the seed kept fp16 mixed precision on in every level (including
`basic`); here it is a separate knob that defaults to fp32 for all of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

from trainer.config import ConfigError, TrainConfig, apply_overrides, config_to_dict

PRESETS = MappingProxyType(
    {
        # The seed's fix for a loss that turned NaN after 2-5 epochs.
        "basic": MappingProxyType(
            {
                "lr": 1e-5,
                "mel_weight": 1.0,
                "kl_weight": 0.5,
                "grad_clip": 0.5,
                "weight_decay": 1e-7,
                "warmup_steps": 3000,
                "adaptive_loss_weights": False,
                "label_smoothing": False,
                "huber_loss": False,
            }
        ),
        # The level that diverged before the fix.
        "enhanced": MappingProxyType(
            {
                "lr": 5e-5,
                "mel_weight": 2.5,
                "kl_weight": 1.0,
                "grad_clip": 1.0,
                "weight_decay": 1e-6,
                "warmup_steps": 2000,
                "adaptive_loss_weights": True,
                "label_smoothing": True,
                "huber_loss": True,
            }
        ),
        # The seed names only the six numbers below for this level; the three switches are assumed on,
        # as in `enhanced` (it sits above `enhanced` in the seed's ordering).
        "experimental": MappingProxyType(
            {
                "lr": 8e-5,
                "mel_weight": 22.0,
                "kl_weight": 1.8,
                "grad_clip": 0.8,
                "weight_decay": 5e-7,
                "warmup_steps": 1500,
                "adaptive_loss_weights": True,
                "label_smoothing": True,
                "huber_loss": True,
            }
        ),
    }
)


def preset(name: str) -> TrainConfig:
    """The TrainConfig of a named level."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known levels: {', '.join(PRESETS)}")
    return apply_overrides(TrainConfig(), PRESETS[name], where=f"preset {name!r}")


def load_preset_file(path: str | Path, base: TrainConfig) -> tuple[TrainConfig, dict[str, Any] | None]:
    """Apply a preset file on top of `base`; return the config and its "provenance" block (or None).

    The file is JSON of TrainConfig fields (guards as a nested object), any subset of them, plus an
    optional free-form "provenance" object (study, trial, value, date, data fingerprint...).
    """
    where = f"preset {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: file not found; give the path of a preset JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read it ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: top level must be a JSON object of config fields, got {type(data).__name__}"
        )
    provenance = data.pop("provenance", None)
    if provenance is not None and not isinstance(provenance, dict):
        raise ConfigError(f"{where}: field 'provenance' must be an object, got {type(provenance).__name__}")
    return apply_overrides(base, data, where=where), provenance


def preset_to_json(cfg: TrainConfig, provenance: dict[str, Any] | None = None) -> str:
    """A preset file holding every field of `cfg`; `load_preset_file` reads it back to an equal config."""
    data = config_to_dict(cfg)
    if provenance is not None:
        data["provenance"] = provenance
    return json.dumps(data, indent=2) + "\n"
