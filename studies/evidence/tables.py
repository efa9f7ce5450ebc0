"""The tables a person reads, as plain rows: the terminal summary and the HTML report draw the same ones.

Each function returns a ``Rows`` (title, head, rows of strings); ``to_rich`` renders it for a
terminal, ``report_html.table`` for the page. A table written once cannot say two things.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rich.table import Table

from studies import ranking
from studies.display import fmt, fmt_value, shown_step, speech_words
from studies.evidence.conclusions import ClipBucket, Rediscovery
from studies.evidence.margin import Margin, fmt_multiplier
from studies.evidence.rests_on import rests_on
from studies.evidence.transfer import TransferCheck
from studies.evidence.validate import Validation
from studies.record import TrialRecord


@dataclass(frozen=True, slots=True)
class Rows:
    title: str
    head: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def to_rich(t: Rows) -> Table:
    table = Table(title=t.title)
    for col in t.head:
        table.add_column(col)
    for row in t.rows:
        table.add_row(*row)
    return table


def _dash(x: object) -> str:
    return "-" if x is None else fmt(x)


def top_feasible(
    records: Sequence[TrialRecord],
    param_names: Sequence[str],
    k: int = 5,
    *,
    metric: str = "val mel",
    speech: bool = False,
) -> Rows:
    """The best feasible trials in the study's one ranking (``studies.ranking``): its first row is the
    trial the export takes. ``speech``: the study judges speech, so the rung and the decode show too."""
    top = [r for r in ranking.ranked(records) if r.feasible and r.value is not None][:k]
    extra = ("rung", "speech") if speech else ()
    rows = tuple(
        (
            str(r.number),
            f"{r.value:.4f}",
            *((str(r.rung or 0), speech_words(r)) if speech else ()),
            *(fmt(r.params.get(p)) for p in param_names),
        )
        for r in top
    )
    order = "speaks, then deeper rung, then lowest " + metric if speech else "lowest " + metric
    return Rows(f"top feasible trials, best first ({order})", ("#", metric, *extra, *param_names), rows)


def side_by_side(
    columns: Mapping[str, TrialRecord],
    param_names: Sequence[str],
    validation: Mapping[str, Validation] | None = None,
    *,
    metric: str = "val mel",
    project: bool = True,
) -> Rows:
    """The presets and the best, a column each; with ``validation``, their multi-seed results below.
    ``project``: the project's trainer (speech and the seed's own signs); a user's trainer shows which
    guards were off instead."""
    lines: list[tuple[str, Callable[[TrialRecord], str]]] = [("trial", lambda r: str(r.number))]
    lines += [(p, lambda r, p=p: fmt(r.params.get(p))) for p in param_names]
    lines += [("verdict", lambda r: r.outcome.value)]
    lines += [("speech (decode ratio)", speech_words)] if project else []
    lines += [
        ("divergence step", lambda r: _dash(r.divergence.step if r.divergence else None)),
        (metric, lambda r: fmt_value(r.last_value)),
        (
            "aligned (over KL prior)" if project else "alignment",
            lambda r: _dash(r.over_prior if project else r.diagonality),
        ),
    ]
    if project:
        lines += [
            ("seed: loss in 1..10", lambda r: _dash(r.seed_loss_in_1_10)),
            ("seed: grad norm < 1", lambda r: _dash(r.seed_grad_norm_below_1)),
        ]
    else:
        lines += [("guards off (no signal)", lambda r: ", ".join(r.guards_off or ()) or "-")]
    rows = [(label, *(get(r) for r in columns.values())) for label, get in lines]
    if validation is not None:
        for label, show in validation_lines(metric):
            rows.append((label, *(show(validation[n]) if n in validation else "not run" for n in columns)))
    return Rows("the presets and the best, side by side", ("", *columns), tuple(rows))


def fmt_mel(v: Validation) -> str:
    if v.val_mel_mean is None:
        return "-"
    return f"{v.val_mel_mean:.4f} ± {v.val_mel_std:.4f}"


def _of(count: int, v: Validation) -> str:
    return f"{count} of {len(v.runs)}"


def validation_lines(metric: str) -> tuple[tuple[str, Callable[[Validation], str]], ...]:
    """The side-by-side table's validation rows, the study's metric named."""
    return (
        ("validation: diverged", lambda v: _of(v.diverged, v)),
        ("validation: divergence steps", lambda v: ", ".join(map(str, v.divergence_steps)) or "-"),
        ("validation: stable", lambda v: _of(v.stable, v)),
        (f"validation: {metric} mean ± std", fmt_mel),
        ("validation: steps", lambda v: str(v.steps)),
    )


def validation(results: Mapping[str, Validation], *, metric: str = "val mel") -> Rows:
    """One row per validated recipe: seeds, steps, divergence rate and steps, stable count, val mel."""
    rows = tuple(
        (
            v.label,
            ", ".join(map(str, v.seeds)),
            str(v.steps),
            f"{_of(v.diverged, v)} ({v.divergence_rate:.0%})",
            ", ".join(map(str, v.divergence_steps)) or "-",
            _of(v.stable, v),
            fmt_mel(v),
        )
        for v in results.values()
    )
    head = ("recipe", "seeds", "steps", "diverged", "divergence steps", "stable", f"{metric} (mean ± std)")
    return Rows("validation: each recipe over several seeds, longer than a trial", head, rows)


def transfer(check: TransferCheck) -> Rows:
    """One row per long run of a transfer check, in the short ranking's order."""
    rows = tuple(
        (
            str(r.number),
            r.preset or "",
            str(r.short_rank),
            r.short_outcome.value,
            r.long.verdict.value,
            _dash(r.long.divergence_step),
            _dash(r.long.decode_ratio),
            "yes" if r.long.speaks else "no",
            r.long.where,
        )
        for r in check.runs
    )
    head = (
        "trial",
        "preset",
        "short rank",
        "short outcome",
        "long verdict",
        "divergence step",
        "decode ratio",
        "speaks",
        "long run",
    )
    return Rows(f"transfer check: long runs of {check.horizon}", head, rows)


