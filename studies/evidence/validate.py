"""Multi-seed validation: a preset (or the study's best) run K times, longer than a trial, and counted.

A study judges each point once, on one seed, over a short horizon that favours fast learners. The
mission asks whether `basic` is *reliably* stable and whether the search's best is too, so each
named recipe runs again with K seeds for a longer horizon (``studies.execution.long_runs``), and the
answer is a table of numbers: divergence rate, where the diverged runs broke, and val mel mean +- std
of the runs that did not. This module holds the typed result and reads it back from the study (user
attribute ``validation:<name>``); each run is also in the telemetry under its run id.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from common.errors import UserError
from studies import ranking
from studies.record import load_records
from studies.registry import StudyDef
from trainer.config import config_to_dict
from trainer.diagnosis import Diagnosis
from trainer.judge import Judgement
from trainer.outcome import Outcome
from trainer.presets import PRESETS, preset

ATTR_PREFIX = "validation:"
BEST = "best"
ORDER = ("basic", "enhanced", BEST)  # how stored results are listed


def known_names() -> tuple[str, ...]:
    return (*sorted(PRESETS), BEST)


def check_names(names: Sequence[str], seeds: int, steps: int | None) -> None:
    """Fail before anything runs: unknown names, a bad seed count or step count."""
    for name in names:
        if name not in known_names():
            raise UserError(f"--validate {name!r}: unknown preset; known: {', '.join(known_names())}")
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    if steps is not None and steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")


def default_steps(study_def: StudyDef) -> int:
    """Twice the longest trial of the study: long enough to see what a trial's horizon could not."""
    return 2 * (study_def.space.warmup_max + study_def.horizon)


def resolve(study: optuna.Study, study_def: StudyDef, name: str) -> tuple[dict[str, Any], int | None]:
    """The Optuna params of a preset (warmup scaled to the study) or of the best feasible trial."""
    if name == BEST:
        best = ranking.best(load_records(study))
        if best is None:
            raise UserError(
                f"--validate best: study {study.study_name!r} has no feasible trial yet (none finished aligned "
                "with a decode that stops); run more trials, or validate the presets only"
            )
        return dict(best.params), best.number
    return study_def.space.preset_params(config_to_dict(preset(name))), None


