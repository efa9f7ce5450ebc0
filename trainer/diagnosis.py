"""Why a run diverged: the cause class and its evidence, decided from what a replay of the run measured.

A guard says *that* a run diverged ("nonfinite at step 4"); the person whose training went NaN asks
*why*. The causes TTS users report, most common first, are fp16 overflow, an lr too high, bad data and
a numerically fragile loss term; this record names which of them the evidence points to, or says
plainly that it points nowhere. The evidence comes from replaying the run's last steps with full
instrumentation (``trainer/diagnosis_replay.py``), so a healthy run pays nothing for it.

Pure and free of torch, like ``trainer.outcome``: the record, the reader and the unit tests need no
model. ``decide`` is the only place a cause is chosen; the rules, in the order they are tried:

1. **data**: an item of the divergent step's batch has non-finite or flat (all one value) features:
   the input was broken before the model saw it;
2. **fp16 overflow**: the run was fp16, the same step at the same weights is finite in fp32, and a
   module's fp16 tensor passed 65,504 (or turned non-finite from finite inputs): that module; or the
   forward was finite and the GradScaler skipped step after step (the gradients overflow at any scale);
3. **loss term**: the forward was finite everywhere, and a loss term went non-finite (or grew more
   than ``TERM_JUMP`` times its value of the step before) while the others did not: that term;
4. **lr edge**: the same last steps replayed at a lower lr (``Evidence.lower_lr``) ran without a guard
   firing, or the lr at the step stood at or above the edge the study measured;
5. **data**: the step's batch breaks at these weights while other batches at the same weights do not,
   and leaving one item out of it makes it finite: that item;
6. **unknown**: none of the above; the evidence is kept and shown as measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

FP16_MAX = 65504.0
TERM_JUMP = 100.0  # a finite term counts as exploded when it grows this many times in one step
EDGE_SHARE = 0.5  # an lr at or above half the measured edge stands on it (the edge is known to a doubling)


class Cause(StrEnum):
    """The cause classes, in the words the report and the summary print."""

    LR_EDGE = "lr-edge"
    FP16_OVERFLOW = "fp16-overflow"
    DATA = "data"
    LOSS_TERM = "loss-term"
    UNKNOWN = "unknown"

    @classmethod
    def read(cls, word: object) -> Cause:
        try:
            return cls(str(word))
        except ValueError:
            return cls.UNKNOWN


@dataclass(frozen=True, slots=True)
class Edge:
    """The lr at which this study measured training to break, and where it was measured."""

    lr: float
    source: str  # "lr probe", "margin of basic", ...


@dataclass(frozen=True, slots=True)
class TermValues:
    """One loss term (unweighted), at the step before the divergent one and at it."""

    name: str  # "mel", "align (forward-sum)", "stop"
    before: float  # NaN: no step before (the run diverged at its first step)
    at: float

    @property
    def broke(self) -> bool:
        """Non-finite at the step, or finite and jumped more than TERM_JUMP times."""
        if not math.isfinite(self.at):
            return True
        return math.isfinite(self.before) and self.before > 0 and self.at > TERM_JUMP * self.before


@dataclass(frozen=True, slots=True)
class ModuleEvent:
    """The first module (in forward order) whose output passed 65,504 or turned non-finite from finite
    inputs, during the replay: where a value overflowed, not where it was passed on."""

    module: str  # its qualified name in the model ("decoder.blocks.0.cross_attn")
    step: int
    peak: float  # its output's largest |value| (inf / NaN as found)


@dataclass(frozen=True, kw_only=True, slots=True)
class Evidence:
    """What the replay measured about a divergence: the inputs of ``decide``, written by hand in tests."""

    step: int  # the step the guard fired at
    kind: str  # the guard ("nonfinite", "explosion", ...)
    reproduced: bool  # the replay's guard fired at the same step (else the evidence is of a near run)
    lr: float  # the lr of the divergent step
    edge: Edge | None = None  # the study's measured edge, when it has one
    lower_lr: float | None = None  # the lr the last steps were replayed at (None: not tried)
    lower_lr_survived: bool | None = None  # ... and no guard fired there
    items: tuple[str, ...] = ()  # the ids of the divergent step's batch
    bad_items: Mapping[str, str] = field(default_factory=dict)  # id -> what is wrong with its features
    breaking_items: tuple[str, ...] = ()  # items whose removal makes the step's batch finite
    batch_finite: bool | None = None  # the step's batch at the weights before it: finite loss and grads
    other_batches: int = 0  # other batches tried at the same weights ...
    other_batches_finite: int = 0  # ... and how many stayed finite
    fp16: bool = False
    fp32_finite: bool | None = None  # fp16 runs: the step's batch in fp32 at the same weights is finite
    first_module: ModuleEvent | None = None
    forward_finite: bool = True  # every module output of the divergent step was finite
    skipped_in_a_row: int = 0  # fp16: GradScaler skips in a row up to the step (finite loss, Inf grads)
    terms: tuple[TermValues, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class Diagnosis:
    """A diverged run's cause class, with the evidence a person reads and the typed details it names."""

    step: int
    cause: Cause
    evidence: str  # one or two sentences with the numbers
    module: str | None = None  # fp16-overflow: the module whose tensor overflowed first
    items: tuple[str, ...] = ()  # data: the items; loss-term: the items that broke it, if any
    term: str | None = None  # loss-term: the term
    lr: float | None = None  # the lr at the divergent step
    edge_lr: float | None = None  # lr-edge: the edge it was compared with (None: the lower-lr replay)
    reproduced: bool = True  # the replay diverged at the same step
    replay_s: float = math.nan  # what the replay cost, in seconds

    @property
    def named(self) -> bool:
        """A cause other than unknown."""
        return self.cause is not Cause.UNKNOWN

    def line(self) -> str:
        """One line: "step 4: data (item LJ-0007: its features are NaN ...)"."""
        return f"step {self.step}: {self.cause.value}: {self.evidence}"

    def to_attr(self) -> dict[str, Any]:
        """Plain JSON for a trial's user attribute (NaN and inf stored as None)."""
        return {
            "step": self.step,
            "cause": self.cause.value,
            "evidence": self.evidence,
            "module": self.module,
            "items": list(self.items),
            "term": self.term,
            "lr": _json(self.lr),
            "edge_lr": _json(self.edge_lr),
            "reproduced": self.reproduced,
            "replay_s": _json(self.replay_s),
        }

    @classmethod
    def from_attr(cls, d: Mapping[str, Any]) -> Diagnosis:
        def num(key: str) -> float | None:
            x = d.get(key)
            return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None

        replay = num("replay_s")
        return cls(
            step=int(d.get("step") or 0),
            cause=Cause.read(d.get("cause")),
            evidence=str(d.get("evidence") or ""),
            module=None if d.get("module") is None else str(d["module"]),
            items=tuple(str(i) for i in d.get("items") or ()),
            term=None if d.get("term") is None else str(d["term"]),
            lr=num("lr"),
            edge_lr=num("edge_lr"),
            reproduced=bool(d.get("reproduced", True)),
            replay_s=math.nan if replay is None else replay,
        )


