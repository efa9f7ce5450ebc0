"""Seed a study with the presets it judges ("basic", the pre-fix "enhanced"), once per study.

Every study must give the presets a verdict, so they run as enqueued trials, tagged with the user
attr ``preset=<name>``. The tag, not the params, marks a preset as seeded: a sampled trial that
happens to match a preset does not count, and a preset trial re-queued after a crash keeps its tag.

Race: two workers starting at the same moment may both see no tagged trial and both enqueue, so
a preset can run twice. Optuna's storage offers no compare-and-set for this, and a duplicate costs
one trial and harms nothing: reports group trials by the tag and see both runs.
"""

from __future__ import annotations

from typing import Any

import optuna

from common.errors import UserError
from space import SearchSpace
from studies.record import load_records
from studies.record_keys import PRESET, TRAINER_FAILED


def seeded_presets(study: optuna.Study) -> set[str]:
    """Names of presets already enqueued or run in the study (any state but one: a preset the user's
    trainer crashed on is not re-queued within a search, so it is seeded afresh by the next one, which
    judges it once the trainer is fixed)."""
    return {r.preset for r in load_records(study) if r.preset is not None and r.failed_by != TRAINER_FAILED}


def enqueue_presets(study: optuna.Study, presets: dict[str, dict[str, Any]], spec: SearchSpace) -> list[str]:
    """Enqueue each preset not yet in the study; return the names enqueued by this call.

    ``presets`` maps a name to its TrainConfig fields (at least the space's knobs); the warmup is
    scaled into the study's range by ``spec``. Idempotent across re-runs.
    """
    params_by_name: dict[str, dict[str, Any]] = {}
    for name, values in presets.items():
        try:
            params_by_name[name] = spec.preset_params(values)
        except ValueError as e:
            raise UserError(f"preset {name!r} cannot be judged by this study: {e}") from None
    enqueued: list[str] = []
    for name, params in params_by_name.items():
        # Re-read before each enqueue: keeps the window for a concurrent duplicate small.
        if name in seeded_presets(study):
            continue
        study.enqueue_trial(params, user_attrs={PRESET: name})
        enqueued.append(name)
    return enqueued