@dataclass(frozen=True, kw_only=True, slots=True)
class ValidationRun:
    """One seed of a validated recipe: the judge's word and the numbers behind it."""

    seed: int
    run_id: str
    verdict: Outcome
    steps_run: int
    val_mel: float | None = None  # the last eval's, of a run that did not diverge
    diagonality: float | None = None
    divergence_step: int | None = None
    detail: str | None = None  # why it diverged
    last_val_mel: float | None = None  # a diverged run's last finite val mel
    diagnosis: Diagnosis | None = None  # why it diverged (trainer/diagnosis.py), from a replay of the run

    @property
    def diverged(self) -> bool:
        return self.verdict.diverged

    @classmethod
    def of(cls, seed: int, run_id: str, verdict: Judgement) -> ValidationRun:
        final, d = verdict.final, verdict.divergence
        if d is not None:
            last = final.val_mel if final is not None and math.isfinite(final.val_mel) else None
            return cls(
                seed=seed,
                run_id=run_id,
                verdict=verdict.outcome,
                steps_run=verdict.steps,
                divergence_step=d.step,
                detail=d.detail,
                last_val_mel=last,
                diagnosis=verdict.diagnosis,
            )
        return cls(
            seed=seed,
            run_id=run_id,
            verdict=verdict.outcome,
            steps_run=verdict.steps,
            val_mel=verdict.val_mel,
            diagonality=None if final is None else round(final.diagonality, 4),
        )

    def to_attr(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "seed": self.seed,
            "run_id": self.run_id,
            "steps_run": self.steps_run,
            "val_mel": self.val_mel,
            "diagonality": self.diagonality,
            "divergence_step": self.divergence_step,
            "verdict": self.verdict.value,
        }
        if self.detail is not None:
            row["detail"] = self.detail
        if self.last_val_mel is not None:
            row["last_val_mel"] = self.last_val_mel
        if self.diagnosis is not None:
            row["diagnosis"] = self.diagnosis.to_attr()
        return row

    @classmethod
    def from_attr(cls, row: Mapping[str, Any]) -> ValidationRun:
        return cls(
            seed=int(row["seed"]),
            run_id=str(row.get("run_id", "")),
            verdict=Outcome.read(row["verdict"]),
            steps_run=int(row.get("steps_run", 0)),
            val_mel=row.get("val_mel"),
            diagonality=row.get("diagonality"),
            divergence_step=row.get("divergence_step"),
            detail=row.get("detail"),
            last_val_mel=row.get("last_val_mel"),
            diagnosis=Diagnosis.from_attr(row["diagnosis"])
            if isinstance(row.get("diagnosis"), dict)
            else None,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Validation:
    """A recipe validated over seeds: its runs, and the counts a person reads."""

    name: str
    trial: int | None  # the trial it came from ("best"), None for a preset
    params: Mapping[str, Any]
    steps: int
    runs: tuple[ValidationRun, ...]
    date: str = ""

    @property
    def label(self) -> str:
        return self.name if self.trial is None else f"{self.name} (trial {self.trial})"

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def diverged(self) -> int:
        return sum(r.diverged for r in self.runs)

    @property
    def divergence_rate(self) -> float:
        return self.diverged / len(self.runs) if self.runs else 0.0

    @property
    def divergence_steps(self) -> list[int | None]:
        return [r.divergence_step for r in self.runs if r.diverged]

    @property
    def stable(self) -> int:
        return sum(r.verdict.feasible for r in self.runs)

    @property
    def _mels(self) -> list[float]:
        return [r.val_mel for r in self.runs if r.val_mel is not None and math.isfinite(r.val_mel)]

    @property
    def val_mel_mean(self) -> float | None:
        return statistics.fmean(self._mels) if self._mels else None

    @property
    def val_mel_std(self) -> float | None:
        mels = self._mels
        return statistics.stdev(mels) if len(mels) > 1 else (0.0 if mels else None)

    def to_attr(self) -> dict[str, Any]:
        """The study's user attribute (plain JSON; the counts are stored too, for readers of the raw study)."""
        return {
            "name": self.name,
            "trial": self.trial,
            "params": dict(self.params),
            "steps": self.steps,
            "seeds": self.seeds,
            "runs": [r.to_attr() for r in self.runs],
            "diverged": self.diverged,
            "divergence_rate": self.divergence_rate,
            "divergence_steps": self.divergence_steps,
            "stable": self.stable,
            "val_mel_mean": self.val_mel_mean,
            "val_mel_std": self.val_mel_std,
            "date": self.date,
        }

    @classmethod
    def from_attr(cls, d: Mapping[str, Any]) -> Validation:
        return cls(
            name=str(d["name"]),
            trial=d.get("trial"),
            params=dict(d.get("params", {})),
            steps=int(d["steps"]),
            runs=tuple(ValidationRun.from_attr(r) for r in d.get("runs", [])),
            date=str(d.get("date", "")),
        )


def summarize(
    name: str, runs: Sequence[ValidationRun], *, steps: int, trial: int | None, params: Mapping[str, Any]
) -> Validation:
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return Validation(name=name, trial=trial, params=params, steps=steps, runs=tuple(runs), date=date)


def store(study: optuna.Study, result: Validation) -> None:
    study.set_user_attr(ATTR_PREFIX + result.name, result.to_attr())


def stored_results(study: optuna.Study) -> dict[str, Validation]:
    """Validation results recorded in the study, basic / enhanced / best first."""
    found = {
        k[len(ATTR_PREFIX) :]: Validation.from_attr(v)
        for k, v in study.user_attrs.items()
        if k.startswith(ATTR_PREFIX) and isinstance(v, dict)
    }
    order = {n: i for i, n in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], 9), kv[0])))
