"""Export the best feasible trial: a preset file `python -m trainer --preset FILE` accepts, or, for a study
of the user's trainer, the chosen params in the user's own format (their config, their command line)."""

from __future__ import annotations

import datetime as dt
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna

from common.errors import UserError
from studies import ranking
from studies.binding import BASE_LEVEL, form_overrides
from studies.command import runnable_argv
from studies.evidence import margin
from studies.evidence.export_forms import DATA_SUFFIXES, SCRIPT_SUFFIX, write_data, write_script
from studies.evidence.rung_agreement import rung_agreement
from studies.foreign import ForeignStudy
from studies.record import load_records
from studies.record_keys import COMMAND_CWD, DATA_FINGERPRINT
from studies.registry import StudyDef
from trainer.config import TrainConfig, apply_overrides
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
        records = load_records(study)
        agreement = rung_agreement(records)
        # Twice the study's trials (its continuations folded in), and at least one more promotion's worth.
        rung = study_def.speech_rung
        more = max(2 * len(records), rung.eta * (agreement.promoted + 1))
        raise UserError(
            f"study {study.study_name!r}: no trial speaks at the long rung ({agreement.promoted} promoted, "
            f"{agreement.reached} finished it); nothing exported: run more trials (--trials {more} goes on "
            f"from here, up to {rung.most_promoted(more)} promoted)"
        )
    if path.exists() and path.is_dir():
        raise UserError(f"--export-preset {path}: is a folder; give a file path like best.json")
    if not path.parent.exists():
        raise UserError(f"--export-preset {path}: folder {path.parent} does not exist")
    cfg = exported_config(study_def, best.params, where=f"trial {best.number}")
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


def exported_config(study_def: StudyDef, params: Mapping[str, Any], *, where: str) -> TrainConfig:
    """The config of the full training a trial's params export to, as the preset file holds it (also
    what bench/speech_verdict_flicker.py trains a recipe as, one the export refused among them)."""
    # The study's short-trial settings (batch, eval spacing, guards' step minimums) stay behind: a full
    # training judges itself on the trainer's own thresholds.
    overrides = form_overrides(study_def, study_def.space.export_overrides(dict(params)))
    # The full training aligns in the form the trials were judged in (StudyDef.alignment_loss).
    overrides.update(
        {
            "model_size": study_def.model_size,
            "reduction_factor": study_def.reduction_factor,
            "precision": study_def.precision,
            "alignment_loss": study_def.alignment_loss,
            **dict(study_def.form_settings),
        }
    )
    return apply_overrides(preset(BASE_LEVEL), overrides, where=where)


def export_foreign(
    study: optuna.Study, study_def: ForeignStudy, path: Path, *, template: str | None, run_dir: Path
) -> tuple[Path, str | None]:
    """The best feasible trial in the form ``path``'s extension names: ``.json``, ``.toml`` or ``.yaml``
    the params by name (with config keys: the user's config, the values at their keys); ``.sh`` a script
    that runs the user's command with them from any folder. Returns the file and, in one line, how to
    run it. An unknown extension, or a script of an in-process study (it has no command), is one line
    and nothing written."""
    suffix = path.suffix.lower()
    if suffix not in (*DATA_SUFFIXES, SCRIPT_SUFFIX):
        raise UserError(
            f"--export-preset {path}: {f'unknown extension {suffix!r}' if suffix else 'no extension'}; give "
            ".json, .toml or .yaml (the params by name) or .sh (a script that runs your trainer)"
        )
    if suffix == SCRIPT_SUFFIX and template is None:
        raise UserError(
            f"--export-preset {path}: an in-process study has no command line to script; give a .json or "
            ".toml file (the params by name, as your function gets them)"
        )
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
    # In process, your function gets every value by its name; config keys are for a command's config.
    config = study_def.config if keyed and template is not None else None
    data = config.filled(keyed) if config is not None else params
    if suffix != SCRIPT_SUFFIX:
        write_data(path, data)
        if template is None:
            return path, f"your train(params, reporter), with params read from {path.resolve()}"
        if config is not None and not _same_format(suffix, config.suffix):
            return path, f"(your config as {suffix}; your command reads {config.suffix}: export that, or .sh)"
        values = _values(params, best.number, run_dir, config_file=path)
        return path, shlex.join(token.format_map(values) for token in shlex.split(template))
    # The script: the search's folder resolves the command's paths (an older study: this folder).
    config_file = path.with_suffix(config.suffix) if config is not None else None
    if config_file is not None:
        write_data(config_file, data)
    cwd = Path(study.user_attrs.get(COMMAND_CWD) or Path.cwd())
    argv = runnable_argv(template, _values(params, best.number, run_dir, config_file=config_file), cwd)
    write_script(
        path, argv, f"study {study.study_name}, trial {best.number}: {study_def.metric} {best.value:.6g}"
    )
    also = f" (its config: {config_file.resolve()})" if config_file is not None else ""
    return path, f"sh {path.resolve()}{also}; arguments after it go to your trainer, e.g. --steps 20000"


def _same_format(a: str, b: str) -> bool:
    return a == b or {a, b} <= {".yaml", ".yml"}


def _values(params: dict, trial: int, run_dir: Path, *, config_file: Path | None) -> dict:
    """The template's fields for the exported run (``{seed}`` 0: a fresh run, not a trial's copy)."""
    config = str(config_file.resolve()) if config_file is not None else ""
    return {**params, "trial": trial, "seed": 0, "run_dir": str(run_dir.resolve()), "config": config}
