"""`python search.py --study stability --trials 50`: find, with evidence, the settings that train stably.

A thin CLI: parse, check, dispatch. Running a study lives in ``studies.execution.launch``; the evidence about it
(report, probe, validation, export, train-best) in ``studies.execution.commands``. Everything a user can
get wrong is checked here, before a study is created or changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from common.cli import OneLineParser, run_cli
from common.errors import UserError
from studies.execution.seeds import SEED_LIMIT
from studies.registry import get_study, scaled
from studies.search_flags import build_parser
from tts_model.config import MODEL_SIZES

if TYPE_CHECKING:  # for the annotation only: the functions below import the launch where a search runs
    from studies.execution.launch import SearchRun


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not args.train_best:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if not 0 <= args.seed < SEED_LIMIT:
        raise UserError(f"--seed must be an integer from 0 to {SEED_LIMIT - 1}, got {args.seed}")
    # Checks first: a bad flag must leave no study created or changed.
    if args.space is not None:
        return _foreign(parser, args, rest)
    if args.command is not None:
        raise UserError("--command needs --space FILE: the space file names the params its {fields} take")
    study_def = get_study(args.study or "stability")
    if args.model_size is not None:
        if args.model_size not in MODEL_SIZES:
            raise UserError(
                f"--model-size {args.model_size!r}: unknown; known sizes: {', '.join(sorted(MODEL_SIZES))}"
            )
        study_def = dataclasses.replace(study_def, model_size=args.model_size)
    if args.check_data:  # before the device and folder checks: the audit names every problem, not the first
        return _check_data(args, study_def.model_size, study_def.reduction_factor)
    study_def = scaled(study_def, args.horizon_scale)
    trials = study_def.n_trials if args.trials is None else args.trials
    if trials <= 0:
        raise UserError(f"--trials must be > 0, got {trials}")
    if args.workers <= 0:
        raise UserError(f"--workers must be > 0, got {args.workers}")
    if args.threads is not None and args.threads <= 0:
        raise UserError(f"--threads must be > 0, got {args.threads}")
    if args.margin_max is not None and not args.margin:
        raise UserError("--margin-max: goes with --margin NAME... (the recipes to step out)")
    from studies.execution.storage import (  # optuna, SQLAlchemy: not for --help
        require_study_file,
        resolve_storage,
    )

    url = resolve_storage(args.storage, study_def.name, args.runs_dir)
    if args.report or args.export_preset is not None or args.train_best:  # they read a study: it must exist
        require_study_file(study_def.name, url)
    evidence = args.report or args.lr_probe or args.validate or args.margin or args.transfer_check is not None
    # The search trains, and so do the probe, validation, margin and transfer check; report and export do not,
    # and --train-best hands the device to the trainer's own CLI.
    trains = args.lr_probe or bool(args.validate) or bool(args.margin) or args.transfer_check is not None
    if trains or not (evidence or args.export_preset is not None or args.train_best):
        _check_device(study_def, args.device)
    for folder in (args.train_data, args.val_data):
        if folder is not None:
            _check_data_folder(folder)

    if evidence:
        if args.export_preset is not None or args.train_best:
            raise UserError(
                "--report, --lr-probe, --validate, --margin, --transfer-check: not with --export-preset or "
                "--train-best"
            )
        from studies.evidence import margin, transfer_plan
        from studies.evidence.validate import check_names
        from studies.execution.commands import EvidenceRun, run_evidence

        check_names(args.validate or [], args.seeds, args.steps)
        margin_max = margin.MAX_MULTIPLIER if args.margin_max is None else args.margin_max
        margin.check_names(args.margin or [], args.steps, margin_max)
        if args.transfer_check is not None:
            transfer_plan.check(study_def, args.transfer_check, args.steps)
        run = EvidenceRun(
            study=study_def,
            url=url,
            runs_dir=args.runs_dir,
            report=args.report,
            lr_probe=args.lr_probe,
            validate=tuple(args.validate or ()),
            margin=tuple(args.margin or ()),
            margin_max=margin_max,
            transfer_check=args.transfer_check,
            workers=args.workers,
            seeds=args.seeds,
            steps=args.steps,
            seed=args.seed,
            threads=args.threads,
            device=args.device,
            train_data=args.train_data,
            val_data=args.val_data,
        )
        return run_evidence(run)
    if args.export_preset is not None or args.train_best:
        from studies.execution.commands import export_or_train

        return export_or_train(
            study_def, url, args.runs_dir, args.export_preset, rest if args.train_best else None
        )

    from studies.execution.launch import SearchRun

    run = SearchRun(
        study=study_def,
        url=url,
        trials=trials,
        workers=args.workers,
        threads=args.threads,
        device=args.device,
        seed=args.seed,
        runs_dir=args.runs_dir,
        train_data=args.train_data,
        val_data=args.val_data,
        shared_storage=args.storage is not None,
        worker_index=args.worker_index,
    )
    return _search(run, _worker_argv(args, trials, args.study or "stability"))


def _search(run: SearchRun, worker_argv: list[str]) -> int:
    """Run the search; a database gone past the retry bound is one line and its own exit code, never a
    traceback."""
    from studies.execution.launch import run_search
    from studies.execution.resilience import EXIT_DB_UNAVAILABLE, DatabaseUnavailable

    try:
        return run_search(run, worker_argv)
    except DatabaseUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_DB_UNAVAILABLE


def _foreign(parser: OneLineParser, args: argparse.Namespace, rest: list[str]) -> int:
    """A study of the user's trainer (``--space``): search, report or export; the evidence commands
    that train the project's model (probe, validation, transfer check, train-best) are not for it."""
    from studies.foreign import load_foreign_study

    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    project_only = {
        "--model-size": args.model_size is not None,
        "--train-data": args.train_data is not None,
        "--val-data": args.val_data is not None,
        "--horizon-scale": args.horizon_scale != 1.0,
        "--lr-probe": args.lr_probe,
        "--transfer-check": args.transfer_check is not None,
        "--steps": args.steps is not None,  # your command sets its own length
        "--train-best": args.train_best,
        "--check-data": args.check_data,
    }
    given = [flag for flag, on in project_only.items() if on]
    if given:
        raise UserError(f"{given[0]} is for the project's trainer; a study with --space runs yours")
    name = args.study or args.space.stem
    evidence = bool(args.margin or args.validate)
    searching = not (args.report or args.export_preset is not None or evidence)
    if searching and args.command is None:
        raise UserError(
            f'--space {args.space}: give --command "..." (the command line a trial runs), or run your '
            "function in process with studies.execution.inprocess.run_study"
        )
    study_def = load_foreign_study(args.space, name=name, command=args.command)
    trials = study_def.n_trials if args.trials is None else args.trials
    if trials <= 0:
        raise UserError(f"--trials must be > 0, got {trials}")
    if args.workers <= 0:
        raise UserError(f"--workers must be > 0, got {args.workers}")
    from studies.execution.storage import (  # optuna, SQLAlchemy: not for --help
        require_study_file,
        resolve_storage,
    )

    url = resolve_storage(args.storage, study_def.name, args.runs_dir)
    if not searching:
        require_study_file(study_def.name, url)
    if evidence:
        return _foreign_evidence(args, study_def, url)
    if not searching:
        if args.report and args.export_preset is not None:
            raise UserError("--report and --export-preset: one at a time")
        from studies.execution.commands import EvidenceRun, export_foreign_best, run_evidence

        if args.export_preset is not None:
            return export_foreign_best(study_def, url, args.runs_dir, args.export_preset)
        return run_evidence(EvidenceRun(study=study_def, url=url, runs_dir=args.runs_dir, report=True))

    from studies.execution.launch import SearchRun

    run = SearchRun(
        study=study_def,
        url=url,
        trials=trials,
        workers=args.workers,
        threads=args.threads,
        seed=args.seed,
        runs_dir=args.runs_dir,
        shared_storage=args.storage is not None,
        worker_index=args.worker_index,
    )
    return _search(run, _worker_argv(args, trials, study_def.name))


