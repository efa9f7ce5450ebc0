"""One trial's facts as a typed record: the one place that converts them to and from Optuna's storage.

The objective, the runner and the preset seeding write a trial's facts as Optuna user attributes
(``studies.record_keys``); everything that reads a study (live view, summary, evidence, report,
export, pruner) reads ``TrialRecord`` fields instead. Its outcome is the judge's word
(``trainer.judge.Outcome``), stored as such; studies stored before that load to the same words.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from studies.continuations_fold import fold_continuations
from studies.record_keys import (
    ATTEMPT,
    C_DIVERGED,
    COMMAND,
    CONTINUES,
    DECODE_DTW,
    DECODE_LENGTH_RATIO,
    DECODE_RATIO,
    DECODE_SENTENCE_RATIOS,
    DECODE_STOP_RATE,
    DECODE_WALK,
    DIAGNOSIS,
    DIAGONALITY,
    DIVERGED,
    DIVERGENCE_DETAIL,
    DIVERGENCE_STEP,
    EXIT_CODE,
    FAIL_DETAIL,
    FAILED_BY,
    GRAD_NORM_MEDIAN,
    GRAD_NORM_P95,
    GUARDS_OFF,
    HOST,
    JUDGED,
    LAST_STEP,
    MAX_STEPS,
    NONFINITE_EVENTS,
    OOM_DETAIL,
    OOM_STEP,
    OUT_OF_MEMORY,
    OUTPUT_TAIL,
    OVER_PRIOR,
    PID,
    PRESET,
    PROMOTED,
    RESUMED_FROM,
    RETRY_OF,
    RUNG,
    SCALER_SKIPS,
    SEED_GRAD_BELOW_ONE,
    SEED_LOSS_BAND,
    SHARPNESS,
    SPEAKS,
    STEPS_RUN,
    STOP_MARGIN,
    STOP_S,
    STOPPED_WITH,
    TRAINER_TOKEN,
    VERDICT,
)
from studies.rung_facts import RungFacts
from trainer.diagnosis import Diagnosis
from trainer.outcome import DIVERGED_PREFIX, Outcome

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True, slots=True)
class Divergence:
    """The guard that stopped a trial, at which step, and its one-line reason."""

    kind: str
    step: int | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class DecodeFacts:
    """The free-running decode at a finished trial's last eval, and whether it speaks by the measure."""

    stop_rate: float
    length_ratio: float
    dtw: float
    ratio: float | None = None  # None: not measured (no anchors, or a study from before the measure)
    walk: float | None = None
    speaks: bool | None = None
    # Each decoded sentence's ratio, in decode order (None: that sentence has no anchors); `ratio` is
    # their median. Empty in a study from before it was recorded.
    sentence_ratios: tuple[float | None, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class TrialRecord:
    """Everything a reader may ask of one trial. Optuna's own fields come first; the rest is what the
    objective and the runner recorded (None: not recorded, e.g. a trial still running)."""

    number: int = -1
    state: TrialState = TrialState.RUNNING
    params: Mapping[str, Any] = field(default_factory=dict)
    value: float | None = None
    intermediate: Mapping[int, float] = field(default_factory=dict)
    constraints: Mapping[str, float] = field(default_factory=dict)
    # what the objective recorded
    verdict: Outcome | None = None  # the judge's word; None while running, or never recorded
    divergence: Divergence | None = None  # the guard that stopped a diverged trial
    diagnosis: Diagnosis | None = None  # why it diverged (trainer/diagnosis.py), when it was replayed
    max_steps: int | None = None
    last_step: int | None = None
    steps_run: int | None = None
    stop_end_margin: float | None = None
    diagonality: float | None = None
    over_prior: float | None = None
    sharpness: float | None = None
    decode: DecodeFacts | None = None
    seed_loss_in_1_10: float | None = None
    seed_grad_norm_below_1: float | None = None
    grad_norm_median: float | None = None
    grad_norm_p95: float | None = None
    nonfinite_events: int | None = None
    scaler_skips: int | None = None
    # who runs it and what it repeats
    preset: str | None = None
    host: str | None = None
    pid: int | None = None
    failed_by: str | None = None
    retry_of: int | None = None
    attempt: int | None = None
    oom_step: int | None = None
    oom_detail: str | None = None
    # successive halving: the screen's facts of a trial in a study with a speech rung
    screen: RungFacts | None = None
    promoted: bool | None = None
    rung: int | None = None
    continues: int | None = None  # a continuation trial: the trial whose screen it resumes (folded)
    resumed_from: int | None = None  # the step a promoted run's long rung resumed its screen at
    continued_as: int | None = None  # a folded record: the continuation trial that ran its long rung
    # a trainer this project did not write
    guards_off: tuple[str, ...] | None = None  # None: the project's trainer, every guard on
    command: str | None = None
    exit_code: int | None = None
    stopped_with: str | None = None
    stop_s: float | None = None
    fail_detail: str | None = None
    output_tail: str | None = None
    trainer_token: str | None = None

    # -- what readers ask ------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def diverged(self) -> bool:
        """A divergence guard stopped it (its record, or its violated `diverged` constraint).

        Other constraints (unaligned, decode never stops) make a finished trial infeasible, not
        diverged: its val mel is real and it stays a peer for the pruner's mel rule.
        """
        return self.divergence is not None or self.constraints.get(C_DIVERGED, 0.0) > 0.0

    @property
    def outcome(self) -> Outcome:
        """The judge's word for a trial that ended; running / waiting / failed for one that did not
        get a verdict (yet)."""
        if self.state == TrialState.RUNNING:
            return Outcome.RUNNING
        if self.state == TrialState.WAITING:
            return Outcome.WAITING
        if self.state == TrialState.FAIL:
            return Outcome.OOM if self.verdict is Outcome.OOM else Outcome.FAILED
        if self.verdict is not None:
            return self.verdict
        return Outcome.PRUNED if self.state == TrialState.PRUNED else Outcome.UNRECORDED

    @property
    def feasible(self) -> bool:
        """Its constraints say stable: what the sampler, the ranking and the export read."""
        return self.state == TrialState.COMPLETE and all(v <= 0 for v in self.constraints.values())

    @property
    def last_value(self) -> float | None:
        """The final value, or the last one reported (a pruned or diverged trial)."""
        if self.value is not None:
            return self.value
        if self.intermediate:
            return self.intermediate[max(self.intermediate)]
        return None

    @property
    def speaks(self) -> bool:
        """Its last eval's free-running decode speaks by the measure (False where not measured)."""
        return self.decode is not None and bool(self.decode.speaks)

    # -- storage ---------------------------------------------------------------------------------------
    def to_attrs(self) -> dict[str, Any]:
        """The objective's facts as user attributes (None fields are left out), keys as above."""
        attrs: dict[str, Any] = {
            MAX_STEPS: self.max_steps,
            VERDICT: None if self.verdict is None else self.verdict.value,
            LAST_STEP: self.last_step,
            STOP_MARGIN: self.stop_end_margin,
            STEPS_RUN: self.steps_run,
            SEED_LOSS_BAND: self.seed_loss_in_1_10,
            SEED_GRAD_BELOW_ONE: self.seed_grad_norm_below_1,
            GRAD_NORM_MEDIAN: self.grad_norm_median,
            GRAD_NORM_P95: self.grad_norm_p95,
            NONFINITE_EVENTS: self.nonfinite_events,
            SCALER_SKIPS: self.scaler_skips,
            DIAGONALITY: self.diagonality,
            OVER_PRIOR: self.over_prior,
            SHARPNESS: self.sharpness,
            PRESET: self.preset,
            HOST: self.host,
            PID: self.pid,
            FAILED_BY: self.failed_by,
            RETRY_OF: self.retry_of,
            ATTEMPT: self.attempt,
            OOM_STEP: self.oom_step,
            OOM_DETAIL: self.oom_detail,
            PROMOTED: self.promoted,
            RUNG: self.rung,
            CONTINUES: self.continues,
            RESUMED_FROM: self.resumed_from,
            GUARDS_OFF: None if self.guards_off is None else list(self.guards_off),
            COMMAND: self.command,
            EXIT_CODE: self.exit_code,
            STOPPED_WITH: self.stopped_with,
            STOP_S: self.stop_s,
            FAIL_DETAIL: self.fail_detail,
            OUTPUT_TAIL: self.output_tail,
            TRAINER_TOKEN: self.trainer_token,
        }
        if self.screen is not None:
            attrs.update(self.screen.to_attrs())
        if self.divergence is not None:
            attrs.update(
                {
                    DIVERGED: True,
                    DIVERGENCE_STEP: self.divergence.step,
                    DIVERGENCE_DETAIL: self.divergence.detail,
                }
            )
        if self.diagnosis is not None:
            attrs[DIAGNOSIS] = self.diagnosis.to_attr()
        if self.decode is not None:
            attrs.update(
                {
                    DECODE_STOP_RATE: self.decode.stop_rate,
                    DECODE_LENGTH_RATIO: self.decode.length_ratio,
                    DECODE_DTW: self.decode.dtw,
                    DECODE_RATIO: self.decode.ratio,
                    DECODE_WALK: self.decode.walk,
                    SPEAKS: self.decode.speaks,
                    DECODE_SENTENCE_RATIOS: list(self.decode.sentence_ratios) or None,
                }
            )
        return {k: v for k, v in attrs.items() if v is not None}

    @classmethod
    def from_trial(cls, t: FrozenTrial) -> TrialRecord:
        a = t.user_attrs
        verdict = _verdict(a)
        divergence = None
        if a.get(DIVERGED):  # the guard's kind is in the verdict (an attribute written by hand may lack it)
            divergence = Divergence(
                kind=verdict.kind if verdict is not None and verdict.kind is not None else "?",
                step=_int(a.get(DIVERGENCE_STEP)),
                detail=_str(a.get(DIVERGENCE_DETAIL)),
            )
        decode = None
        if DECODE_STOP_RATE in a:
            decode = DecodeFacts(
                stop_rate=float(a[DECODE_STOP_RATE]),
                length_ratio=_float(a.get(DECODE_LENGTH_RATIO), math.nan),
                dtw=_float(a.get(DECODE_DTW), math.nan),
                ratio=_float(a.get(DECODE_RATIO)),
                walk=_float(a.get(DECODE_WALK)),
                speaks=a[SPEAKS] if isinstance(a.get(SPEAKS), bool) else None,
                sentence_ratios=tuple(_float(x) for x in a.get(DECODE_SENTENCE_RATIOS) or ()),
            )
        return cls(
            number=t.number,
            state=t.state,
            params=dict(t.params),
            value=t.value,
            intermediate=dict(t.intermediate_values),
            constraints=dict(t.constraints),
            verdict=verdict,
            divergence=divergence,
            diagnosis=Diagnosis.from_attr(a[DIAGNOSIS]) if isinstance(a.get(DIAGNOSIS), dict) else None,
            max_steps=_int(a.get(MAX_STEPS)),
            last_step=_int(a.get(LAST_STEP)),
            steps_run=_int(a.get(STEPS_RUN)),
            stop_end_margin=_float(a.get(STOP_MARGIN)),
            diagonality=_float(a.get(DIAGONALITY)),
            over_prior=_float(a.get(OVER_PRIOR)),
            sharpness=_float(a.get(SHARPNESS)),
            decode=decode,
            seed_loss_in_1_10=_float(a.get(SEED_LOSS_BAND)),
            seed_grad_norm_below_1=_float(a.get(SEED_GRAD_BELOW_ONE)),
            grad_norm_median=_float(a.get(GRAD_NORM_MEDIAN)),
            grad_norm_p95=_float(a.get(GRAD_NORM_P95)),
            nonfinite_events=_int(a.get(NONFINITE_EVENTS)),
            scaler_skips=_int(a.get(SCALER_SKIPS)),
            preset=_str(a.get(PRESET)),
            host=_str(a.get(HOST)),
            pid=_int(a.get(PID)),
            failed_by=_str(a.get(FAILED_BY)),
            retry_of=_int(a.get(RETRY_OF)),
            attempt=_int(a.get(ATTEMPT)),
            oom_step=_int(a.get(OOM_STEP)),
            oom_detail=_str(a.get(OOM_DETAIL)),
            screen=RungFacts.from_attrs(a),
            promoted=a[PROMOTED] if isinstance(a.get(PROMOTED), bool) else None,
            rung=_int(a.get(RUNG)),
            continues=_int(a.get(CONTINUES)),
            resumed_from=_int(a.get(RESUMED_FROM)),
            guards_off=tuple(map(str, a[GUARDS_OFF])) if isinstance(a.get(GUARDS_OFF), list) else None,
            command=_str(a.get(COMMAND)),
            exit_code=_int(a.get(EXIT_CODE)),
            stopped_with=_str(a.get(STOPPED_WITH)),
            stop_s=_float(a.get(STOP_S)),
            fail_detail=_str(a.get(FAIL_DETAIL)),
            output_tail=_str(a.get(OUTPUT_TAIL)),
            trainer_token=_str(a.get(TRAINER_TOKEN)),
        )


def load_records(study: optuna.Study, states: Iterable[TrialState] | None = None) -> list[TrialRecord]:
    """The study's trials as records, in trial-number order, each promoted screen folded with the
    continuation trial that ran its long rung (``fold_continuations``): one trial, one identity."""
    trials = study.get_trials(deepcopy=False)
    records = fold_continuations([TrialRecord.from_trial(t) for t in sorted(trials, key=lambda t: t.number)])
    wanted = None if states is None else set(states)
    return [r for r in records if wanted is None or r.state in wanted]


def preset_trials(
    records: Iterable[TrialRecord], names: Iterable[str] | None = None
) -> dict[str, TrialRecord]:
    """The newest finished trial of each preset tag (of ``names`` only, in that order, if given)."""
    found: dict[str, TrialRecord] = {}
    for r in sorted(records, key=lambda r: r.number):
        if r.finished and r.preset is not None:
            found[r.preset] = r
    if names is None:
        return found
    return {name: found[name] for name in names if name in found}


def _verdict(a: Mapping[str, Any]) -> Outcome | None:
    """The stored verdict as the judge's word. Older studies stored a diverged trial's guard kind
    (``explosion``), an unjudged one as ``pruned`` with ``judged`` False, and an out-of-memory one as
    no verdict at all (FAIL, ``failed_by`` "out of memory")."""
    raw = a.get(VERDICT)
    if raw is None:
        return Outcome.OOM if a.get(FAILED_BY) == OUT_OF_MEMORY else None
    word = str(raw)
    if a.get(DIVERGED) and not word.startswith(DIVERGED_PREFIX):
        word = DIVERGED_PREFIX + word
    if word == Outcome.PRUNED and a.get(JUDGED) is False:
        return Outcome.UNJUDGED
    return Outcome.read(word)


def _int(x: object) -> int | None:
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _float(x: object, default: float | None = None) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else default


def _str(x: object) -> str | None:
    return None if x is None else str(x)