def decide(e: Evidence) -> Diagnosis:
    """The cause the evidence points to, by the rules of this module's docstring, first match wins."""
    base = {"step": e.step, "lr": e.lr, "reproduced": e.reproduced}
    note = "" if e.reproduced else " (the replay did not diverge at the same step: evidence of a near run)"

    if e.bad_items:
        named = sorted(e.bad_items)
        what = "; ".join(f"{i}: {e.bad_items[i]}" for i in named)
        return Diagnosis(
            cause=Cause.DATA,
            items=tuple(named),
            evidence=f"the batch at step {e.step} holds {what}{note}",
            **base,
        )

    if e.fp16 and e.fp32_finite and e.first_module is not None:
        m = e.first_module
        how = "went Inf/NaN from finite inputs" if not math.isfinite(m.peak) else f"reached {m.peak:.3g}"
        return Diagnosis(
            cause=Cause.FP16_OVERFLOW,
            module=m.module,
            evidence=(
                f"{m.module} overflowed first: its output {how} at step {m.step} under fp16 (fp16's largest "
                f"value is 65,504); the same step in fp32 at the same weights is finite{note}"
            ),
            **base,
        )

    if e.fp16 and e.fp32_finite and e.forward_finite and e.skipped_in_a_row > 0:
        return Diagnosis(
            cause=Cause.FP16_OVERFLOW,
            evidence=(
                f"the forward was finite, its gradients overflowed fp16 at every loss scale (the GradScaler "
                f"skipped {e.skipped_in_a_row} steps in a row up to step {e.step}); the same step in fp32 "
                f"at the same weights is finite{note}"
            ),
            **base,
        )

    broke = [t for t in e.terms if t.broke]
    if e.forward_finite and broke and len(broke) < len(e.terms):
        t = broke[0]
        values = ", ".join(f"{x.name} {_num(x.before)} -> {_num(x.at)}" for x in e.terms)
        who = f" (item {', '.join(e.breaking_items)})" if e.breaking_items else ""
        return Diagnosis(
            cause=Cause.LOSS_TERM,
            term=t.name,
            items=e.breaking_items,
            evidence=(
                f"the forward was finite, the {t.name} term went {_num(t.at)} at step {e.step}{who}; "
                f"terms before -> at: {values}{note}"
            ),
            **base,
        )

    if e.lower_lr_survived and e.lower_lr is not None:
        edge = f"; the study's edge is lr {e.edge.lr:.3g} ({e.edge.source})" if e.edge is not None else ""
        return Diagnosis(
            cause=Cause.LR_EDGE,
            edge_lr=None if e.edge is None else e.edge.lr,
            evidence=(
                f"lr {e.lr:.3g} at step {e.step}: the same last steps replayed at lr {e.lower_lr:.3g} "
                f"ran without a guard firing{edge}{note}"
            ),
            **base,
        )
    if e.edge is not None and e.lr >= EDGE_SHARE * e.edge.lr:
        return Diagnosis(
            cause=Cause.LR_EDGE,
            edge_lr=e.edge.lr,
            evidence=(
                f"lr {e.lr:.3g} at step {e.step} is {e.lr / e.edge.lr:.2g}x the edge the study measured, "
                f"lr {e.edge.lr:.3g} ({e.edge.source}){note}"
            ),
            **base,
        )

    if e.batch_finite is False and e.other_batches and e.other_batches_finite == e.other_batches:
        if e.breaking_items:
            return Diagnosis(
                cause=Cause.DATA,
                items=e.breaking_items,
                evidence=(
                    f"at the weights before step {e.step} its batch breaks and {e.other_batches} other "
                    f"batches stay finite; without item {', '.join(e.breaking_items)} it is finite{note}"
                ),
                **base,
            )

    seen = _seen(e)
    return Diagnosis(cause=Cause.UNKNOWN, evidence=f"the evidence points to no cause: {seen}{note}", **base)


def _seen(e: Evidence) -> str:
    """What was measured, in a few words, for an unknown cause."""
    parts = [f"{e.kind} at step {e.step}, lr {e.lr:.3g}"]
    if e.lower_lr is not None:
        parts.append(
            f"lr {e.lower_lr:.3g} {'survived' if e.lower_lr_survived else 'diverged too'} over the last steps"
        )
    if e.other_batches:
        parts.append(f"{e.other_batches_finite} of {e.other_batches} other batches finite at its weights")
    if e.terms:
        parts.append("terms " + ", ".join(f"{t.name} {_num(t.before)} -> {_num(t.at)}" for t in e.terms))
    return "; ".join(parts)


def _num(x: float) -> str:
    return str(x) if not math.isfinite(x) else f"{x:.4g}"


def _json(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
