"""Export the best feasible trial: a preset file `python -m trainer --preset FILE` accepts, or, for a study
of the user's trainer, the chosen params in the user's own format (their config, their command line)."""

from __future__ import annotations

import datetime as dt
import json
import shlex
from pathlib import Path

import optuna

from common.errors import UserError
from studies import ranking
from studies.binding import BASE_LEVEL, form_overrides
from studies.evidence import margin
from studies.evidence.rung_agreement import rung_agreement
from studies.foreign import ForeignStudy
from studies.record import load_records
from studies.record_keys import DATA_FINGERPRINT
from studies.registry import StudyDef
from trainer.config import apply_overrides
from trainer.presets import preset, preset_to_json
from tts_model.cache import atomic_write_text


def export_best(study: optuna.Study, study_def: StudyDef, path: Path) -> Path:
    best = ranking.best(load_records(study))
    if best is None:
        raise UserError(
            f"study {study.study_name!r} has no feasible finished trial yet (none aligned and stopped its "
            "decode without diverging); run more trials before exporting"
        )
    if study_def.speech_rung is not None and not (best.speaks and best.rung == 1):
        agreement = rung_agreement(load_records(study))
        raise UserError(
            f"study {study.study_name!r}: no trial speaks at the long rung ({agreement.promoted} promoted, "
            f"{agreement.reached} finished it); nothing exported: run more trials"
        )
    if path.exists() and path.is_dir():
        raise UserError(f"--export-preset {path}: is a folder; give a file path like best.json")
    if not path.parent.exists():
        raise UserError(f"--export-preset {path}: folder {path.parent} does not exist")
    # The study's short-trial settings (batch, eval spacing, guards' step minimums) stay behind: a full
    # training judges itself on the trainer's own thresholds.
    overrides = form_overrides(study_def, study_def.space.export_overrides(dict(best.params)))
    # The full training aligns in the form the trials were judged in (StudyDef.alignment_loss).
    overrides.update(
        {
            "model_size": study_def.model_size,
            "precision": study_def.precision,
            "alignment_loss": study_def.alignment_loss,
        }
    )
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
        "speaks_at_step": best.last_step if best.speaks else None,
    }
    found = margin.stored(study).get(margin.BEST)
    if found is not None and found.trial == best.number:  # a margin of an older best says nothing of this one
        provenance["margin"] = found.provenance()
    atomic_write_text(path, preset_to_json(cfg, provenance))
    return path


def export_foreign(
    study: optuna.Study, study_def: ForeignStudy, path: Path, *, template: str | None, run_dir: Path
) -> tuple[Path, str | None]:
    """The best feasible trial in the user's own format: their config file with the params at their keys
    (when params have keys), else the filled command line as a script (a command-line study), else the
    params as JSON (an in-process study). Returns the file and the command line that runs it (if any)."""
    best = ranking.best(load_records(study))
    if best is None:
        raise UserError(
            f"study {study.study_name!r} has no feasible finished trial yet (every finished trial diverged, "
            "was pruned or did not align); run more trials before exporting"
        )
    if path.exists() and path.is_dir():
        raise UserError(f"--export-preset {path}: is a folder; give a file path")
    if not path.parent.exists():
        raise UserError(f"--export-preset {path}: folder {path.parent} does not exist")
    params = study_def.space.export_overrides(dict(best.params))
    keyed = {p.key: params[p.name] for p in study_def.space.params if p.key is not None}
    config = study_def.config
    if keyed and config is not None and path.suffix.lower() != config.suffix:
        raise UserError(
            f"--export-preset {path}: your config is {config.suffix}; give a {config.suffix} file"
        )
    command = None
    if template is not None:
        values = {**params, "trial": best.number, "seed": 0, "run_dir": str(run_dir), "config": str(path)}
        command = shlex.join(token.format_map(values) for token in shlex.split(template))
    if keyed and config is not None:
        config.write(path, keyed)
    elif command is not None:
        head = f"# study {study.study_name}, trial {best.number}: {study_def.metric} {best.value:.6g}"
        atomic_write_text(path, f"#!/bin/sh\n{head}\nexec {command}\n")
        path.chmod(0o755)
    else:
        atomic_write_text(path, json.dumps(params, indent=2) + "\n")
    return path, command
