"""The seed's question in the report's first lines: were `basic` and `enhanced` stable, how far from the
lr edge are they, how much fp16 headroom do they keep, and what does that imply?

The seed's user cut the lr 5x and turned three tricks off, and the NaN went away. Whether the lr was the
problem is a measurement: the study says whether each trained stably, the margin (``margin``) how far its
lr sits below the edge, the fp16 headroom (``fp16``) how far its largest values sit below fp16's 65,504.
Pure functions over those records, tested on hand-made ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from studies.evidence.fp16 import HeadroomCurve
from studies.evidence.margin import Margin, fmt_multiplier
from studies.evidence.rests_on import rests_on
from studies.evidence.seed_form import SeedForm
from studies.record import TrialRecord

PRESETS = ("basic", "enhanced")
FAR = 4.0  # an edge at least two doublings above the recipe's lr: far enough that lr noise is not it
ROOMY = 3.0  # fp16 headroom of 3 doublings: the largest value may grow 8x before it overflows


@dataclass(frozen=True, kw_only=True, slots=True)
class PresetFacts:
    name: str
    trial: TrialRecord | None
    margin: Margin | None
    curve: HeadroomCurve | None

    @property
    def diverged_in_study(self) -> bool | None:
        return None if self.trial is None else self.trial.outcome.diverged

    @property
    def multiplier(self) -> float | None:
        """Its largest lr multiplier that survived (0 when even x1 diverged); None: not measured."""
        if self.margin is None:
            return None
        top = self.margin.largest_survived
        return 0.0 if top is None else top.multiplier

    @property
    def end_headroom(self) -> float | None:
        end = None if self.curve is None else self.curve.end
        return None if end is None else end[1]

    def line(self) -> str:
        return f"{self.name}: {self._study()}; {self._margin()}; {self._fp16()}."

    def _study(self) -> str:
        return study_words(None, self.trial)

    def _margin(self) -> str:
        m = self.margin
        if m is None:
            return "margin not measured (--margin)"
        top, edge = m.largest_survived, m.first_diverged
        if top is None:
            return f"diverged even at {fmt_multiplier(m.rungs[0].multiplier)} its lr in {m.steps}-step runs"
        words = (
            f"survived up to {fmt_multiplier(top.multiplier)} its lr ({top.lr:.2g}) in {m.steps}-step runs"
        )
        if edge is None:
            return words + ", no higher multiplier tried diverged"
        return (
            words
            + f", diverged at {fmt_multiplier(edge.multiplier)} ({edge.divergence_kind} at step {edge.divergence_step})"
        )

    def _fp16(self) -> str:
        c = self.curve
        end = None if c is None else c.end
        if c is None or end is None:
            return "fp16 headroom not measured"
        tensor, room = end
        words = f"fp16 headroom at the end of its {c.source} {room:.1f} doublings ({tensor})"
        if c.crossing is not None:
            words += f", but it {'reached' if not c.crossing.projected else 'trends to'} 0 at step {c.crossing.step}"
        return words


def study_words(name: str | None, r: TrialRecord | None) -> str:
    """How a preset's trial ended in the study, in a few words (``name``: said first, when given)."""
    head = f"{name}: " if name is not None else ""
    if r is None:
        return head + "not in the study"
    if r.divergence is not None:
        return (
            head
            + f"diverged in the study ({r.divergence.kind} at step {r.divergence.step}, trial {r.number})"
        )
    return head + f"no guard fired in the study (trial {r.number}: {r.outcome})"


def yours(name: str, r: TrialRecord | None, m: Margin | None) -> str:
    """A preset of your trainer's study: how it ended in the study, and its margin when measured."""
    words = study_words(name, r)
    return (
        words if m is None else f"{words}; {PresetFacts(name=name, trial=r, margin=m, curve=None)._margin()}"
    )


def facts(
    presets: Mapping[str, TrialRecord], margins: Mapping[str, Margin], curves: Mapping[str, HeadroomCurve]
) -> list[PresetFacts]:
    return [
        PresetFacts(name=n, trial=presets.get(n), margin=margins.get(n), curve=curves.get(n)) for n in PRESETS
    ]


def implication(found: list[PresetFacts]) -> str:
    """One sentence: what the measurements say about the seed's fix."""
    by = {f.name: f for f in found}
    basic, enhanced = by.get("basic"), by.get("enhanced")
    if basic is None or enhanced is None or basic.multiplier is None or enhanced.multiplier is None:
        return (
            "The margin is not measured yet, so this report cannot say how far from the edge the presets are: "
            "run --margin basic enhanced."
        )
    tight = [f for f in found if f.end_headroom is not None and (f.end_headroom < ROOMY or f.curve.crossing)]
    unknown_fp16 = [f.name for f in found if f.end_headroom is None]
    if enhanced.multiplier >= FAR and not enhanced.diverged_in_study:
        lr_words = (
            f"enhanced, the recipe that went NaN for the seed, trains here with no guard firing up to "
            f"{fmt_multiplier(enhanced.multiplier)} its lr (basic up to {fmt_multiplier(basic.multiplier)}): "
            "the lr was not what diverged in these runs"
        )
    elif enhanced.multiplier < basic.multiplier:
        lr_words = (
            f"enhanced stands nearer its lr edge ({fmt_multiplier(enhanced.multiplier)}) than basic "
            f"({fmt_multiplier(basic.multiplier)}): lowering the lr moved the recipe away from the edge, as the "
            "seed's fix meant to"
        )
    else:
        lr_words = (
            f"enhanced keeps {fmt_multiplier(enhanced.multiplier)} and basic {fmt_multiplier(basic.multiplier)} "
            "of lr margin: the seed's 5x lr cut did not widen it here"
        )
    if tight:
        fp16_words = (
            f"; {', '.join(f.name for f in tight)} runs short of fp16 headroom, so under fp16 (as the seed trained) "
            "an overflow is the likelier cause of a NaN"
        )
    elif unknown_fp16:
        fp16_words = f"; fp16 headroom is not measured for {', '.join(unknown_fp16)}"
    else:
        least = min(f.end_headroom for f in found if f.end_headroom is not None)
        fp16_words = (
            f"; both keep at least {least:.1f} doublings of fp16 headroom and no trend reaches 0, so fp16 overflow "
            "does not explain a NaN within these runs either: what they leave out (the seed's larger model, "
            "its data, epochs of training) is where to look"
        )
    return lr_words[0].upper() + lr_words[1:] + fp16_words + "."


def lines(found: list[PresetFacts], form: SeedForm | None = None) -> list[str]:
    """A line per preset, what it implies, and what that rests on: the presets' trials and margin rungs;
    then, when ``bench/seed_form.py`` stored it, what the seed's own form did."""
    runs = sum(f.trial is not None for f in found) + sum(len(f.margin.rungs) for f in found if f.margin)
    rests = rests_on(runs, "run", more="run --margin basic enhanced")
    said = [f.line() for f in found] + [
        implication(found),
        f"This answer {rests} (the presets' trials and margin rungs).",
    ]
    return said if form is None else [*said, form.sentence()]
