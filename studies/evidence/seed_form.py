"""The seed's question in the seed's own form: what ``bench/seed_form.py`` measured, stored in a study.

The study's margin and headroom are measured in its own alignment form and precision. The seed trained
with the KL prior, fp16 on and its padding mask applied twice. The bench runs ``basic`` and ``enhanced``
in that form with and without the defect (a bench-only switch, never a user knob) and, given a study,
stores its runs here (study user attribute ``seed_form``), so the report's first section can say what
that form did beside what the study's form did.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from trainer.outcome import Outcome

ATTR = "seed_form"


@dataclass(frozen=True, kw_only=True, slots=True)
class SeedFormRun:
    """One recipe in the seed's form, with or without its defect: the judge's word and the diagnosis."""

    recipe: str
    defect: bool  # the seed's padding mask applied twice
    outcome: Outcome
    diverged_at: int | None = None
    cause: str | None = None  # the diagnosis's cause and where: "fp16-overflow (decoder.0.cross_attn)"
    val_mel: float | None = None
    headroom: float | None = None  # the least fp16 headroom of the run's finite steps (doublings)

    def to_attr(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "defect": self.defect,
            "outcome": self.outcome.value,
            "diverged_at": self.diverged_at,
            "cause": self.cause,
            "val_mel": self.val_mel,
            "headroom": self.headroom,
        }

    @classmethod
    def from_attr(cls, d: Mapping[str, Any]) -> SeedFormRun:
        return cls(
            recipe=str(d["recipe"]),
            defect=bool(d["defect"]),
            outcome=Outcome.read(d["outcome"]),
            diverged_at=d.get("diverged_at"),
            cause=d.get("cause"),
            val_mel=d.get("val_mel"),
            headroom=d.get("headroom"),
        )

    def words(self) -> str:
        if self.outcome.diverged:
            cause = f", {self.cause}" if self.cause else ""
            return f"{self.recipe} diverged at step {self.diverged_at}{cause}"
        return f"{self.recipe} {self.outcome}"


@dataclass(frozen=True, kw_only=True, slots=True)
class SeedForm:
    steps: int
    runs: tuple[SeedFormRun, ...]
    date: str = ""

    def to_attr(self) -> dict[str, Any]:
        return {"steps": self.steps, "runs": [r.to_attr() for r in self.runs], "date": self.date}

    @classmethod
    def from_attr(cls, d: Mapping[str, Any]) -> SeedForm:
        runs = tuple(SeedFormRun.from_attr(r) for r in d.get("runs", []))
        return cls(steps=int(d["steps"]), runs=runs, date=str(d.get("date", "")))

    def sentence(self) -> str:
        """What the seed's form did, and whether it reproduces the seed's report (enhanced NaN, basic not)."""
        parts = []
        for defect, label in (
            (False, "as this project's model is"),
            (True, "with the seed's mask applied twice"),
        ):
            runs = [r for r in self.runs if r.defect is defect]
            if runs:
                parts.append(f"{label}, {', '.join(r.words() for r in runs)}")
        head = (
            f"In the seed's own form (KL prior, fp16 autocast, {self.steps}-step runs, bench/seed_form.py): "
            + "; ".join(parts)
        )
        return f"{head}: {self._verdict()}."

    def _verdict(self) -> str:
        by = {(r.recipe, r.defect): r for r in self.runs}
        pairs = [(by.get(("basic", d)), by.get(("enhanced", d))) for d in (False, True)]
        if any(
            b is not None and e is not None and e.outcome.diverged and not b.outcome.diverged
            for b, e in pairs
        ):
            return "enhanced diverged where basic did not, as the seed reported"
        if all(
            b is not None and e is not None and b.outcome.diverged == e.outcome.diverged for b, e in pairs
        ):
            return "the two recipes behave alike, so the choice between them does not reproduce the seed's report"
        return "this does not reproduce the seed's report (enhanced NaN, basic not)"


def summarize(steps: int, runs: Sequence[SeedFormRun]) -> SeedForm:
    return SeedForm(steps=steps, runs=tuple(runs), date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


def store(study: optuna.Study, found: SeedForm) -> None:
    """Stored beside what an earlier run of the bench stored with the same steps (one process per
    recipe, side by side), a (recipe, defect) measured again replacing its older run."""
    before = stored(study)
    if before is not None and before.steps == found.steps:
        new = {(r.recipe, r.defect) for r in found.runs}
        kept = tuple(r for r in before.runs if (r.recipe, r.defect) not in new)
        found = SeedForm(steps=found.steps, runs=kept + found.runs, date=found.date)
    order = {"basic": 0, "enhanced": 1}
    runs = tuple(sorted(found.runs, key=lambda r: (r.defect, order.get(r.recipe, 9), r.recipe)))
    study.set_user_attr(ATTR, SeedForm(steps=found.steps, runs=runs, date=found.date).to_attr())


def stored(study: optuna.Study) -> SeedForm | None:
    found = study.user_attrs.get(ATTR)
    return SeedForm.from_attr(found) if isinstance(found, dict) else None
