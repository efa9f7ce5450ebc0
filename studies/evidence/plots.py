"""The report's figures: plain matplotlib over plain data, one function per figure, each saved as a PNG.

Every function takes lists of numbers and labels (never an Optuna study), so a figure can be drawn
and tested without training anything, and a section with no data gets a sentence from the report
instead of an empty axis from here.
"""

from __future__ import annotations

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

DPI = 80
# Outcome -> marker. Diverged trials say their reason by shape; colour is always val mel.
MARKERS = {
    "stable": "o",
    "pruned": "s",
    "unjudged": "d",
    "unaligned": "h",
    "no-stop": "p",
    "diverged:nonfinite": "X",
    "diverged:explosion": "^",
    "diverged:spike": "v",
    "diverged:ceiling": "D",
    "diverged:collapse": "P",
    "diverged:decode": "*",
}
LABELS = {
    "unaligned": "finished, attention unaligned",
    "no-stop": "finished, decode does not stop",
    "pruned": "pruned for mel",
    "unjudged": "pruned before the guards could judge it",
}
MARK_COLOURS = {"basic": "tab:blue", "enhanced": "tab:red", "best": "tab:green"}


def _marker(outcome: str) -> str:
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


def _scatter_outcomes(ax, points: Sequence[Point], x: str, y: str, norm: Normalize):
    """Points grouped by outcome (one legend entry each); returns the mappable for a colour bar."""
    mappable = None
    for outcome in sorted({p.outcome for p in points}):
        group = [p for p in points if p.outcome == outcome and x in p.params and y in p.params]
        if not group:
            continue
        colours = [
            p.val_mel if p.val_mel is not None and math.isfinite(p.val_mel) else math.nan for p in group
        ]
        diverged = outcome.startswith("diverged")
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
            label=LABELS.get(outcome, outcome),
        )
        mappable = sc
    return mappable


def _mark(ax, points: Sequence[Point], x: str, y: str) -> None:
    for p in points:
        for name in p.marks:
            if x in p.params and y in p.params:
                px, py = float(p.params[x]), float(p.params[y])
                ax.scatter([px], [py], s=260, facecolors="none", edgecolors=MARK_COLOURS[name], linewidths=2)
                ax.annotate(
                    name, (px, py), textcoords="offset points", xytext=(8, 8), color=MARK_COLOURS[name]
                )


def stability_map(
    points: Sequence[Point], path: Path, *, probe_lr: float | None = None, boundary: Sequence[ClipBucket] = ()
) -> Path:
    """lr against grad clip, mel weight and warmup: marker = outcome, colour = val mel, presets ringed."""
    panels = (("grad_clip", True), ("mel_weight", True), ("warmup_steps", False))
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    norm = _mel_norm(points)
    mappable = None
    for ax, (y, log_y) in zip(axes, panels, strict=True):
        mappable = _scatter_outcomes(ax, points, "lr", y, norm) or mappable
        _mark(ax, points, "lr", y)
        if probe_lr is not None:
            ax.axvline(probe_lr, color="orange", linestyle="--", label=f"lr probe diverged ({probe_lr:.2g})")
        if y == "grad_clip":
            for b in boundary:
                lo, hi = b.clip_low, b.clip_high
                if b.max_stable_lr is not None:
                    ax.plot([b.max_stable_lr] * 2, [lo, hi], color="green", linewidth=3, alpha=0.6)
                if b.min_diverged_lr is not None:
                    ax.plot([b.min_diverged_lr] * 2, [lo, hi], color="red", linewidth=3, alpha=0.6)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels on a log axis overprint each other
        if log_y:
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel(y.replace("_", " "))
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    if mappable is not None:
        fig.colorbar(mappable, ax=axes, label="val mel (L1, lower is better)", shrink=0.9)
    fig.suptitle("stability map: marker = outcome (red edge: diverged, by reason), colour = val mel")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)  # no tight_layout: it fights the shared colour bar
    plt.close(fig)
    return path


def boundary_plot(buckets: Sequence[ClipBucket], path: Path, *, probe_lr: float | None = None) -> Path:
    """Per grad-clip bucket: the largest lr that stayed stable and the smallest that diverged."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = [f"{b.clip_low:.2g}-{b.clip_high:.2g}" for b in buckets]
    xs = list(range(len(buckets)))
    stable = [b.max_stable_lr or math.nan for b in buckets]
    diverged = [b.min_diverged_lr or math.nan for b in buckets]
    ax.plot(xs, stable, "^-", color="green", markersize=10, label="largest stable lr")
    ax.plot(xs, diverged, "v-", color="red", markersize=10, label="smallest diverged lr")
    if probe_lr is not None:
        ax.axhline(probe_lr, color="orange", linestyle="--", label=f"lr probe diverged ({probe_lr:.2g})")
    ax.set_xticks(xs, labels)
    ax.set_yscale("log")
    ax.set_xlabel("gradient clip bucket (global norm)")
    ax.set_ylabel("peak learning rate")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("the lr boundary per grad-clip bucket")
    return _save(fig, path)


def curves_plot(curves: Sequence[Curve], path: Path, *, ylabel: str, title: str, log_y: bool = False) -> Path:
    """Lines per run; highlighted runs thick and labelled; a diverged run ends in an x at its step."""
    fig, ax = plt.subplots(figsize=(9, 4.8))
    colours = {"stable": "tab:green", "pruned": "tab:gray", "unaligned": "tab:olive", "no-stop": "tab:olive"}
    for c in sorted(curves, key=lambda c: c.highlight is not None):
        colour = MARK_COLOURS.get(c.highlight or "", colours.get(c.outcome, "tab:red"))
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
    points: Sequence[Point], knobs: Sequence[str], path: Path, *, log_knobs: Sequence[str] = ()
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
        for outcome in sorted({p.outcome for p in points}):
            group = [p for p in points if p.outcome == outcome and knob in p.params and p.val_mel is not None]
            ax.scatter(
                [float(p.params[knob]) for p in group],
                [p.val_mel for p in group],
                marker=_marker(outcome),
                edgecolors="red" if outcome.startswith("diverged") else "black",
                s=35,
                label=LABELS.get(outcome, outcome),
            )
        lost = [float(p.params[knob]) for p in points if knob in p.params and p.val_mel is None]
        if lost:
            ax.scatter(lost, [top] * len(lost), marker="x", color="red", label="diverged before any eval")
        if knob in log_knobs:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        if switch:
            ax.set_xticks([0, 1], ["off", "on"])
            ax.set_xlim(-0.5, 1.5)
        ax.set_title(knob)
        ax.set_ylabel("val mel")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(knobs) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    return _save(fig, path)


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
