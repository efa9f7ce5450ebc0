"""What a caller can get wrong, checked before Coqui loads: the flags, the folders, and which ``trainer``
package ``import trainer`` finds. Each is one line and exit 2 (``BadInput``), never a traceback."""

from __future__ import annotations

import argparse
from pathlib import Path


class BadInput(Exception):
    """Something the caller can fix (a flag, a folder, the config): one line, exit 2."""


def check_args(a: argparse.Namespace) -> None:
    for flag, value in (("--config", a.config), ("--train-data", a.train_data), ("--val-data", a.val_data)):
        if value is None:
            raise BadInput(f"{flag} is required")
    if a.out is None:
        raise BadInput("--out is required (the trial's folder: {run_dir})")
    if not a.config.is_file():
        raise BadInput(f"--config {a.config}: no such file")
    for flag, folder in (("--train-data", a.train_data), ("--val-data", a.val_data)):
        if not (folder / "metadata.csv").is_file():
            raise BadInput(
                f"{flag} {folder}: no metadata.csv there (an LJSpeech-style folder; build one with "
                "`python -m tts_model.corpus --out DIR --utterances 200`)"
            )
    if a.steps < 1 or a.eval_every < 1:
        raise BadInput(f"--steps and --eval-every must be >= 1, got {a.steps} and {a.eval_every}")


def import_coqui() -> None:
    """Coqui's ``trainer`` package, not the project's: say so in one line when the wrong one wins."""
    try:
        import trainer
    except ImportError:
        raise BadInput("coqui-tts-trainer is not installed: pip install -e '.[coqui]'") from None
    if not hasattr(trainer, "Trainer"):
        raise BadInput(
            f"`import trainer` found {Path(trainer.__file__).parent}, not coqui-tts-trainer's: run this file "
            "with `python -I` (the project's own `trainer` package shadows Coqui's)"
        )
    try:
        import TTS  # noqa: F401
    except ImportError:
        raise BadInput("coqui-tts is not installed: pip install -e '.[coqui]'") from None
