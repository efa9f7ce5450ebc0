"""One trial's facts as a typed record: the one place that knows how they are stored in Optuna.

The objective, the runner and the preset seeding write a trial's facts as Optuna user attributes
(strings there, so any Optuna tool can read a study); everything that reads a study — live view,
summary, evidence, report, export, pruner — reads ``TrialRecord`` fields instead. The attribute keys
and the constraint keys are defined here once; the outcome words are the judge's (``trainer/judge.py``).
Studies written before this module existed
stored the same keys, so they load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from trainer.judge import OOM, PRUNED, STABLE, UNJUDGED, diverged_outcome

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

# -- user attribute keys ---------------------------------------------------------------------------
PRESET = "preset"  # the preset a seeded trial judges (kept by its retries)
MAX_STEPS = "max_steps"
LAST_STEP = "last_step"  # the step of the latest eval, written at every eval
STOP_MARGIN = "stop_end_margin"  # teacher-forced stop margin at the latest eval (read by the pruner)
STEPS_RUN = "steps_run"
SEED_LOSS_BAND = "seed_loss_in_1_10"
SEED_GRAD_BELOW_ONE = "seed_grad_norm_below_1"
GRAD_NORM_MEDIAN = "grad_norm_median"
GRAD_NORM_P95 = "grad_norm_p95"
NONFINITE_EVENTS = "nonfinite_events"  # real NaN/Inf losses or gradients (not GradScaler skips)
SCALER_SKIPS = "scaler_skips"  # fp16: finite losses whose scaled gradients overflowed (calibration)
JUDGED = "judged"  # a pruned trial: False if it stopped before every guard could judge it
DIVERGED = "diverged"  # True on a trial a divergence guard stopped
VERDICT = "verdict"  # the finished verdict word, "pruned", or the divergence kind of a diverged trial
DIVERGENCE_STEP = "divergence_step"
DIVERGENCE_DETAIL = "divergence_detail"
DIAGONALITY = "diagonality"
OVER_PRIOR = "over_prior"  # diagonality over the KL prior's own: what "aligned" is judged on
SHARPNESS = "sharpness"
DECODE_STOP_RATE = "decode_stop_rate"
DECODE_LENGTH_RATIO = "decode_length_ratio"
DECODE_DTW = "decode_dtw"
DECODE_RATIO = "decode_ratio"  # median decode ratio: 0 = the words rendered at another rate, 1 = a constant
DECODE_WALK = "decode_walk"  # median share of text positions the decode's attention visits in order
SPEAKS = "speaks"
HOST, PID = "host", "pid"  # where the trial runs: how a dead local worker's trial is found
FAILED_BY = "failed_by"  # why a trial ended FAIL: interrupt / worker died / surplus / duplicate / exc name
OUT_OF_MEMORY = "out of memory"  # the FAILED_BY of a trial the device ran out of memory in (not retried)
OOM_STEP, OOM_DETAIL = "oom_step", "oom_detail"  # where, and the error's line (it names the size)
RETRY_OF = "retry_of"  # a re-queued trial: the number of the trial it repeats
ATTEMPT = "attempt"  # how many times these params have been started (1 for a fresh trial)
RUNG = "rung"  # the rung the trial ended at: 0 the screen, 1 the long (speech) rung
PROMOTED = "promoted"  # at the screen's end: did it go on to the long rung?
SCREEN_STEP, SCREEN_VALUE, SCREEN_VERDICT = "screen_step", "screen_val_mel", "screen_verdict"
SCREEN_RATIO, SCREEN_SPEAKS = "screen_decode_ratio", "screen_speaks"
# A trainer this project did not write (trainer/reporter.py, studies/execution/command_trial.py):
GUARDS_OFF = "guards_off"  # guards and checks that were off because the trainer lacks their signal
COMMAND = "command"  # the command line the trial ran, filled with its params
EXIT_CODE = "exit_code"  # the command's exit status (negative: the signal that ended it)
STOPPED_WITH, STOP_S = "stopped_with", "stop_s"  # how the search stopped it (SIGTERM / SIGKILL), how fast
TRAINER_FAILED = "trainer failed"  # the FAILED_BY of a run that crashed without diverging (not retried)
FAIL_DETAIL = "fail_detail"  # why, in one line (the exit code, a broken report, no metric)
OUTPUT_TAIL = "output_tail"  # its last lines of output
TRAINER_TOKEN = "trainer_token"  # in the trainer's environment: how its processes are found to reap

# -- study (not trial) user attribute keys --------------------------------------------------------
DATA_FINGERPRINT = "data_fingerprint"  # the data set the study's trials ran on

# -- constraint keys (> 0 infeasible); TPE ranks every infeasible trial below every feasible one ----
C_DIVERGED, C_UNALIGNED, C_NO_STOP = "diverged", "unaligned", "decode_no_stop"

# -- the outcome words: the judge's (trainer/judge.py), and the states of a trial not finished yet ------
RUNNING, WAITING, FAILED, COMPLETE = "running", "waiting", "failed", "complete"


@dataclass(frozen=True, slots=True)
class Divergence:
    """The guard that stopped a trial, at which step, and its one-line reason."""

    kind: str
    step: int | None = None
    detail: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RungFacts:
    """A trial at the end of its screen (the short rung): what the long rung's promotion was decided on."""

    step: int
    val_mel: float
    verdict: str  # the judge's word at that eval (stable / unaligned / no-stop)
    decode_ratio: float | None = None
    speaks: bool = False

    @property
    def feasible(self) -> bool:
        return self.verdict == STABLE


