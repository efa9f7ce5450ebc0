"""The margin's figures: each recipe's lr ladder, and fp16 headroom against step. Plain data in, a PNG out
(as ``plots``, whose helpers they share)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from studies.evidence.fp16 import HeadroomCurve
from studies.evidence.margin import Margin, fmt_multiplier
from studies.evidence.plots import MARK_COLOURS, _save, plt
from trainer.headroom import TENSORS

LINES = {"attn_logit_max": "-", "activation_max": "--"}


def margin_plot(margins: Mapping[str, Margin], path: Path) -> Path:
    """Val mel at the end of each rung against its lr: one line per recipe, its own lr ringed, diverged
    rungs as red x on a band above (labelled with the guard that fired)."""
    fig, ax = plt.subplots(figsize=(9, 4.8))
    finite = [r.val_mel for m in margins.values() for r in m.rungs if r.val_mel is not None]
    top = (max(finite) * 1.08) if finite else 1.0
    for name, m in margins.items():
        colour = MARK_COLOURS.get(name, "tab:purple")
        ok = [(r.lr, r.val_mel) for r in m.rungs if r.outcome.survived and r.val_mel is not None]
        ax.plot([x for x, _ in ok], [y for _, y in ok], "o-", color=colour, label=f"{m.label}: {_edge(m)}")
        own = next((r for r in m.rungs if r.multiplier == 1.0 and r.val_mel is not None), None)
        if own is not None:
            ax.scatter([own.lr], [own.val_mel], s=220, facecolors="none", edgecolors=colour, linewidths=2)
        for r in m.rungs:
            if r.diverged:
                ax.plot(r.lr, top, "x", color="red", markersize=10, markeredgewidth=2)
                ax.annotate(
                    f"{name} {fmt_multiplier(r.multiplier)}: {r.divergence_kind} @{r.divergence_step}",
                    (r.lr, top),
                    fontsize=7,
                    xytext=(4, -12),
                    textcoords="offset points",
                    color=colour,
                )
    ax.axhline(top, color="red", alpha=0.3)
    ax.plot([], [], "x", color="red", label="diverged (a guard fired)")
    ax.set_xscale("log")
    ax.set_xlabel("lr (the recipe's own lr ringed; each rung doubles it)")
    ax.set_ylabel("val mel at the end of the rung")
    ax.set_title("margin: how far each recipe's lr sits below the edge")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _edge(m: Margin) -> str:
    top = m.largest_survived
    if top is None:
        return "diverged at every multiplier"
    return f"survived to {fmt_multiplier(top.multiplier)}" + ("" if m.edge_found else " (edge beyond)")


def headroom_plot(curves: Mapping[str, HeadroomCurve], path: Path) -> Path:
    """fp16 headroom (log2(65504 / max |x|)) against step: a colour per run, a line style per tensor; a
    run whose headroom reaches 0, or trends to it, gets a red mark at that step."""
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for name, c in curves.items():
        colour = MARK_COLOURS.get(name, "tab:purple")
        for metric, words in TENSORS.items():
            pts = [(s, h) for s, h in zip(c.steps, c.headroom(metric), strict=True) if math.isfinite(h)]
            if pts:
                ax.plot(
                    [s for s, _ in pts],
                    [h for _, h in pts],
                    LINES[metric],
                    color=colour,
                    label=f"{c.label}: {words}",
                )
        if c.crossing is not None:
            ax.plot(c.crossing.step, 0, "v", color="red", markersize=11)
            ax.annotate(
                f"{name}: step {c.crossing.step}",
                (c.crossing.step, 0),
                fontsize=7,
                xytext=(4, 6),
                textcoords="offset points",
            )
    ax.axhline(0, color="red", linewidth=1, label="fp16 overflows (65,504)")
    ax.set_xlabel("step")
    ax.set_ylabel("fp16 headroom, log2(65504 / max |x|)")
    ax.set_title("fp16 headroom of the presets and the best")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
