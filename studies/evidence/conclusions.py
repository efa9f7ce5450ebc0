"""What the evidence concludes, from trial records: the points, the lr boundary, the rediscovery check, curves.

Pure functions over ``Point`` lists returning typed records (``ClipBucket``, ``Rediscovery``), so the
sentences a person reads ("the search moved lr the way the seed did") are tested on hand-made points,
not on whatever a short study happened to find; ``plots`` draws these records, ``report`` words them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from space import SearchSpace
from studies import ranking
from studies.paths import trial_run
from studies.ranking import Rank
from studies.record import TrialRecord, preset_trials
from trainer.outcome import Outcome
from trainer.telemetry import eval_series, step_series


@dataclass(frozen=True, slots=True)
class Point:
    """One finished trial as the plots see it."""

    number: int
    params: Mapping[str, Any]
    outcome: Outcome
    val_mel: float | None  # final value, or the last reported one for a pruned / diverged trial
    divergence_step: int | None = None
    marks: tuple[str, ...] = ()  # "basic", "enhanced", "best"
    rank: Rank | None = None  # its place in the study's one ranking (studies.ranking); None: by outcome

    def order(self) -> Rank:
        """Its rank key: the record's, or (a point made by hand) its outcome's and val mel's."""
        if self.rank is not None:
            return self.rank
        o = self.outcome
        return ranking.rank(
            feasible=o.feasible,
            aligned=o.aligned,
            diverged=o.diverged,
            speaks=False,
            rung=0,
            value=self.val_mel,
        )


@dataclass(frozen=True, slots=True)
class Curve:
    label: str
    steps: list[int]
    values: list[float]
    outcome: Outcome = Outcome.STABLE
    end_marker: tuple[int, float] | None = None  # (divergence step, value) for a diverged run
    highlight: str | None = None  # a MARK_COLOURS key: drawn thick and labelled


@dataclass(frozen=True, kw_only=True, slots=True)
class ClipBucket:
    """One log-spaced grad-clip range of the lr boundary: how many of its trials survived (every guard
    judged them and none fired: ``Outcome.survived``, not ``stable``), diverged or were unjudged, and where
    lr broke.

    In a space of the user's, ``x`` is the param the boundary is drawn along (``lr`` when there is one)
    and ``by`` the one it is bucketed by (None: no second numeric param, one bucket of every trial;
    clip_low / clip_high are then NaN); the field names keep the built-in space's words."""

    x: str = "lr"
    by: str | None = "grad_clip"
    clip_low: float
    clip_high: float
    trials: int
    survived: int  # Outcome.survived: judged, and no guard fired
    diverged: int
    unjudged: int
    max_survived_lr: float | None
    min_diverged_lr: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class KnobMove:
    """One knob of the rediscovery check: the seed's move against where the study's optimum sits."""

    knob: str
    enhanced: object
    basic: object
    seed_move: str  # "lower", "tighter", "switched off", "unchanged" ...
    best: object  # the best stable trial's value
    top_median: object  # the median of the best few stable trials
    where: str  # "below basic", "between them, nearer enhanced" ...
    agrees: bool | None  # None: the seed left the knob unchanged


@dataclass(frozen=True, kw_only=True, slots=True)
class Rediscovery:
    rows: tuple[KnobMove, ...] = ()
    n_stable: int = 0
    top_k: int = 0

    @property
    def total(self) -> int:
        """Knobs the seed moved."""
        return sum(r.agrees is not None for r in self.rows)

    @property
    def agree(self) -> int:
        """Of those, knobs the study's optimum moved the same way."""
        return sum(bool(r.agrees) for r in self.rows)


CLIP_BUCKETS = 4
PRESET_NAMES = ("basic", "enhanced")  # the built-in study's: the fix, and the recipe it replaced
TOP_K = 5  # the stable optimum is read as the median of the best few feasible trials, not one lucky trial
MARKED_PRESETS = ("basic", "enhanced")


def points(records: Sequence[TrialRecord], presets: Sequence[str] = MARKED_PRESETS) -> list[Point]:
    """Every finished trial as a Point; the newest trial of each preset and the best feasible are marked."""
    finished = [r for r in records if r.finished]
    best = ranking.best(finished)
    newest = {name: r.number for name, r in preset_trials(finished, presets).items()}
    out = []
    for r in finished:
        marks = [name for name, n in newest.items() if n == r.number]
        if best is not None and r.number == best.number:
            marks.append("best")
        out.append(
            Point(
                number=r.number,
                params=dict(r.params),
                outcome=r.outcome,
                val_mel=_finite(r.last_value),
                divergence_step=r.divergence.step if r.divergence is not None else None,
                marks=tuple(marks),
                rank=ranking.trial_rank(r),
            )
        )
    return out