def _check_data(args: argparse.Namespace, model_size: str, reduction_factor: int) -> int:
    """``--check-data``: audit the folders (or the embedded corpus) with the loader's settings and the
    reduction factor of the model the study trains; nothing else runs, nothing is written."""
    others = args.report or args.lr_probe or args.validate or args.margin or args.transfer_check is not None
    if others or args.export_preset is not None or args.train_best:
        raise UserError("--check-data: on its own, with --train-data/--val-data and --study or --model-size")
    from common.console import make_console
    from tts_model.config import model_config
    from tts_model.data_audit_report import check_data
    from tts_model.dataset import DataConfig

    folders = [f for f in (args.train_data, args.val_data) if f is not None]
    if not folders:
        from tts_model.corpus import ensure_corpus

        paths = ensure_corpus(console=make_console(stderr=True))
        folders = [paths.train, paths.eval]
    r = reduction_factor or model_config(model_size).reduction_factor  # the study's, else the size's own
    return check_data(folders, DataConfig(), r, make_console())


def _foreign_evidence(args: argparse.Namespace, study_def, url: str) -> int:
    """``--margin`` / ``--validate`` of your trainer's study: its command at lr x 2^k, or at other
    ``{seed}``s (studies/execution/foreign_evidence.py); then the report, which shows them."""
    if args.report or args.export_preset is not None:
        raise UserError(
            "--margin / --validate: not with --report or --export-preset (the report follows them)"
        )
    if study_def.command is None:
        raise UserError('--margin / --validate run your command: give --command "..." as for the search')
    if args.margin and study_def.lr_param is None:
        raise UserError(
            f'--margin: {args.space} names no lr param; add lr = "NAME" to its [study] table (the param '
            "the ladder multiplies)"
        )
    if args.validate and not study_def.command.uses("seed"):
        raise UserError(
            "--validate: your command takes no {seed}; add it (e.g. --seed {seed}) so seeds differ"
        )
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    from studies.evidence.margin import MAX_MULTIPLIER

    top = MAX_MULTIPLIER if args.margin_max is None else args.margin_max
    if not top >= 1.0:
        raise UserError(f"--margin-max must be a number >= 1, got {top:g}")
    from common.console import make_console
    from studies.execution import foreign_evidence as fe
    from studies.execution.commands import EvidenceRun, run_evidence
    from studies.execution.launch import open_existing
    from studies.paths import StudyPaths

    fe.check_names(study_def, "--margin", args.margin or [])
    fe.check_names(study_def, "--validate", args.validate or [])
    study = open_existing(study_def, url)
    paths, console = StudyPaths(args.runs_dir, study_def.name), make_console(stderr=True)
    say = lambda line: console.print(line, soft_wrap=True)  # noqa: E731
    if args.validate:
        fe.run_validation(
            study, study_def, paths, args.validate, seeds=args.seeds, base_seed=args.seed, say=say
        )
    if args.margin:
        fe.run_margin(study, study_def, paths, args.margin, seed=args.seed, max_multiplier=top, say=say)
    return run_evidence(EvidenceRun(study=study_def, url=url, runs_dir=args.runs_dir, report=True))