def boundary(buckets: Sequence[ClipBucket]) -> Rows:
    """The lr boundary per grad-clip bucket (a user's space: its x param per bucket of its ``by``); it
    counts runs that survived (``Outcome.survived``), and says so in its head."""
    x, by = (buckets[0].x, buckets[0].by) if buckets else ("lr", "grad_clip")
    rows = tuple(
        (
            f"{b.clip_low:.3g} - {b.clip_high:.3g}" if b.by else "all trials",
            str(b.trials),
            f"{b.survived} / {b.diverged} / {b.unjudged}",
            "-" if b.max_survived_lr is None else f"{b.max_survived_lr:.3g}",
            "-" if b.min_diverged_lr is None else f"{b.min_diverged_lr:.3g}",
        )
        for b in buckets
    )
    head = (
        (by or "").replace("_", " ") or "bucket",
        "trials",
        "survived / diverged / unjudged",
        f"largest {x} that survived",
        f"smallest {x} that diverged",
    )
    judged = sum(b.survived + b.diverged for b in buckets)
    title = (
        f"{x} boundary (survived: every guard judged the run, none fired); {rests_on(judged, 'judged trial')}"
    )
    return Rows(title, head, rows)


def rediscovery(
    r: Rediscovery, names: tuple[str, str] = ("basic", "enhanced"), *, project: bool = True
) -> Rows:
    """Per knob: the seed's move (a user's study, ``project`` False: theirs, second preset -> first) and
    where the study's best sits."""
    rows = tuple(
        (
            x.knob,
            fmt(x.enhanced),
            fmt(x.basic),
            x.seed_move,
            fmt(x.best),
            fmt(x.top_median),
            x.where,
            {True: "yes", False: "no", None: "-"}[x.agrees],
        )
        for x in r.rows
    )
    moved, way = ("seed moved it", "seed's way?") if project else ("you moved it", "your way?")
    head = ("knob", names[1], names[0], moved, "best", f"median of top {r.top_k}")
    return Rows("rediscovery", (*head, "where the optimum sits", way), rows)


def promoted(records: Sequence[TrialRecord]) -> Rows:
    """The trials promoted to the long rung: their screen next to where the long rung left them."""
    rows = tuple(
        (
            str(r.number),
            r.screen.verdict.value,
            fmt_value(r.screen.val_mel),
            _dash(r.screen.decode_ratio),
            r.outcome.value,
            fmt_value(r.last_value),
            speech_words(r),
            shown_step(r),
        )
        for r in records
        if r.promoted and r.screen is not None
    )
    head = (
        "trial",
        "screen",
        "screen val mel",
        "screen decode ratio",
        "long rung",
        "val mel",
        "speech",
        "step",
    )
    return Rows("trials promoted to the speech rung", head, rows)


def margin(margins: Mapping[str, Margin], *, project: bool = True) -> Rows:
    """One row per recipe: its lr, the rungs it climbed, the largest that survived and where it broke."""
    rows = []
    for m in margins.values():
        top, edge = m.largest_survived, m.first_diverged
        rungs = " ".join(
            f"{fmt_multiplier(r.multiplier)}{'' if r.outcome.survived else ('!' if r.diverged else '?')}"
            for r in m.rungs
        )
        # at the largest lr that survived: how near fp16's range the recipe trains at its edge (the x1
        # figure is the seed's answer's, from the recipe's trial)
        room = min((h for h in top.headroom.values() if math.isfinite(h)), default=None) if top else None
        rows.append(
            (
                m.label,
                f"{m.base_lr:.2g}",
                str(m.steps),
                rungs,
                "-" if top is None else f"{fmt_multiplier(top.multiplier)} (lr {top.lr:.2g})",
                "-"
                if edge is None
                else f"{fmt_multiplier(edge.multiplier)}: {edge.divergence_kind} at step {edge.divergence_step}",
                _dash(m.sensitivity),
                _dash(room),
            )[: None if project else -2]  # your trainer: no untrained baseline, no fp16 peaks
        )
    head = (
        "recipe",
        "lr",
        "steps a run",
        "multipliers tried (! diverged, ? neither)",
        "largest that survived",
        "first diverged",
        "LR sensitivity",
        "fp16 headroom there (log2)",
    )[: None if project else -2]
    title = (
        "margin: the recipe at lr x 2^k, the largest that survived next to the first that diverged "
        "(survived: every guard judged, none fired)"
    )
    return Rows(title, head, tuple(rows))
