"""`search.py`'s flags, in the groups a user looks for them by (``python search.py --help``).

Parsing only: what the flags mean together, and every check a user can fail, stays in ``search.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.cli import OneLineHelp, OneLineParser
from studies.registry import study_names
from tts_model.config import MODEL_SIZES

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
    g.add_argument(
        "--check-data",
        action="store_true",
        help="audit the data for what breaks training (exit 2)",
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
        help="each recipe's lr edge: the lr x 2^k that survived next to the one that diverged",
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