def marked_trials(
    records: Sequence[TrialRecord], presets: Sequence[str] = MARKED_PRESETS
) -> dict[str, TrialRecord]:
    """basic, enhanced (the study's presets: the newest finished trial of each tag) and best, in that
    order, where they exist."""
    ordered = preset_trials(records, presets)
    best = ranking.best(records)
    if best is not None:
        ordered["best"] = best
    return ordered


def lr_boundary(
    pts: Sequence[Point],
    clip_range: tuple[float, float] | None,
    n_buckets: int = CLIP_BUCKETS,
    *,
    x: str = "lr",
    by: str | None = "grad_clip",
    log_by: bool = True,
) -> list[ClipBucket]:
    """Per log-spaced grad-clip bucket: the largest lr that survived and the smallest lr that diverged.

    It counts ``Outcome.survived`` (every guard judged the run and none fired: unaligned and pruned runs
    survive too; an unjudged one counts as neither), not ``stable``: the boundary is about training
    blowing up, not about training well. ``x`` / ``by``: the params in those roles (a user's space may have no grad clip:
    ``by`` None, ``clip_range`` None, one bucket of every trial); ``log_by``: log-spaced buckets (a
    linear param, a warmup from 0, gets even ones).
    """
    if by is None or clip_range is None:
        inside = [p for p in pts if x in p.params]
        return [_bucket(inside, x, None, math.nan, math.nan)]
    low, high = clip_range
    if log_by:
        edges = [low * (high / low) ** (i / n_buckets) for i in range(n_buckets + 1)]
    else:
        edges = [low + (high - low) * i / n_buckets for i in range(n_buckets + 1)]
    buckets = []
    for i in range(n_buckets):
        lo, hi = edges[i], edges[i + 1]
        inside = [p for p in pts if by in p.params and x in p.params]
        inside = [
            p
            for p in inside
            if lo <= float(p.params[by]) < hi or (i == n_buckets - 1 and float(p.params[by]) == hi)
        ]
        buckets.append(_bucket(inside, x, by, lo, hi))
    return buckets


def _bucket(inside: Sequence[Point], x: str, by: str | None, lo: float, hi: float) -> ClipBucket:
    survived = [float(p.params[x]) for p in inside if p.outcome.survived]
    diverged = [float(p.params[x]) for p in inside if p.outcome.diverged]
    return ClipBucket(
        x=x,
        by=by,
        clip_low=lo,
        clip_high=hi,
        trials=len(inside),
        survived=len(survived),
        diverged=len(diverged),
        unjudged=sum(p.outcome is Outcome.UNJUDGED for p in inside),
        max_survived_lr=max(survived) if survived else None,
        min_diverged_lr=min(diverged) if diverged else None,
    )


def _seed_direction(knob: str, basic: object, enhanced: object, space: SearchSpace) -> int:
    """+1 if the seed raised the knob going enhanced -> basic, -1 if it lowered it, 0 if unchanged."""
    if knob in space.switches:
        return 0 if bool(basic) == bool(enhanced) else (1 if basic else -1)
    b, e = float(basic), float(enhanced)
    return 0 if b == e else (1 if b > e else -1)


def _position(
    value: float, basic: float, enhanced: float, log: bool, names: tuple[str, str] = PRESET_NAMES
) -> str:
    lo_name, hi_name = names if basic < enhanced else names[::-1]
    lo, hi = sorted((basic, enhanced))
    if value < lo:
        return f"below {lo_name}"
    if value > hi:
        return f"above {hi_name}"
    if value == basic:
        return f"at {names[0]}"
    if value == enhanced:
        return f"at {names[1]}"
    span = (math.log(hi) - math.log(lo)) if log else (hi - lo)
    frac = ((math.log(value) - math.log(lo)) if log else (value - lo)) / span if span else 0.0
    near = lo_name if frac < 0.5 else hi_name
    return f"between them, nearer {near}"


