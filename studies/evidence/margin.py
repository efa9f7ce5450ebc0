"""How far from the edge: a recipe's lr margin, found in a few short runs, and its LR sensitivity.

A study says whether a recipe trained stably; it does not say how close it stood to the edge. So each
named recipe (``basic``, ``enhanced``, ``best``...) runs again at its lr x 2^k for a few k, every rung a
short run with the study's guards and the trials' horizon (``studies.execution.margin_runs``), until a
rung that survived sits next to one that diverged. The search starts where the study's runs say the
edge lies (``edge_hint``) and bisects on log2(lr) (``bracket``); with no hint it walks up from x1 by
x8. The answer per recipe: the largest multiplier that survived (``Outcome.survived``: every guard
judged the run and none fired; an unaligned rung survives too, the margin is about blowing up), the
first that diverged and how (guard, step), and, when the rungs start at x1, the LR sensitivity of
Wortsman et al. 2023 ("Small-scale proxies for large-scale Transformer training instabilities") over
the rungs tried:

    sensitivity = mean over rungs of [ min(L(rung), L0) - min over rungs of min(L(rung), L0) ]

with L the last eval's val mel (teacher forced, unweighted, so recipes with different loss weights
compare), L(rung) = infinity for a rung that diverged, and L0 the untrained model's val mel (the same
for every rung: same seed, same initial weights). 0: every lr tried trains as well as the best one;
L0 - L*: none trains at all. This module holds the search (pure: ``bracket``), the typed result and
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
from trainer.diagnosis import Diagnosis
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
    diagnosis: Diagnosis | None = None  # why a diverged rung diverged (trainer/diagnosis.py), from a replay

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
            "diagnosis": None if self.diagnosis is None else self.diagnosis.to_attr(),
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
            diagnosis=Diagnosis.from_attr(d["diagnosis"]) if isinstance(d.get("diagnosis"), dict) else None,
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
        """Wortsman's figure is a mean over lrs from the recipe's own up to the edge: None for a search
        that started near the edge and never ran x1 (its few rungs would make a different number)."""
        if not any(r.multiplier == 1.0 for r in self.rungs):
            return None
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
    """The full ladder: from x1, up by ``factor`` while each rung survives, or down while each diverges
    (``bracket`` from x1 with a stride of one rung)."""
    return bracket(
        run,
        base_lr=base_lr,
        factor=factor,
        max_multiplier=max_multiplier,
        min_multiplier=min_multiplier,
        max_lr=max_lr,
    )


def bracket(
    run: Callable[[float], Rung],
    *,
    base_lr: float,
    start: float = 1.0,
    stride: float = FACTOR,
    factor: float = FACTOR,
    max_multiplier: float = MAX_MULTIPLIER,
    min_multiplier: float = MIN_MULTIPLIER,
    max_lr: float = MAX_LR,
) -> tuple[Rung, ...]:
    """The rungs of one recipe, lowest multiplier first: ``run(multiplier)`` trains (or, in a test,
    pretends to) one rung. The multipliers are powers of ``factor``; the answer is a rung that survived
    next to one that diverged, one ``factor`` apart.

    From ``start`` (snapped to the grid: a guess of where the edge lies, so two rungs can answer),
    up by ``stride`` while each rung survives (never past ``max_multiplier``, nor ``max_lr``:
    TrainConfig's bound for the project's trainer), or down while each diverges (down to
    ``min_multiplier``); then bisection on log(multiplier) between the last rung that survived and the
    first that diverged, until they are one ``factor`` apart. It assumes what the ladder assumed: above
    an lr that diverged, a higher one diverges too. A rung that neither survived nor diverged (out of
    memory, unjudged) ends the search: it says nothing about stability."""
    if factor <= 1.0:
        raise ValueError(f"factor must be > 1, got {factor}")
    if stride < factor * (1 - 1e-9):
        raise ValueError(f"stride must be >= factor ({factor:g}), got {stride:g}")

    def grid(m: float) -> float:
        return math.log(m) / math.log(factor)

    top = math.floor(grid(min(max_multiplier, max_lr / base_lr)) + 1e-9)
    bottom = math.ceil(grid(min_multiplier) - 1e-9)
    step = max(1, round(grid(stride)))
    tried: dict[int, Rung] = {}

    def at(k: int) -> Rung:
        if k not in tried:
            tried[k] = run(factor**k)
        return tried[k]

    k = min(max(round(grid(start)), bottom), max(top, 0))
    survived: int | None = None
    diverged: int | None = None
    first = at(k)
    if first.outcome.survived:
        survived = k
        while k < top:
            k = min(k + step, top)
            rung = at(k)
            if rung.outcome.survived:
                survived = k
                continue
            diverged = k if rung.diverged else None
            break
    elif first.diverged:
        diverged = k
        while k > bottom:
            k = max(k - step, bottom)
            rung = at(k)
            if rung.diverged:
                diverged = k
                continue
            survived = k if rung.outcome.survived else None
            break
    while survived is not None and diverged is not None and diverged - survived > 1:
        mid = (survived + diverged) // 2
        rung = at(mid)
        if rung.outcome.survived:
            survived = mid
        elif rung.diverged:
            diverged = mid
        else:
            break
    return tuple(tried[k] for k in sorted(tried))


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