def _check_device(study_def, device: str) -> None:
    """A GPU-sized study on a machine without one would run for days showing nothing: say so, unless forced."""
    if device != "auto" or not study_def.needs_gpu:
        return
    none = UserError(
        f"study {study_def.name!r} is sized for a CUDA GPU (model {study_def.model_size}, {study_def.precision}) "
        "and none is visible here; run --study stability-quick (the CPU-sized study), or add --device cpu "
        "to force it (hours per trial)"
    )
    if _no_gpu_device_nodes():  # said without loading torch (~2 s), so the refusal is instant
        raise none
    import torch

    if not torch.cuda.is_available():
        raise none


def _check_data_folder(folder: Path) -> None:
    """Its metadata reads and every WAV it names exists: a typo'd path is one line before the model loads
    (the full audit of the audio is --check-data's, and the search's own before its first trial)."""
    from tts_model.metadata import metadata_path, read_metadata, wav_paths

    wav_paths(folder, metadata_path(folder), read_metadata(folder))


def _no_gpu_device_nodes() -> bool:
    """Linux without any NVIDIA (or WSL) device node: no CUDA GPU can be visible, whatever torch says."""
    dev = Path("/dev")
    return sys.platform == "linux" and not any(dev.glob("nvidia*")) and not (dev / "dxg").exists()


def _worker_argv(args: argparse.Namespace, trials: int, study: str) -> list[str]:
    """This same command for a local worker process (``spawn_workers`` adds ``--worker-index``)."""
    argv = [
        os.path.abspath(__file__),
        "--study",
        study,
        "--trials",
        str(trials),
        "--seed",
        str(args.seed),
    ]
    argv += [
        "--device",
        args.device,
        "--runs-dir",
        str(args.runs_dir),
        "--horizon-scale",
        str(args.horizon_scale),
    ]
    for flag, value in (
        ("--storage", args.storage),
        ("--model-size", args.model_size),
        ("--train-data", args.train_data),
        ("--val-data", args.val_data),
        ("--space", args.space and args.space.resolve()),
        ("--command", args.command),
        ("--threads", args.threads),  # given: the worker keeps it (else it may take idle cores at the end)
    ):
        if value is not None:
            argv += [flag, str(value)]
    return argv


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
