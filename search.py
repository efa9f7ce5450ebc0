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

from common.cli import OneLineHelp, OneLineParser, run_cli
from common.errors import UserError
from studies.execution.storage import resolve_storage
from studies.registry import get_study, scaled, study_names
from tts_model.config import MODEL_SIZES

if TYPE_CHECKING:  # for the annotation only: the functions below import the launch where a search runs
    from studies.execution.launch import SearchRun


USAGE = """%(prog)s [--study NAME] [--trials N] [--workers N] [options]
       %(prog)s [--study NAME] --report | --lr-probe | --train-best | ...
       %(prog)s --space FILE --command TEMPLATE [--trials N] [options]"""


def build_parser() -> OneLineParser:
    """The flags in the groups a user looks for them by; each help is one line (OneLineHelp), the
    group's description says what the flags share."""
    p = OneLineParser(
        prog="search.py",
        usage=USAGE,
        description="Stability search for TTS training (Optuna).",
        formatter_class=OneLineHelp,
    )
    names = study_names()

    g = p.add_argument_group("the study", "which search, how long, on what device")
    g.add_argument(
        "--study", default=None, metavar="NAME", help=f"{names[0]} (default), {', '.join(names[1:])}"
    )
    g.add_argument(
        "--trials",
        type=int,
        default=None,
        metavar="N",
        help="finished trials to reach (default: the study's)",
    )
    g.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seeds the sampler and every trial's training"
    )
    g.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        metavar="DEVICE",
        help="auto (CUDA when visible), cpu or cuda",
    )
    g.add_argument(
        "--horizon-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="shrink every step count by F (a pipeline check)",
    )

    g = p.add_argument_group("data and model", "the project's trainer only (not with --space)")
    g.add_argument(
        "--train-data",
        type=Path,
        default=None,
        metavar="DIR",
        help="LJSpeech-style folder (default: embedded corpus)",
    )
    g.add_argument(
        "--val-data",
        type=Path,
        default=None,
        metavar="DIR",
        help="its eval folder (default: embedded corpus)",
    )
    g.add_argument(
        "--model-size",
        default=None,
        metavar="SIZE",
        help=f"override the study's: {', '.join(sorted(MODEL_SIZES))}",
    )

    g = p.add_argument_group(
        "workers", "processes on this machine: trials, or --transfer-check's long runs, or --margin's recipes"
    )
    g.add_argument(
        "--workers", type=int, default=1, metavar="N", help="worker processes on this study (default 1)"
    )
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads per worker (default: cores / workers)",
    )

    g = p.add_argument_group("storage", "where a study lives; workers on other machines share --storage")
    g.add_argument(
        "--storage", default=None, metavar="URL", help="Optuna storage (default: runs/STUDY/study.db)"
    )
    g.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        metavar="DIR",
        help="where studies and telemetry live (default runs)",
    )

    g = p.add_argument_group(
        "evidence", "about a study that has run; the probe, validation, margin and transfer check train"
    )
    g.add_argument("--report", action="store_true", help="write runs/STUDY/report.html: the study's evidence")
    g.add_argument("--lr-probe", action="store_true", help="lr range test: lr rises until it diverges")
    g.add_argument(
        "--validate",
        nargs="+",
        default=None,
        metavar="NAME",
        help="re-run presets or best, over --seeds seeds",
    )
    g.add_argument(
        "--seeds", type=int, default=3, metavar="N", help="--validate: runs per recipe (default 3)"
    )
    g.add_argument(
        "--margin",
        nargs="+",
        default=None,
        metavar="NAME",
        help="each recipe at lr x1, x2, x4 ... until a guard fires",
    )
    g.add_argument(
        "--margin-max",
        type=float,
        default=None,
        metavar="M",
        help="--margin: the largest lr multiplier (default 4096)",
    )
    g.add_argument(
        "--transfer-check",
        type=int,
        default=None,
        metavar="K",
        help="K trials re-run long: does the short one predict?",
    )
    g.add_argument(
        "--steps",
        type=int,
        default=None,
        metavar="N",
        help="steps per run: probe, validate, margin, transfer",
    )

    g = p.add_argument_group("full training", "the best trial of the study, beyond the search's horizon")
    g.add_argument(
        "--export-preset", type=Path, default=None, metavar="FILE", help="write the best trial as a preset"
    )
    g.add_argument(
        "--train-best", action="store_true", help="train the best trial; other flags go to the trainer"
    )

    g = p.add_argument_group(
        "your own trainer",
        "a study of your trainer: --study defaults to the file's name; search, --report, --export-preset",
    )
    g.add_argument(
        "--space",
        type=Path,
        default=None,
        metavar="FILE",
        help="its search space (TOML): params, presets, guards",
    )
    g.add_argument(
        "--command",
        default=None,
        metavar="TEMPLATE",
        help='a trial\'s command, e.g. "python train.py --lr {lr}"',
    )

    p.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)  # set by --workers
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not args.train_best:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
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
    url = resolve_storage(args.storage, study_def.name, args.runs_dir)
    evidence = args.report or args.lr_probe or args.validate or args.margin or args.transfer_check is not None
    # The search trains, and so do the probe, validation, margin and transfer check; report and export do not,
    # and --train-best hands the device to the trainer's own CLI.
    trains = args.lr_probe or bool(args.validate) or bool(args.margin) or args.transfer_check is not None
    if trains or not (evidence or args.export_preset is not None or args.train_best):
        _check_device(study_def, args.device)

    if evidence:
        if args.export_preset is not None or args.train_best:
            raise UserError(
                "--report, --lr-probe, --validate, --margin, --transfer-check: not with --export-preset or "
                "--train-best"
            )
        from studies.evidence import margin, transfer
        from studies.evidence.validate import check_names
        from studies.execution.commands import EvidenceRun, run_evidence

        check_names(args.validate or [], args.seeds, args.steps)
        margin_max = margin.MAX_MULTIPLIER if args.margin_max is None else args.margin_max
        margin.check_names(args.margin or [], args.steps, margin_max)
        if args.transfer_check is not None:
            transfer.check(study_def, args.transfer_check, args.steps)
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
        "--validate": bool(args.validate),
        "--transfer-check": args.transfer_check is not None,
        "--margin": bool(args.margin),
        "--train-best": args.train_best,
    }
    given = [flag for flag, on in project_only.items() if on]
    if given:
        raise UserError(f"{given[0]} is for the project's trainer; a study with --space runs yours")
    name = args.study or args.space.stem
    searching = not (args.report or args.export_preset is not None)
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
    url = resolve_storage(args.storage, study_def.name, args.runs_dir)
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


def _check_device(study_def, device: str) -> None:
    """A GPU-sized study on a machine without one would run for days showing nothing: say so, unless forced."""
    if device == "cpu" or not study_def.needs_gpu:
        return
    import torch

    if device == "auto" and not torch.cuda.is_available():
        raise UserError(
            f"study {study_def.name!r} is sized for a CUDA GPU (model {study_def.model_size}, {study_def.precision}) "
            "and none is visible here; run --study stability-quick (the CPU-sized study), or add --device cpu "
            "to force it (hours per trial)"
        )


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
