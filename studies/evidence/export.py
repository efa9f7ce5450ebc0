"""Export the best feasible trial as a preset file `python -m trainer --preset FILE` accepts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import optuna

from common.errors import UserError
from studies.binding import BASE_LEVEL
from studies.evidence import margin
from studies.record import DATA_FINGERPRINT, best_feasible, load_records
from studies.registry import StudyDef
from trainer.config import apply_overrides
from trainer.presets import preset, preset_to_json
from tts_model.cache import atomic_write_text


def export_best(study: optuna.Study, study_def: StudyDef, path: Path) -> Path:
    best = best_feasible(load_records(study))
    if best is None:
        raise UserError(
            f"study {study.study_name!r} has no feasible finished trial yet (none aligned and stopped its "
            "decode without diverging); run more trials before exporting"
        )
    if path.exists() and path.is_dir():
        raise UserError(f"--export-preset {path}: is a folder; give a file path like best.json")
    if not path.parent.exists():
        raise UserError(f"--export-preset {path}: folder {path.parent} does not exist")
    # The study's short-trial settings (batch, eval spacing, guards' step minimums) stay behind: a full
    # training judges itself on the trainer's own thresholds.
    overrides = study_def.space.export_overrides(dict(best.params))
    overrides.update({"model_size": study_def.model_size, "precision": study_def.precision})
    # The full training aligns with its own loss (registry.py: KL searched short, guided speaks long).
    overrides["alignment_loss"] = study_def.full_alignment_loss
    cfg = apply_overrides(preset(BASE_LEVEL), overrides, where=f"trial {best.number}")
    provenance = {
        "study": study.study_name,
        "trial": best.number,
        "value": best.value,
        "objective": "validation mel L1 (teacher forced, postnet)",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data_fingerprint": study.user_attrs.get(DATA_FINGERPRINT),
        "warmup_in_study": int(best.params[study_def.space.warmup_param]),
        "warmup_scale": study_def.space.warmup_scale,
        "alignment_loss_in_study": study_def.alignment_loss,
    }
    found = margin.stored(study).get(margin.BEST)
    if found is not None and found.trial == best.number:  # a margin of an older best says nothing of this one
        provenance["margin"] = found.provenance()
    atomic_write_text(path, preset_to_json(cfg, provenance))
    return path