@dataclass(frozen=True, slots=True)
class DecodeFacts:
    """The free-running decode at a finished trial's last eval, and whether it speaks by the measure."""

    stop_rate: float
    length_ratio: float
    dtw: float
    ratio: float | None = None  # None: not measured (no anchors, or a study from before the measure)
    walk: float | None = None
    speaks: bool | None = None


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
    verdict: str | None = None  # a FINISHED_VERDICTS word or PRUNED; None while running or diverged
    divergence: Divergence | None = None
    judged: bool | None = None  # a pruned trial ran long enough for every guard (None: not recorded)
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
    def outcome(self) -> str:
        """One word: stable / unaligned / no-stop / pruned / diverged:<kind> / running / waiting / failed."""
        if self.state == TrialState.RUNNING:
            return RUNNING
        if self.state == TrialState.WAITING:
            return WAITING
        if self.state == TrialState.FAIL:
            return OOM if self.failed_by == OUT_OF_MEMORY else FAILED
        if self.divergence is not None:
            return diverged_outcome(self.divergence.kind)
        if self.verdict == PRUNED and self.judged is False:
            return UNJUDGED
        if self.verdict is not None:
            return self.verdict
        return PRUNED if self.state == TrialState.PRUNED else COMPLETE

    @property
    def feasible(self) -> bool:
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

    @property
    def speech(self) -> str:
        """The end-of-trial speech measure in a few words, shown next to the verdict everywhere."""
        d = self.decode
        if d is None or d.ratio is None:
            return "-"
        return f"{'speaks' if d.speaks else 'silent'} {d.ratio:.2f}"

    @property
    def shown_step(self) -> str:
        """The step a view shows for a trial not running in this process."""
        step = self.last_step if self.last_step is not None else self.steps_run
        return "" if step is None else str(step)

    # -- storage ---------------------------------------------------------------------------------------
    def to_attrs(self) -> dict[str, Any]:
        """The objective's facts as user attributes (None fields are left out), keys as above."""
        attrs: dict[str, Any] = {
            MAX_STEPS: self.max_steps,
            JUDGED: self.judged,
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
            attrs.update(screen_attrs(self.screen))
        if self.divergence is not None:
            attrs.update(
                {
                    DIVERGED: True,
                    VERDICT: self.divergence.kind,
                    DIVERGENCE_STEP: self.divergence.step,
                    DIVERGENCE_DETAIL: self.divergence.detail,
                }
            )
        else:
            attrs[VERDICT] = self.verdict
        if self.decode is not None:
            attrs.update(
                {
                    DECODE_STOP_RATE: self.decode.stop_rate,
                    DECODE_LENGTH_RATIO: self.decode.length_ratio,
                    DECODE_DTW: self.decode.dtw,
                    DECODE_RATIO: self.decode.ratio,
                    DECODE_WALK: self.decode.walk,
                    SPEAKS: self.decode.speaks,
                }
            )
        return {k: v for k, v in attrs.items() if v is not None}

    @classmethod
    def from_trial(cls, t: FrozenTrial) -> TrialRecord:
        a = t.user_attrs
        divergence = None
        if a.get(DIVERGED):
            divergence = Divergence(
                kind=str(a.get(VERDICT, "?")),
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
            )
        return cls(
            number=t.number,
            state=t.state,
            params=dict(t.params),
            value=t.value,
            intermediate=dict(t.intermediate_values),
            constraints=dict(t.constraints),
            verdict=None if divergence is not None else _str(a.get(VERDICT)),
            divergence=divergence,
            judged=a[JUDGED] if isinstance(a.get(JUDGED), bool) else None,
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
            screen=_screen(a),
            promoted=a[PROMOTED] if isinstance(a.get(PROMOTED), bool) else None,
            rung=_int(a.get(RUNG)),
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
    """The study's trials as records, in trial-number order."""
    trials = study.get_trials(deepcopy=False, states=tuple(states) if states is not None else None)
    return [TrialRecord.from_trial(t) for t in sorted(trials, key=lambda t: t.number)]


def best_feasible(records: Iterable[TrialRecord]) -> TrialRecord | None:
    """The best feasible COMPLETE trial: one whose decode speaks beats one that does not, then one
    judged at a longer rung (its val mel is not comparable with a shorter run's), then the lowest val
    mel (teacher-forced mel alone can look excellent for a model that cannot speak)."""
    candidates = [r for r in records if r.feasible and r.value is not None]
    return min(candidates, key=lambda r: (not r.speaks, -(r.rung or 0), r.value)) if candidates else None


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


def record_start(trial: optuna.Trial, max_steps: int) -> None:
    trial.set_user_attr(MAX_STEPS, max_steps)


def screen_attrs(screen: RungFacts) -> dict[str, Any]:
    attrs = {
        SCREEN_STEP: screen.step,
        SCREEN_VALUE: screen.val_mel,
        SCREEN_VERDICT: screen.verdict,
        SCREEN_RATIO: screen.decode_ratio,
        SCREEN_SPEAKS: screen.speaks,
    }
    return {k: v for k, v in attrs.items() if v is not None}


def record_screen(trial: optuna.Trial, screen: RungFacts, promoted: bool) -> None:
    """What the objective writes at the screen's end, before the run goes on (or not): the facts the
    next trials' promotion reads."""
    for key, value in {**screen_attrs(screen), PROMOTED: promoted}.items():
        trial.set_user_attr(key, value)


def record_eval(trial: optuna.Trial, step: int, stop_end_margin: float) -> None:
    """What the objective writes at every eval, before it asks the pruner (a trainer without a stop
    head has no stop margin: NaN, left out)."""
    trial.set_user_attr(LAST_STEP, step)
    if math.isfinite(stop_end_margin):
        trial.set_user_attr(STOP_MARGIN, round(stop_end_margin, 4))


def write_record(trial: optuna.Trial, record: TrialRecord) -> None:
    for key, value in record.to_attrs().items():
        trial.set_user_attr(key, value)
    for key, value in record.constraints.items():
        trial.set_constraint(key, value)


def _screen(a: Mapping[str, Any]) -> RungFacts | None:
    if SCREEN_VALUE not in a or SCREEN_VERDICT not in a:
        return None
    return RungFacts(
        step=_int(a.get(SCREEN_STEP)) or 0,
        val_mel=float(a[SCREEN_VALUE]),
        verdict=str(a[SCREEN_VERDICT]),
        decode_ratio=_float(a.get(SCREEN_RATIO)),
        speaks=a.get(SCREEN_SPEAKS) is True,
    )


def _int(x: object) -> int | None:
    return int(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _float(x: object, default: float | None = None) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else default


def _str(x: object) -> str | None:
    return None if x is None else str(x)
