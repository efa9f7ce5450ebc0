"""How far from the edge: a recipe's lr margin, stepped out in short runs, and its LR sensitivity.

A study says whether a recipe trained stably; it does not say how close it stood to the edge. So each
named recipe (``basic``, ``enhanced``, ``best``...) runs again at lr x 1, 2, 4, 8, ... until a divergence
guard fires (or, if x1 already diverges, at x 1/2, 1/4, ... until one does not), every rung a short run
with the study's guards and the trials' horizon (``studies.execution.margin_runs``). The answer per
recipe: the largest multiplier that survived (``Outcome.survived``: every guard judged the run and
none fired; an unaligned rung survives too, the margin is about blowing up), the first that diverged and how (guard, step), and
the LR sensitivity of Wortsman et al. 2023 ("Small-scale proxies for large-scale Transformer training
instabilities") over the rungs tried:

    sensitivity = mean over rungs of [ min(L(rung), L0) - min over rungs of min(L(rung), L0) ]

with L the last eval's val mel (teacher forced, unweighted, so recipes with different loss weights
compare), L(rung) = infinity for a rung that diverged, and L0 the untrained model's val mel (the same
for every rung: same seed, same initial weights). 0: every lr tried trains as well as the best one;
L0 - L*: none trains at all. This module holds the stepping (pure: ``climb``), the typed result and
its storage (study user attribute ``margin:<name>``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from common.errors import UserError
from studies.evidence.validate import known_names
from trainer.headroom import TENSORS, headroom
from trainer.outcome import Outcome

ATTR_PREFIX = "margin:"
BEST = "best"
ORDER = ("basic", "enhanced", BEST)
FACTOR = 2.0  # each rung doubles (or halves) the lr
# 12 doublings: basic's lr 1e-5 x 4,096 reaches past lr 1e-2, where short trials of the tiny model explode
# (docs/measurements.md), so the edge of every seed preset lies inside the ladder.
MAX_MULTIPLIER = 4096.0
MIN_MULTIPLIER = 1 / 64  # 6 halvings down, when x1 already diverges
MAX_LR = 1.0  # TrainConfig's own upper bound on lr


def check_names(names: Sequence[str], steps: int | None, max_multiplier: float = MAX_MULTIPLIER) -> None:
    """Fail before anything runs: unknown recipe names, a bad step count or multiplier cap."""
    for name in names:
        if name not in known_names():
            raise UserError(f"--margin {name!r}: unknown preset; known: {', '.join(known_names())}")
    if steps is not None and steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    if not (math.isfinite(max_multiplier) and max_multiplier >= 1.0):
        raise UserError(f"--margin-max must be a number >= 1, got {max_multiplier:g}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Rung:
    """One short run of the recipe at ``multiplier`` x its lr: the judge's word and its numbers."""

    multiplier: float
    lr: float
    outcome: Outcome  # the judge's word
    steps_run: int
    run_id: str = ""
    divergence_kind: str | None = None
    divergence_step: int | None = None
    val_mel: float | None = None  # the last eval's, of a run that did not diverge
    baseline_mel: float | None = None  # the untrained model's (step 0)
    peaks: Mapping[str, float] = field(
        default_factory=dict
    )  # TENSORS key -> its max |value| at the last step

    @property
    def diverged(self) -> bool:
        return self.outcome.diverged

    @property
    def headroom(self) -> dict[str, float]:
        """fp16 headroom of each watched tensor at the rung's last step."""
        return {k: headroom(v) for k, v in self.peaks.items()}

    def to_attr(self) -> dict[str, Any]:
        return {
            "multiplier": self.multiplier,
            "lr": self.lr,
            "outcome": self.outcome.value,
            "steps_run": self.steps_run,
            "run_id": self.run_id,
            "divergence_kind": self.divergence_kind,
            "divergence_step": self.divergence_step,
            "val_mel": self.val_mel,
            "baseline_mel": self.baseline_mel,
            "peaks": {k: _json(v) for k, v in self.peaks.items()},
        }

    @classmethod
    def from_attr(cls, d: Mapping[str, Any]) -> Rung:
        return cls(
            multiplier=float(d["multiplier"]),
            lr=float(d["lr"]),
            outcome=Outcome.read(d["outcome"]),
            steps_run=int(d["steps_run"]),
            run_id=str(d.get("run_id", "")),
            divergence_kind=d.get("divergence_kind"),
            divergence_step=d.get("divergence_step"),
            val_mel=d.get("val_mel"),
            baseline_mel=d.get("baseline_mel"),
            peaks={
                k: math.nan if v is None else float(v)
                for k, v in (d.get("peaks") or {}).items()
                if k in TENSORS
            },
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Margin:
    """A recipe's rungs, lowest multiplier first, and what they say."""

    name: str
    trial: int | None  # the trial it came from ("best"), None for a preset
    base_lr: float
    steps: int  # steps per rung (the trials' horizon for this recipe, or --steps)
    rungs: tuple[Rung, ...]
    date: str = ""

    @property
    def label(self) -> str:
        return self.name if self.trial is None else f"{self.name} (trial {self.trial})"

    @property
    def first_diverged(self) -> Rung | None:
        """The smallest multiplier that diverged (the edge, from above)."""
        return next((r for r in self.rungs if r.diverged), None)

    @property
    def largest_survived(self) -> Rung | None:
        """The largest multiplier below the first divergence that survived (Outcome.survived)."""
        edge = self.first_diverged
        below = [
            r for r in self.rungs if r.outcome.survived and (edge is None or r.multiplier < edge.multiplier)
        ]
        return below[-1] if below else None

    @property
    def edge_found(self) -> bool:
        """False when no rung diverged: the edge lies beyond the last multiplier tried."""
        return self.first_diverged is not None

    @property
    def sensitivity(self) -> float | None:
        return lr_sensitivity(self.rungs)

    def summary(self) -> str:
        """One line: "survived up to 512x (lr 5.1e-3); diverged at 1024x (explosion, step 97)"."""
        top, edge = self.largest_survived, self.first_diverged
        parts = [
            f"survived up to {fmt_multiplier(top.multiplier)} (lr {top.lr:.2g})"
            if top is not None
            else f"diverged at every multiplier tried, down to {fmt_multiplier(self.rungs[0].multiplier)}"
        ]
        if edge is not None and top is not None:
            parts.append(
                f"diverged at {fmt_multiplier(edge.multiplier)} ({edge.divergence_kind}, step {edge.divergence_step})"
            )
        elif edge is None:
            parts.append(
                f"no guard fired up to {fmt_multiplier(self.rungs[-1].multiplier)}: the edge lies beyond"
            )
        s = self.sensitivity
        parts.append("LR sensitivity -" if s is None else f"LR sensitivity {s:.3f}")
        return "; ".join(parts)

    def provenance(self) -> str:
        """The exported preset's line about its margin."""
        top = self.largest_survived
        if top is None:
            return f"diverged at this lr in {self.steps}-step runs (margin check {self.date})"
        beyond = "" if self.edge_found else " (no higher multiplier diverged)"
        return f"survived up to {fmt_multiplier(top.multiplier)} this lr in {self.steps}-step runs{beyond}"

    def to_attr(self) -> dict[str, Any]:
        """The study's user attribute (plain JSON; the conclusions are stored too, for raw readers)."""
        top, edge = self.largest_survived, self.first_diverged
        return {
            "name": self.name,
            "trial": self.trial,
            "base_lr": self.base_lr,
            "steps": self.steps,
            "rungs": [r.to_attr() for r in self.rungs],
            "largest_survived": None if top is None else top.multiplier,
            "first_diverged": None if edge is None else edge.multiplier,
            "sensitivity": self.sensitivity,
            "date": self.date,
        }

    @classmethod
    def from_attr(cls, d: Mapping[str, Any]) -> Margin:
        return cls(
            name=str(d["name"]),
            trial=d.get("trial"),
            base_lr=float(d["base_lr"]),
            steps=int(d["steps"]),
            rungs=tuple(Rung.from_attr(r) for r in d.get("rungs", [])),
            date=str(d.get("date", "")),
        )


def climb(
    run: Callable[[float], Rung],
    *,
    base_lr: float,
    factor: float = FACTOR,
    max_multiplier: float = MAX_MULTIPLIER,
    min_multiplier: float = MIN_MULTIPLIER,
    max_lr: float = MAX_LR,
) -> tuple[Rung, ...]:
    """The rungs of one recipe, lowest multiplier first: ``run(multiplier)`` trains (or, in a test,
    pretends to) one rung. From x1, up by ``factor`` while each rung survives, up to ``max_multiplier``
    (and never past ``max_lr``: TrainConfig's bound for the project's trainer); if x1 diverged, down by ``factor`` until a rung does not, down to
    ``min_multiplier``. An out-of-memory rung ends the ladder: it says nothing about stability."""
    if factor <= 1.0:
        raise ValueError(f"factor must be > 1, got {factor}")
    rungs = [run(1.0)]
    multiplier = 1.0
    if rungs[0].outcome.survived:
        while multiplier * factor <= max_multiplier * (1 + 1e-9):
            multiplier *= factor
            if base_lr * multiplier > max_lr * (1 + 1e-9):
                break
            rungs.append(run(multiplier))
            if not rungs[-1].outcome.survived:
                break
    elif rungs[0].diverged:
        while multiplier / factor >= min_multiplier * (1 - 1e-9):
            multiplier /= factor
            rungs.append(run(multiplier))
            if not rungs[-1].diverged:
                break
    return tuple(sorted(rungs, key=lambda r: r.multiplier))


def lr_sensitivity(rungs: Sequence[Rung]) -> float | None:
    """Wortsman et al.'s LR sensitivity over the rungs (module docstring); None without the numbers
    (no untrained baseline, or no rung that trained to an eval)."""
    base = next((r.baseline_mel for r in rungs if r.baseline_mel is not None), None)
    if base is None or not math.isfinite(base):
        return None
    losses = [min(_final(r), base) for r in rungs if r.outcome is not Outcome.OOM]
    if not losses:
        return None
    best = min(losses)
    return sum(loss - best for loss in losses) / len(losses)


def _final(r: Rung) -> float:
    if r.diverged or r.val_mel is None or not math.isfinite(r.val_mel):
        return math.inf
    return r.val_mel


def fmt_multiplier(m: float) -> str:
    """2 -> "2x", 0.25 -> "1/4x"."""
    if m >= 1:
        return f"{m:g}x"
    return f"1/{1 / m:g}x"


def summarize(name: str, rungs: Sequence[Rung], *, trial: int | None, base_lr: float, steps: int) -> Margin:
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return Margin(name=name, trial=trial, base_lr=base_lr, steps=steps, rungs=tuple(rungs), date=date)


def store(study: optuna.Study, margin: Margin) -> None:
    study.set_user_attr(ATTR_PREFIX + margin.name, margin.to_attr())


def stored(study: optuna.Study) -> dict[str, Margin]:
    """Margins recorded in the study, basic / enhanced / best first."""
    found = {
        k[len(ATTR_PREFIX) :]: Margin.from_attr(v)
        for k, v in study.user_attrs.items()
        if k.startswith(ATTR_PREFIX) and isinstance(v, dict)
    }
    order = {n: i for i, n in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], 9), kv[0])))


def _json(x: float) -> float | None:
    return x if math.isfinite(x) else None
