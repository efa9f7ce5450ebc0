"""The edge of stability in one run: an lr range test (fastai's lr_find) that stops on divergence.

One run of the study's model with `basic`'s other knobs, whose lr rises exponentially from 1e-7 each
step, until a divergence guard fires (the same guards and the same judge as every trial) or the lr
passes 10 (``studies.execution.long_runs.run_probe``). The lr at which it diverged is a cheap first
estimate of the boundary a whole study maps, and the report draws it on the stability map next to the
boundary the study found. The loss curve is kept in the telemetry under ``<study>/lr-probe``; the
typed result below is the study's user attribute ``lr_probe``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import optuna

from studies.registry import StudyDef
from trainer.diagnosis import Diagnosis

ATTR = "lr_probe"
START_LR, END_LR = 1e-7, 10.0
MAX_DEFAULT_STEPS = 1000
SMOOTHING = 0.05  # fastai's beta 0.98 is for hundreds of steps; a short probe needs less memory


def default_steps(study: StudyDef) -> int:
    """As long as the study's longest trial (capped): the guards' minimum steps fit inside it."""
    return min(study.space.warmup_max + study.horizon, MAX_DEFAULT_STEPS)


def probe_lr(step: int, steps: int) -> float:
    """START_LR at step 1, END_LR at step `steps`, geometric in between."""
    return START_LR * (END_LR / START_LR) ** ((step - 1) / max(steps - 1, 1))


@dataclass(frozen=True, kw_only=True, slots=True)
class ProbeResult:
    """Where the range test diverged (if it did), and the recipe it ran."""

    steps: int
    steps_run: int
    start_lr: float
    end_lr: float
    diverged: bool
    verdict: str | None  # the guard's kind
    divergence_step: int | None
    divergence_lr: float | None
    detail: str | None
    min_loss_lr: float | None
    grad_clip: float
    mel_weight: float
    kl_weight: float
    date: str = ""
    # why it diverged (trainer/diagnosis.py): the probe's lr rises until training breaks, so on a sound
    # trainer this names the lr edge, a positive control on the study's own data
    diagnosis: Diagnosis | None = None

    def to_attr(self) -> dict[str, Any]:
        found = asdict(self)
        found["diagnosis"] = None if self.diagnosis is None else self.diagnosis.to_attr()
        return found

    @classmethod
    def from_attr(cls, d: Mapping[str, Any]) -> ProbeResult:
        values = {name: d.get(name) for name in cls.__dataclass_fields__}
        raw = values.pop("diagnosis")
        diagnosis = Diagnosis.from_attr(raw) if isinstance(raw, dict) else None
        return cls(**{**values, "date": str(d.get("date", "")), "diagnosis": diagnosis})


def store(study: optuna.Study, probe: ProbeResult) -> None:
    study.set_user_attr(ATTR, probe.to_attr())


def stored(study: optuna.Study) -> ProbeResult | None:
    found = study.user_attrs.get(ATTR)
    return ProbeResult.from_attr(found) if isinstance(found, dict) else None


def min_loss_lr(lrs: list[float], losses: list[float]) -> float | None:
    """The lr at the lowest exponentially smoothed (bias-corrected) loss, fastai's classic marker;
    a good peak lr is usually several times below it, and the divergence lr above it."""
    best: tuple[float, float] | None = None
    avg = 0.0
    n = 0
    for lr, loss in zip(lrs, losses, strict=True):
        if not math.isfinite(loss):
            break
        n += 1
        avg = (1 - SMOOTHING) * avg + SMOOTHING * loss
        smooth = avg / (1 - (1 - SMOOTHING) ** n)
        if best is None or smooth < best[0]:
            best = (smooth, lr)
    return best[1] if best is not None else None
