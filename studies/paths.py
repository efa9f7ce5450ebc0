"""Where a study's files live and what its runs are called: each name and path defined once.

Every run a study makes (its trials, the lr probe, validation seeds, a transfer check's long runs, the margin's rungs) has a
run id: its key in the telemetry database, and, past the study's name, the stem of its saved eval
sample. The executor writes under these names and the evidence reads them back by the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def trial_run(study: str, number: int) -> str:
    return f"{study}/trial-{number}"


def probe_run(study: str) -> str:
    return f"{study}/lr-probe"


def validation_run(study: str, recipe: str, seed: int) -> str:
    return f"{study}/{_validation_prefix(recipe)}{seed}"


def _validation_prefix(recipe: str) -> str:
    return f"validate-{recipe}-seed"


def transfer_run(study: str, number: int) -> str:
    return f"{study}/transfer-trial-{number}"


def margin_run(study: str, recipe: str, multiplier: float) -> str:
    """One rung of a recipe's lr ladder (``--margin``): ``x8``, ``x0.25``."""
    return f"{study}/margin-{recipe}-x{multiplier:g}"


@dataclass(frozen=True, slots=True)
class StudyPaths:
    """The files of study ``study`` under ``runs_dir`` (``runs/`` by default)."""

    runs_dir: Path
    study: str

    @property
    def dir(self) -> Path:
        return self.runs_dir / self.study

    @property
    def database(self) -> Path:
        """The default storage: a SQLite file (``--storage`` may put the study elsewhere)."""
        return self.dir / "study.db"

    @property
    def telemetry(self) -> Path:
        return self.dir / "telemetry.db"

    @property
    def samples(self) -> Path:
        return self.dir / "samples"

    @property
    def report(self) -> Path:
        return self.dir / "report.html"

    @property
    def report_files(self) -> Path:
        """The report's PNGs and WAV, beside the page."""
        return self.dir / "report"

    @property
    def best_preset(self) -> Path:
        return self.dir / "best_preset.json"

    @property
    def train_best(self) -> Path:
        """The run folder of ``--train-best``."""
        return self.dir / "train-best"

    def trial_dir(self, number: int) -> Path:
        """A trial's folder: a foreign trainer's config copy and its ``{run_dir}``; the project trainer's
        screen state (``checkpoints/``), kept for a later promotion (``studies.promotion``)."""
        return self.dir / "trials" / f"trial-{number}"

    @property
    def worker_logs(self) -> Path:
        return self.dir / "workers"

    def sample(self, run_id: str) -> Path:
        """The last eval's sample of a run (mel, attention, decode): named after its run id."""
        return self.samples / f"{run_id.split('/', 1)[-1]}.pt"

    def validation_samples(self, recipe: str) -> list[Path]:
        """The saved samples of every validation seed of ``recipe``."""
        return sorted(self.samples.glob(f"{_validation_prefix(recipe)}*.pt"))
