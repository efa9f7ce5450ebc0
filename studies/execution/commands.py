"""The evidence commands on an existing study: --lr-probe, --validate, --margin, --transfer-check, --report,
--export-preset, --train-best.

``search.py`` checks the flags; this module opens the study (one line if there is none) and runs
them in a fixed order: probe, validation, margin, transfer check, then the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from common.console import make_console
from common.device import resolve_device
from common.errors import UserError
from studies import ranking
from studies.evidence import fp16, margin, seed_answer, seed_form, tables
from studies.evidence.conclusions import marked_trials
from studies.evidence.export import export_best, export_foreign
from studies.evidence.margin import MAX_MULTIPLIER
from studies.evidence.report import write_report
from studies.evidence.transfer_plan import MIN_TRIALS
from studies.evidence.transfer_text import lines as transfer_lines
from studies.evidence.validate import resolve
from studies.execution.cores import counts
from studies.execution.launch import note_other_data, open_existing, threads_per_worker
from studies.execution.long_runs import run_probe, run_transfer, run_validation
from studies.execution.margin_runs import run_margin
from studies.execution.runs import RunSetup, SetupSpec, load_data
from studies.foreign import AnyStudy, ForeignStudy
from studies.paths import StudyPaths
from studies.record import load_records, preset_trials
from studies.record_keys import COMMAND
from studies.registry import StudyDef
from trainer.cli import main as train_main


@dataclass(frozen=True, kw_only=True, slots=True)
class EvidenceRun:
    """One evidence command, checked."""

    study: AnyStudy
    url: str
    runs_dir: Path
    report: bool = False
    lr_probe: bool = False
    validate: tuple[str, ...] = ()
    margin: tuple[str, ...] = ()  # recipes whose lr margin to the edge is stepped out
    margin_max: float = MAX_MULTIPLIER  # the largest lr multiplier the margin tries
    transfer_check: int | None = None  # K trials re-run long
    workers: int = (
        1  # the transfer check's long runs (the margin's recipes) at a time, each in its own process
    )
    seeds: int = 3
    steps: int | None = None
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    train_data: Path | None = None
    val_data: Path | None = None

    @property
    def paths(self) -> StudyPaths:
        return StudyPaths(self.runs_dir, self.study.name)


def run_evidence(run: EvidenceRun) -> int:
    console = make_console(stderr=True)
    out = make_console()
    study = open_existing(run.study, run.url)
    if run.report and counts(study).finished == 0:
        raise UserError(f"study {run.study.name!r} has no finished trial yet: nothing to report")
    if run.lr_probe or run.validate or run.margin or run.transfer_check:
        for name in (*run.validate, *run.margin):
            resolve(study, run.study, name)  # "best" needs a feasible trial: fail before loading data
        if run.transfer_check and len(ranking.ranked(load_records(study))) < MIN_TRIALS:
            raise UserError(
                f"--transfer-check: study {run.study.name!r} has fewer than {MIN_TRIALS} finished trials; "
                "run more trials first"
            )
        if run.threads is not None:
            torch.set_num_threads(run.threads)
        data = load_data(run.train_data, run.val_data, console)
        note_other_data(study, data.fingerprint, console)
        device = resolve_device(run.device)
        setup = RunSetup(run.study, data, device, run.paths, run.seed)
        if run.lr_probe:
            run_probe(study, setup, steps=run.steps, console=console)
        if run.validate:
            results = run_validation(
                study,
                setup,
                run.validate,
                seeds=run.seeds,
                steps=run.steps,
                base_seed=run.seed,
                console=console,
            )
            out.print(tables.to_rich(tables.validation(results)))
        spec = SetupSpec(
            study=run.study,
            train_data=run.train_data,
            val_data=run.val_data,
            device=device,
            paths=run.paths,
            seed=run.seed,
        )
        if run.margin:
            margins = run_margin(
                study,
                setup,
                run.margin,
                steps=run.steps,
                console=console,
                max_multiplier=run.margin_max,
                workers=run.workers,
                spec=spec,
                threads_each=threads_per_worker(run.threads, run.workers),
            )
            out.print(tables.to_rich(tables.margin(margins)))
            for line in seed_lines(study, run.study, run.paths):
                out.print(line, soft_wrap=True)
        if run.transfer_check:
            check = run_transfer(
                study,
                setup,
                k=run.transfer_check,
                steps=run.steps,
                console=console,
                workers=run.workers,
                spec=spec,
                threads_each=threads_per_worker(run.threads, run.workers),
            )
            out.print(tables.to_rich(tables.transfer(check)))
            for line in transfer_lines(check):
                out.print(line, soft_wrap=True)
    if run.report:
        console.print(f"report: {write_report(study, run.study, run.paths)}")
    return 0


def seed_lines(study: optuna.Study, study_def: StudyDef, paths: StudyPaths) -> list[str]:
    """The report's first lines (the seed's question) for the terminal, from what the study holds now."""
    records = load_records(study)
    tele = paths.telemetry if paths.telemetry.exists() else None
    margins = margin.stored(study)
    curves = fp16.curves(study_def.name, marked_trials(records), margins, tele)
    found = seed_answer.facts(preset_trials(records, seed_answer.PRESETS), margins, curves)
    return seed_answer.lines(found, seed_form.stored(study))


def export_or_train(
    study_def: StudyDef, url: str, runs_dir: Path, path: Path | None, train: Sequence[str] | None
) -> int:
    """Export the best feasible trial to ``path``; with ``train`` (the trainer's flags), train with it."""
    study = open_existing(study_def, url)
    paths = StudyPaths(runs_dir, study_def.name)
    path = path or paths.best_preset
    export_best(study, study_def, path)
    make_console(stderr=True).print(f"exported the best trial of {study_def.name} to {path}")
    if train is None:
        return 0
    out = ["--out", str(paths.train_best)] if "--out" not in train else []
    return train_main(["--preset", str(path), *out, *train])


def export_foreign_best(study_def: ForeignStudy, url: str, runs_dir: Path, path: Path) -> int:
    """Export the best feasible trial of a study of the user's trainer, in the user's format."""
    study = open_existing(study_def, url)
    template = study_def.command.template if study_def.command else study.user_attrs.get(COMMAND)
    run_dir = StudyPaths(runs_dir, study_def.name).dir / "best"
    written, command = export_foreign(study, study_def, path, template=template, run_dir=run_dir)
    console = make_console(stderr=True)
    console.print(f"exported the best trial of {study_def.name} to {written}", soft_wrap=True)
    if command is not None:
        console.print(f"run it: {command}", soft_wrap=True, markup=False, highlight=False)
    return 0