def rediscovery(
    pts: Sequence[Point],
    basic: Mapping[str, Any],
    enhanced: Mapping[str, Any],
    space: SearchSpace,
    names: tuple[str, str] = PRESET_NAMES,
) -> Rediscovery:
    """Per knob: the seed's move (enhanced -> basic) against where the study's stable optimum sits.

    ``basic`` / ``enhanced`` are the presets' params on the study's scale (a user's study: its first
    preset, the one trusted, and its second, the one it replaced; ``names`` says theirs). The optimum
    is the best feasible trial and, less noisily, the median of the best ``TOP_K`` feasible trials; a
    knob "agrees" when that median lies on basic's side of enhanced (or, for a switch, is basic's).
    """
    stable = sorted(
        (p for p in pts if p.outcome.feasible and p.val_mel is not None), key=lambda p: (p.order(), p.number)
    )
    if not stable:
        return Rediscovery()
    top = stable[:TOP_K]
    rows = []
    for knob in space.param_names:
        direction = _seed_direction(knob, basic[knob], enhanced[knob], space)
        values = [p.params[knob] for p in top if knob in p.params]
        if knob in space.switches:
            on = sum(bool(v) for v in values)
            median: object = on * 2 > len(values)
            where = f"on in {on} of {len(values)}"
            agrees = bool(median) == bool(basic[knob]) if direction else None
        else:
            log = knob in space.log_params
            median = (
                math.exp(statistics.median(math.log(float(v)) for v in values))
                if log
                else statistics.median(float(v) for v in values)
            )
            where = _position(float(median), float(basic[knob]), float(enhanced[knob]), log, names)
            e = float(enhanced[knob])
            agrees = (float(median) - e) * direction > 0 if direction else None
        rows.append(
            KnobMove(
                knob=knob,
                enhanced=enhanced[knob],
                basic=basic[knob],
                seed_move=_move_words(knob, direction, space),
                best=top[0].params.get(knob),
                top_median=median,
                where=where,
                agrees=agrees,
            )
        )
    return Rediscovery(rows=tuple(rows), n_stable=len(stable), top_k=len(top))


def _move_words(knob: str, direction: int, space: SearchSpace) -> str:
    if direction == 0:
        return "unchanged"
    if knob in space.switches:
        return "switched on" if direction > 0 else "switched off"
    if knob == space.warmup_param:
        return "longer" if direction > 0 else "shorter"
    if knob == "grad_clip":
        return "looser" if direction > 0 else "tighter"
    return "higher" if direction > 0 else "lower"


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def val_curves(
    study_name: str,
    records: Sequence[TrialRecord],
    pts: list[Point],
    tele: Path | None,
    metric: str = "val_mel",
) -> list[Curve]:
    """Val mel (``metric``: its name in the telemetry) per trial from the telemetry (every eval), else
    the values reported to Optuna."""
    by_number = {r.number: r for r in records}
    curves = []
    for p in pts:
        series = eval_series(tele, trial_run(study_name, p.number), metric) if tele is not None else []
        if not series:
            series = sorted(by_number[p.number].intermediate.items())
        series = [(s, v) for s, v in series if v is not None and math.isfinite(v)]
        if not series:
            continue
        end = (p.divergence_step, series[-1][1]) if p.divergence_step is not None else None
        label = "/".join(p.marks) + f" (trial {p.number})" if p.marks else f"trial {p.number}"
        curves.append(
            Curve(
                label=label,
                steps=[s for s, _ in series],
                values=[v for _, v in series],
                outcome=p.outcome,
                end_marker=end,
                highlight=p.marks[-1] if p.marks else None,
            )
        )
    return curves


def grad_curves(study_name: str, marked: dict[str, TrialRecord], tele: Path | None) -> list[Curve]:
    """Pre-clip grad norm per step of the presets and the best: only the telemetry has it."""
    if tele is None:
        return []
    curves = []
    for name, r in marked.items():
        series = step_series(tele, trial_run(study_name, r.number), "grad_norm")
        pairs = [(step, norm) for step, norm in series if math.isfinite(norm)]
        if not pairs:
            continue
        step = r.divergence.step if r.divergence is not None else None
        curves.append(
            Curve(
                label=f"{name} (trial {r.number})",
                steps=[s for s, _ in pairs],
                values=[v for _, v in pairs],
                end_marker=(int(step), pairs[-1][1]) if step is not None else None,
                highlight=name,
            )
        )
    return curves
