"""Why the study's runs diverged: the diagnoses its runs carry, as a table and as one line per cause.

A diverged trial's record holds its diagnosis (``trainer/diagnosis.py``: a cause class and its evidence,
from a replay of the run), as do a diverged validation seed, margin rung and lr probe in their records.
The report shows them run by run; the terminal summary counts the trials', one line per cause class, so
"12 trials diverged" becomes "9 at the lr edge, 3 in the data". The lr edge a study measured (its lr
probe, or the lowest lr a margin ladder diverged at) is what a run's lr is compared with when it is
diagnosed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import optuna

from studies.evidence import lr_probe, margin
from studies.evidence.tables import Rows
from studies.evidence.validate import Validation
from studies.record import TrialRecord
from trainer.diagnosis import Cause, Diagnosis, Edge

_WORDS = {
    Cause.LR_EDGE: "the lr edge",
    Cause.FP16_OVERFLOW: "an fp16 overflow",
    Cause.DATA: "a data item",
    Cause.LOSS_TERM: "a loss term",
    Cause.UNKNOWN: "no cause the evidence points to",
}


def why_diverged(
    records: Sequence[TrialRecord],
    validations: Mapping[str, Validation] | None = None,
    probe: lr_probe.ProbeResult | None = None,
    margins: Mapping[str, margin.Margin] | None = None,
) -> Rows:
    """One row per diverged trial, then per diverged validation seed, then per diverged margin rung,
    then the lr probe: run, step, cause (with its module, item or term), evidence."""
    rows = []
    for r in records:
        if r.outcome.diverged:
            step = r.divergence.step if r.divergence is not None else None
            rows.append(_row(f"trial {r.number}", r.diagnosis, step, undiagnosed=_undiagnosed(r)))
    for v in (validations or {}).values():
        for run in v.runs:
            if run.diverged:
                where = f"validation {v.label}, seed {run.seed}"
                rows.append(_row(where, run.diagnosis, run.divergence_step, guard=run.detail))
    for m in (margins or {}).values():
        for rung in m.rungs:
            if rung.diverged:
                step = rung.divergence_step
                guard = (
                    f"{rung.divergence_kind} at step {step}" if rung.divergence_kind else rung.outcome.value
                )
                rows.append(_row(f"margin {m.label} x{rung.multiplier:g}", rung.diagnosis, step, guard=guard))
    if probe is not None and probe.diagnosis is not None:
        d = probe.diagnosis
        rows.append(("lr probe", str(d.step), _cause(d), d.evidence))
    return Rows("Why it diverged", ("run", "step", "cause", "evidence"), tuple(rows))


def _row(
    where: str, d: Diagnosis | None, step: int | None, *, guard: str = "", undiagnosed: str | None = None
) -> tuple[str, str, str, str]:
    """A diverged run's row: its diagnosis, or "not diagnosed" with what its guard said."""
    if d is not None:
        return (where, str(d.step), _cause(d), d.evidence)
    why = undiagnosed if undiagnosed is not None else f"no diagnosis stored; the guard said: {guard}"
    return (where, "-" if step is None else str(step), "not diagnosed", why)


def cause_lines(records: Sequence[TrialRecord]) -> list[str]:
    """One line per cause class among the diverged trials, most trials first; the trials without a
    diagnosis (stored before the diagnosis existed, or a trainer that cannot be replayed) get one too."""
    by: dict[str, list[int]] = {}
    for r in records:
        if r.outcome.diverged:
            key = r.diagnosis.cause.value if r.diagnosis is not None else "not diagnosed"
            by.setdefault(key, []).append(r.number)
    lines = []
    for key, numbers in sorted(by.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        words = (
            _WORDS[Cause(key)] if key in {c.value for c in Cause} else "not diagnosed (no replay recorded)"
        )
        trials = ", ".join(str(n) for n in numbers)
        n = len(numbers)
        lines.append(f"diverged from {words} ({key}): {n} trial{'s' if n != 1 else ''} ({trials})")
    return lines


def measured_edge(study: optuna.Study, *, besides: str | None = None) -> Edge | None:
    """The lowest lr at which this study measured training to break: the lr probe's divergence, or a
    margin ladder's first diverged rung; None when neither has run (or neither diverged). ``besides``:
    leave out the margin of that recipe (its own ladder, which a margin rung of it is measuring again:
    comparing a rung with the edge it is part of would say nothing)."""
    found: list[Edge] = []
    probe = lr_probe.stored(study)
    if probe is not None and probe.diverged and probe.divergence_lr:
        found.append(Edge(float(probe.divergence_lr), "lr probe"))
    for name, m in margin.stored(study).items():
        if name == besides:
            continue
        edge = m.first_diverged
        if edge is not None:
            found.append(Edge(edge.lr, f"margin of {m.label}"))
    return min(found, key=lambda e: e.lr) if found else None


def _cause(d: Diagnosis) -> str:
    named = d.module or d.term or ", ".join(d.items)
    return d.cause.value + (f" ({named})" if named else "")


def _undiagnosed(r: TrialRecord) -> str:
    detail = r.divergence.detail if r.divergence is not None and r.divergence.detail else ""
    return f"no diagnosis stored (a study from before the diagnosis); the guard said: {detail}".rstrip(": ")
