"""The report's figures: plain matplotlib over plain data, one function per figure, each saved as a PNG.

Every function takes lists of numbers and labels (never an Optuna study), so a figure can be drawn
and tested without training anything, and a section with no data gets a sentence from the report
instead of an empty axis from here.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from studies.evidence.conclusions import ClipBucket, Curve, Point  # noqa: E402
from studies.evidence.lr_probe import ProbeResult  # noqa: E402
from studies.evidence.transfer import TransferRun  # noqa: E402
from studies.evidence.validate import Validation  # noqa: E402
from trainer.outcome import Outcome  # noqa: E402

DPI = 80
# Outcome -> marker. Diverged trials say their reason by shape; colour is always the study's metric.
MARKERS = {
    Outcome.STABLE: "o",
    Outcome.PRUNED: "s",
    Outcome.UNJUDGED: "d",
    Outcome.UNALIGNED: "h",
    Outcome.NO_STOP: "p",
    Outcome.NONFINITE: "X",
    Outcome.EXPLOSION: "^",
    Outcome.SPIKE: "v",
    Outcome.CEILING: "D",
    Outcome.COLLAPSE: "P",
}
# A curve's colour by outcome (an outcome not here, a diverged one, is red).
CURVE_COLOURS = {
    Outcome.STABLE: "tab:green",
    Outcome.PRUNED: "tab:gray",
    Outcome.UNALIGNED: "tab:olive",
    Outcome.NO_STOP: "tab:olive",
}
MARK_COLOURS = {"basic": "tab:blue", "enhanced": "tab:red", "best": "tab:green"}
OTHER_MARKS = ("tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:cyan")


def mark_colour(name: str) -> str:
    """The ring colour of a marked trial: the built-in presets' and the best's, else one per name (a
    user's presets may be called anything)."""
    if name in MARK_COLOURS:
        return MARK_COLOURS[name]
    return OTHER_MARKS[sum(map(ord, name)) % len(OTHER_MARKS)]


def _marker(outcome: Outcome) -> str:
    return MARKERS.get(outcome, "o")


def _mel_norm(points: Sequence[Point]) -> Normalize:
    values = [p.val_mel for p in points if p.val_mel is not None and math.isfinite(p.val_mel)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    return Normalize(vmin=low, vmax=high if high > low else low + 1e-6)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _scatter_outcomes(ax, points: Sequence[Point], x: str, y: str, norm: Normalize, metric: str):
    """Points grouped by outcome (one legend entry each); returns the mappable for a colour bar."""
    mappable = None
    for outcome in sorted({p.outcome for p in points}):
        group = [p for p in points if p.outcome == outcome and x in p.params and y in p.params]
        if not group:
            continue
        colours = [
            p.val_mel if p.val_mel is not None and math.isfinite(p.val_mel) else math.nan for p in group
        ]
        diverged = outcome.diverged
        sc = ax.scatter(
            [float(p.params[x]) for p in group],
            [float(p.params[y]) for p in group],
            c=colours,
            cmap="viridis",
            norm=norm,
            marker=_marker(outcome),
            s=70 if diverged else 50,
            edgecolors="red" if diverged else "black",
            linewidths=1.2 if diverged else 0.5,
            plotnonfinite=True,
            label=outcome.meaning(metric),
        )
        mappable = sc
    return mappable


def _mark(ax, points: Sequence[Point], x: str, y: str) -> None:
    for p in points:
        for name in p.marks:
            if x in p.params and y in p.params:
                px, py = float(p.params[x]), float(p.params[y])
                colour = mark_colour(name)
                ax.scatter([px], [py], s=260, facecolors="none", edgecolors=colour, linewidths=2)
                ax.annotate(name, (px, py), textcoords="offset points", xytext=(8, 8), color=colour)


def stability_map(
    points: Sequence[Point],
    path: Path,
    *,
    probe_lr: float | None = None,
    boundary: Sequence[ClipBucket] = (),
    x: str = "lr",
    panels: Sequence[tuple[str, bool]] = (("grad_clip", True), ("mel_weight", True), ("warmup_steps", False)),
    log_x: bool = True,
    metric: str = "val mel",
) -> Path:
    """``x`` (the lr) against each of ``panels`` ((param, log scale); the built-in space's grad clip, mel
    weight and warmup): marker = outcome, colour = the metric, presets ringed. No panels (a space with
    one numeric param): ``x`` against the metric itself."""
    shown = list(panels) or [("", False)]
    fig, axes = plt.subplots(1, len(shown), figsize=(max(9.0, 5.7 * len(shown)), 5.2), squeeze=False)
    axes = axes[0]
    norm = _mel_norm(points)
    mappable = None
    by = boundary[0].by if boundary else None
    for ax, (y, log_y) in zip(axes, shown, strict=True):
        pts = points if y else [_with_metric(p) for p in points]
        y_key = y or METRIC_KEY
        mappable = _scatter_outcomes(ax, pts, x, y_key, norm, metric) or mappable
        _mark(ax, pts, x, y_key)
        if probe_lr is not None:
            ax.axvline(probe_lr, color="orange", linestyle="--", label=f"lr probe diverged ({probe_lr:.2g})")
        if y and y == by:
            for b in boundary:
                lo, hi = b.clip_low, b.clip_high
                if b.max_survived_lr is not None:
                    ax.plot([b.max_survived_lr] * 2, [lo, hi], color="green", linewidth=3, alpha=0.6)
                if b.min_diverged_lr is not None:
                    ax.plot([b.min_diverged_lr] * 2, [lo, hi], color="red", linewidth=3, alpha=0.6)
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels on a log axis overprint each other
        if log_y:
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("peak learning rate" if x == "lr" else x.replace("_", " "))
        ax.set_ylabel(y.replace("_", " ") if y else metric)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    if mappable is not None:
        fig.colorbar(mappable, ax=list(axes), label=f"{metric} (lower is better)", shrink=0.9)
    fig.suptitle(f"stability map: marker = outcome (red edge: diverged, by reason), colour = {metric}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)  # no tight_layout: it fights the shared colour bar
    plt.close(fig)
    return path


METRIC_KEY = "\0metric"  # a map panel without a second param plots the metric on y


def _with_metric(p: Point) -> Point:
    if p.val_mel is None:
        return p
    return dataclasses.replace(p, params={**p.params, METRIC_KEY: p.val_mel})


def boundary_plot(buckets: Sequence[ClipBucket], path: Path, *, probe_lr: float | None = None) -> Path:
    """Per grad-clip bucket: the largest lr that survived and the smallest that diverged."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = [f"{b.clip_low:.2g}-{b.clip_high:.2g}" if b.by else "all trials" for b in buckets]
    x, by = (buckets[0].x, buckets[0].by) if buckets else ("lr", "grad_clip")
    x_words = "peak learning rate" if x == "lr" else x.replace("_", " ")
    xs = list(range(len(buckets)))
    survived = [b.max_survived_lr or math.nan for b in buckets]
    diverged = [b.min_diverged_lr or math.nan for b in buckets]
    ax.plot(xs, survived, "^-", color="green", markersize=10, label=f"largest {x} that survived")
    ax.plot(xs, diverged, "v-", color="red", markersize=10, label=f"smallest {x} that diverged")
    if probe_lr is not None:
        ax.axhline(probe_lr, color="orange", linestyle="--", label=f"lr probe diverged ({probe_lr:.2g})")
    ax.set_xticks(xs, labels)
    if any(math.isfinite(v) and v > 0 for v in survived + diverged):  # else no trial was judged: no scale
        ax.set_yscale("log")
    ax.set_xlabel("gradient clip bucket (global norm)" if by == "grad_clip" else f"{by or 'no'} bucket")
    ax.set_ylabel(x_words)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"the {x} boundary" + (f" per {by.replace('_', ' ')} bucket" if by else ""))
    return _save(fig, path)


def curves_plot(curves: Sequence[Curve], path: Path, *, ylabel: str, title: str, log_y: bool = False) -> Path:
    """Lines per run; highlighted runs thick and labelled; a diverged run ends in an x at its step."""
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for c in sorted(curves, key=lambda c: c.highlight is not None):
        colour = mark_colour(c.highlight) if c.highlight else CURVE_COLOURS.get(c.outcome, "tab:red")
        width, alpha = (2.4, 1.0) if c.highlight else (1.0, 0.5)
        ax.plot(
            c.steps,
            c.values,
            color=colour,
            linewidth=width,
            alpha=alpha,
            label=c.label if c.highlight else None,
        )
        if c.end_marker is not None:
            ax.plot(*c.end_marker, "x", color="red", markersize=9, markeredgewidth=2)
    ax.plot([], [], "x", color="red", label="diverged here")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def importance_plot(importances: dict[str, dict[str, float]], path: Path) -> Path:
    """One horizontal bar chart per target ("val mel", "divergence")."""
    fig, axes = plt.subplots(1, len(importances), figsize=(6 * len(importances), 4), squeeze=False)
    for ax, (title, values) in zip(axes[0], importances.items(), strict=True):
        items = sorted(values.items(), key=lambda kv: kv[1])
        ax.barh([k for k, _ in items], [v if math.isfinite(v) else 0.0 for _, v in items], color="tab:blue")
        ax.set_title(f"importance for {title} (PED-ANOVA)")
        ax.set_xlabel("importance")
    return _save(fig, path)


def slice_plot(
    points: Sequence[Point],
    knobs: Sequence[str],
    path: Path,
    *,
    log_knobs: Sequence[str] = (),
    metric: str = "val mel",
) -> Path:
    """Val mel against each knob, marker = outcome as on the map; a trial that diverged before any
    eval has no val mel, so it is drawn as a red x on a band above the others (its knob still shows)."""
    cols = 3
    rows = math.ceil(len(knobs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(15, 3.3 * rows), squeeze=False)
    finite = [p.val_mel for p in points if p.val_mel is not None]
    top = (max(finite) + 0.1 * (max(finite) - min(finite) + 0.1)) if finite else 1.0
    for ax, knob in zip(axes.flat, knobs, strict=False):
        switch = any(isinstance(p.params.get(knob), bool) for p in points)
        # A categorical knob of a user's space (an optimizer's name): one column per choice.
        words = sorted({str(v) for p in points if isinstance(v := p.params.get(knob), str)})
        at = functools.partial(_slice_x, {w: i for i, w in enumerate(words)})
        for outcome in sorted({p.outcome for p in points}):
            group = [p for p in points if p.outcome == outcome and knob in p.params and p.val_mel is not None]
            ax.scatter(
                [at(p.params[knob]) for p in group],
                [p.val_mel for p in group],
                marker=_marker(outcome),
                edgecolors="red" if outcome.diverged else "black",
                s=35,
                label=outcome.meaning(metric),
            )
        lost = [at(p.params[knob]) for p in points if knob in p.params and p.val_mel is None]
        if lost:
            ax.scatter(lost, [top] * len(lost), marker="x", color="red", label="diverged before any eval")
        if knob in log_knobs:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        if switch:
            ax.set_xticks([0, 1], ["off", "on"])
            ax.set_xlim(-0.5, 1.5)
        if words:
            ax.set_xticks(range(len(words)), words)
            ax.set_xlim(-0.5, len(words) - 0.5)
        ax.set_title(knob)
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(knobs) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    return _save(fig, path)


def _slice_x(position: Mapping[str, int], value: object) -> float:
    """Where a knob's value sits on its slice: a choice's column, or the number itself."""
    return float(position[value]) if isinstance(value, str) else float(value)


def lr_probe_plot(lrs: Sequence[float], losses: Sequence[float], path: Path, *, probe: ProbeResult) -> Path:
    """The range test's loss against its exponentially rising lr, the divergence lr as a line."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    finite = [(lr, v) for lr, v in zip(lrs, losses, strict=True) if math.isfinite(v)]
    ax.plot([lr for lr, _ in finite], [v for _, v in finite], color="tab:blue", label="training loss")
    if probe.divergence_lr:
        ax.axvline(probe.divergence_lr, color="red", linestyle="--", label=f"diverged ({probe.verdict})")
    if probe.min_loss_lr:
        ax.axvline(probe.min_loss_lr, color="green", linestyle=":", label="lowest smoothed loss")
    ax.set_xscale("log")
    if finite and min(v for _, v in finite) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("learning rate (rises each step)")
    ax.set_ylabel("loss (weighted total)")
    ax.set_title("lr range test")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def validation_plot(results: Mapping[str, Validation], path: Path) -> Path:
    """Val mel of every validation seed per preset; diverged seeds drawn as red x at the top."""
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(results)
    finite = [r.val_mel for v in results.values() for r in v.runs if r.val_mel is not None]
    top = max(finite) * 1.05 if finite else 1.0
    for i, name in enumerate(names):
        for r in results[name].runs:
            if r.diverged:
                ax.plot(i, top, "x", color="red", markersize=10, markeredgewidth=2)
            elif r.val_mel is not None:
                ax.plot(i, r.val_mel, "o", color=MARK_COLOURS.get(name, "tab:purple"))
    ax.plot([], [], "x", color="red", label="diverged seed")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("val mel at the end")
    ax.set_title("validation: one point per seed")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def transfer_plot(runs: Sequence[TransferRun], path: Path) -> Path:
    """Short-trial rank against the long run's decode ratio; a long run that diverged sits on a red
    band above, one that speaks is filled green."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ratios = [r.long.decode_ratio for r in runs if r.long.decode_ratio is not None]
    top = (max(ratios) if ratios else 1.0) + 0.15
    for r in runs:
        y = top if r.long.diverged else r.long.decode_ratio
        if y is None:
            continue
        colour = "red" if r.long.diverged else ("tab:green" if r.long.speaks else "white")
        ax.scatter(r.short_rank, y, marker=_marker(r.short_outcome), c=colour, edgecolors="black", s=60)
        ax.annotate(
            str(r.preset or r.number),
            (r.short_rank, y),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.axhline(1.0, color="grey", linestyle=":", label="decode ratio 1: no closer than a constant frame")
    ax.axhline(top, color="red", alpha=0.3, label="diverged in the long run")
    ax.set_xlabel("rank in the study after the short trial (1 = best; marker = its short outcome)")
    ax.set_ylabel("long run: decode ratio (0 = same words, other rate)")
    ax.set_title("does the short trial predict the long run?")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
