"""What the report concludes, computed from plain trial records: the lr boundary and the rediscovery check.

Pure functions over ``plots.Point`` lists, so the sentences a person reads ("the search moved lr the
way the seed did") are tested on hand-made points, not on whatever a short study happened to find.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from space.stability import LOG_FLOATS, PARAM_NAMES, SWITCHES, WARMUP
from studies.live import feasible, last_value, outcome
from studies.plots import Curve, Point
from studies.presets_seed import PRESET_ATTR
from studies.runner import FINISHED
from studies.summary import best_feasible
from trainer.telemetry import read_evals, read_steps

CLIP_BUCKETS = 4
TOP_K = 5  # the stable optimum is read as the median of the best few feasible trials, not one lucky trial


def points(study: optuna.Study) -> list[Point]:
    """Every finished trial as a Point; the newest trial of each preset and the best feasible are marked."""
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    best = best_feasible(study)
    newest: dict[str, int] = {}
    for t in finished:
        if PRESET_ATTR in t.user_attrs:
            newest[str(t.user_attrs[PRESET_ATTR])] = t.number
    out = []
    for t in finished:
        marks = [name for name, n in newest.items() if n == t.number and name in ("basic", "enhanced")]
        if best is not None and t.number == best.number:
            marks.append("best")
        step = t.user_attrs.get("divergence_step")
        out.append(
            Point(
                number=t.number,
                params=dict(t.params),
                outcome=outcome(t),
                val_mel=_finite(last_value(t)),
                divergence_step=int(step) if step is not None else None,
                marks=tuple(marks),
            )
        )
    return out


def marked_trials(study: optuna.Study) -> dict[str, FrozenTrial]:
    """basic, enhanced (newest finished trial of each tag) and best, in that order, where they exist."""
    found: dict[str, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=FINISHED):
        name = t.user_attrs.get(PRESET_ATTR)
        if name in ("basic", "enhanced"):
            found[str(name)] = t
    ordered = {k: found[k] for k in ("basic", "enhanced") if k in found}
    best = best_feasible(study)
    if best is not None:
        ordered["best"] = best
    return ordered


def lr_boundary(pts: Sequence[Point], n_buckets: int = CLIP_BUCKETS) -> list[dict]:
    """Per log-spaced grad-clip bucket: the largest lr no guard stopped and the smallest lr one did.

    "Stable" here means no divergence guard fired (pruned-for-mel and finished-but-unaligned trials
    count as stable): the boundary is about training blowing up, not about training well.
    """
    from space.stability import GRAD_CLIP_RANGE

    low, high = GRAD_CLIP_RANGE
    edges = [low * (high / low) ** (i / n_buckets) for i in range(n_buckets + 1)]
    buckets = []
    for i in range(n_buckets):
        lo, hi = edges[i], edges[i + 1]
        inside = [p for p in pts if "grad_clip" in p.params and "lr" in p.params]
        inside = [
            p
            for p in inside
            if lo <= float(p.params["grad_clip"]) < hi
            or (i == n_buckets - 1 and float(p.params["grad_clip"]) == hi)
        ]
        stable = [float(p.params["lr"]) for p in inside if not p.outcome.startswith("diverged")]
        diverged = [float(p.params["lr"]) for p in inside if p.outcome.startswith("diverged")]
        buckets.append(
            {
                "clip_low": lo,
                "clip_high": hi,
                "trials": len(inside),
                "stable": len(stable),
                "diverged": len(diverged),
                "max_stable_lr": max(stable) if stable else None,
                "min_diverged_lr": min(diverged) if diverged else None,
            }
        )
    return buckets


def _seed_direction(knob: str, basic: object, enhanced: object) -> int:
    """+1 if the seed raised the knob going enhanced -> basic, -1 if it lowered it, 0 if unchanged."""
    if knob in SWITCHES:
        return 0 if bool(basic) == bool(enhanced) else (1 if basic else -1)
    b, e = float(basic), float(enhanced)
    return 0 if b == e else (1 if b > e else -1)


def _position(value: float, basic: float, enhanced: float, log: bool) -> str:
    lo_name, hi_name = ("basic", "enhanced") if basic < enhanced else ("enhanced", "basic")
    lo, hi = sorted((basic, enhanced))
    if value < lo:
        return f"below {lo_name}"
    if value > hi:
        return f"above {hi_name}"
    if value == basic:
        return "at basic"
    if value == enhanced:
        return "at enhanced"
    span = (math.log(hi) - math.log(lo)) if log else (hi - lo)
    frac = ((math.log(value) - math.log(lo)) if log else (value - lo)) / span if span else 0.0
    near = lo_name if frac < 0.5 else hi_name
    return f"between them, nearer {near}"


def rediscovery(pts: Sequence[Point], basic: dict, enhanced: dict) -> dict:
    """Per knob: the seed's move (enhanced -> basic) against where the study's stable optimum sits.

    ``basic`` / ``enhanced`` are the presets' params on the study's scale. The optimum is the best
    feasible trial and, less noisily, the median of the best ``TOP_K`` feasible trials; a knob
    "agrees" when that median lies on basic's side of enhanced (or, for a switch, is basic's).
    """
    stable = sorted(
        (p for p in pts if p.outcome == "stable" and p.val_mel is not None), key=lambda p: p.val_mel
    )
    if not stable:
        return {"rows": [], "agree": 0, "total": 0, "n_stable": 0}
    top = stable[:TOP_K]
    rows = []
    for knob in PARAM_NAMES:
        direction = _seed_direction(knob, basic[knob], enhanced[knob])
        best_value = top[0].params.get(knob)
        values = [p.params[knob] for p in top if knob in p.params]
        if knob in SWITCHES:
            on = sum(bool(v) for v in values)
            median: object = on * 2 > len(values)
            where = f"on in {on} of {len(values)}"
            agrees = bool(median) == bool(basic[knob]) if direction else None
        else:
            log = knob in LOG_FLOATS
            median = (
                math.exp(statistics.median(math.log(float(v)) for v in values))
                if log
                else statistics.median(float(v) for v in values)
            )
            where = _position(float(median), float(basic[knob]), float(enhanced[knob]), log)
            e = float(enhanced[knob])
            agrees = (float(median) - e) * direction > 0 if direction else None
        rows.append(
            {
                "knob": knob,
                "enhanced": enhanced[knob],
                "basic": basic[knob],
                "seed_move": _move_words(knob, direction),
                "best": best_value,
                "top_median": median,
                "where": where,
                "agrees": agrees,
            }
        )
    judged = [r for r in rows if r["agrees"] is not None]
    return {
        "rows": rows,
        "agree": sum(bool(r["agrees"]) for r in judged),
        "total": len(judged),
        "n_stable": len(stable),
        "top_k": len(top),
    }


def _move_words(knob: str, direction: int) -> str:
    if direction == 0:
        return "unchanged"
    if knob in SWITCHES:
        return "switched on" if direction > 0 else "switched off"
    if knob == WARMUP:
        return "longer" if direction > 0 else "shorter"
    if knob == "grad_clip":
        return "looser" if direction > 0 else "tighter"
    return "higher" if direction > 0 else "lower"


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def feasible_count(study: optuna.Study) -> int:
    return sum(feasible(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def val_curves(study: optuna.Study, pts: list[Point], tele: Path | None) -> list[Curve]:
    """Val mel per trial from the telemetry (every eval), else the values reported to Optuna."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    curves = []
    for p in pts:
        evals = read_evals(tele, f"{study.study_name}/trial-{p.number}") if tele is not None else []
        series = [(e["step"], e["val_mel"]) for e in evals if "val_mel" in e]
        if not series:
            series = sorted(trials[p.number].intermediate_values.items())
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


def grad_curves(study_name: str, marked: dict, tele: Path | None) -> list[Curve]:
    """Pre-clip grad norm per step of the presets and the best: only the telemetry has it."""
    if tele is None:
        return []
    curves = []
    for name, t in marked.items():
        rows = read_steps(tele, f"{study_name}/trial-{t.number}")
        pairs = [
            (r["step"], r["grad_norm"])
            for r in rows
            if r["grad_norm"] is not None and math.isfinite(r["grad_norm"])
        ]
        if not pairs:
            continue
        step = t.user_attrs.get("divergence_step")
        curves.append(
            Curve(
                label=f"{name} (trial {t.number})",
                steps=[s for s, _ in pairs],
                values=[v for _, v in pairs],
                end_marker=(int(step), pairs[-1][1]) if step is not None else None,
                highlight=name,
            )
        )
    return curves
