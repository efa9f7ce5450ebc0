"""Any trainer's numbers, guarded: the reporter a training loop this project did not write calls.

DESIGN.md, "Any trainer, one contract": the guards, the pruner and the judge need only a stream of
numbers. The project's own loop is one producer; a user's loop is another, through this object, in the
shape of Ray Tune's ``tune.report`` and Syne Tune's ``Reporter``: per step ``reporter.step(loss=...,
grad_norm=..., mel=..., alignment=..., loss_scale=...)``, per eval ``reporter.eval(metric=...)``. The
command-line form (``studies/execution/command_trial.py``) reads the same numbers from a process's
output lines and calls the same methods, so both forms are guarded by one piece of code.

Each number feeds the guard that reads it (``trainer/guards.py``, thresholds in ``GuardConfig``; the
table of which guard reads what, and what is off without it: docs/your-trainer.md).

A free-running decode measure is the project's own, so the "decode" check is always off here. A
signal the first step (for the alignment: the first eval) reports must come with every later one: a
guard that saw a signal disappear would judge half a run. What is off is said once through ``note``
and kept in ``TrainResult.guards_off``, which the judge reads.

A guard that fires raises ``Diverged``; a prune raises ``Pruned``; a run that went quiet too long or
ran past its time, ``Stalled`` (the study's ``watch`` says when). All are ``StopRun``, which the study
catches: the user's loop need not. The trainer room knows nothing of Optuna: pruning is the
``on_eval`` callback's answer, as for the project's loop.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NoReturn

import torch

from trainer.config import GuardConfig
from trainer.evaluate import EvalMetrics
from trainer.guards import (
    EvalPoint,
    StepHistory,
    Verdict,
    check_eval,
    check_step,
)
from trainer.hooks import NullWriter, RunWriter
from trainer.report_contract import (  # the contract's names, importable from here as before
    Diverged,
    Pruned,
    ReportedStep,
    ReportError,
    Signals,
    Stalled,
    StopRun,
    Watch,
)
from trainer.results import TrainResult
from trainer.summary import summarize
from tts_model.losses import attention_diagonality


def diagonality_of(attention: Any) -> float:
    """An attention matrix (T_dec, T_text) or batch (B, T_dec, T_text), unpadded -> the share of its
    mass near the diagonal (tts_model.losses.attention_diagonality: uniform 0.19, a sharp diagonal 1)."""
    attn = torch.as_tensor(attention, dtype=torch.float32)
    if attn.dim() == 2:
        attn = attn[None]
    if attn.dim() != 3:
        raise ReportError(f"attention must be (T_dec, T_text) or (B, T_dec, T_text), got {tuple(attn.shape)}")
    b, t_dec, n_text = attn.shape
    return attention_diagonality(attn, torch.full((b,), n_text), torch.full((b,), t_dec))


def _watched(method: Callable[..., None]) -> Callable[..., None]:
    """A call of the loop's: a run that is over raises again, and the study's watch sees each call."""

    @functools.wraps(method)
    def call(self: Reporter, *args: Any, **kwargs: Any) -> None:
        if self._stop is not None:
            raise self._stop
        watch = self._watch
        why = watch.enter() if watch is not None else None
        if why is not None:
            self._end(Stalled(why))
        try:
            method(self, *args, **kwargs)
        finally:
            if watch is not None:
                watch.leave()

    return call


class Reporter:
    """What a user's training loop calls. Build one per run; the study does, and hands it over."""

    def __init__(
        self,
        guards: GuardConfig,
        *,
        warmup_steps: int = 0,
        run_id: str = "run",
        writer: RunWriter | None = None,
        on_step: Callable[[ReportedStep], None] | None = None,
        on_eval: Callable[[EvalMetrics], bool] | None = None,
        note: Callable[[str], None] = print,
        watch: Watch | None = None,
        score_last_loss: bool = False,
    ) -> None:
        """``score_last_loss``: a trainer with no eval; ``eval`` calls are not read, and the study scores
        the run by ``score_last`` when it ends."""
        self.guards = guards
        self._watch = watch
        self.score_last_loss = score_last_loss
        self.misused = False  # the loop called ``report`` (Ray Tune's name): the contract, not the params
        self.warmup_steps = warmup_steps
        self.run_id = run_id
        self._writer = writer if writer is not None else NullWriter()
        self._on_step, self._on_eval, self._note = on_step, on_eval, note
        self._history = StepHistory(guards)
        self._steps: list[ReportedStep] = []
        self._evals: list[EvalMetrics] = []
        self._points: list[EvalPoint] = []
        self._step_signals: dict[str, bool] | None = None  # name -> reported, fixed by the first step
        self._first_step = 0
        self._has_alignment: bool | None = None  # fixed by the first eval
        self._last_scale: float | None = None
        self._latest_alignment: float | None = None
        self._stop: StopRun | None = None  # set once the run is over: every later call raises it again
        self.verdict: Verdict | None = None
        self.pruned = False

    # -- what the loop calls ----------------------------------------------------------------------
    @_watched
    def step(
        self,
        *,
        loss: float,
        grad_norm: float | None = None,
        mel: float | None = None,
        alignment: float | None = None,
        attention: Any = None,
        loss_scale: float | None = None,
        step: int | None = None,
    ) -> None:
        """One training step's numbers (Python floats; call ``.item()`` once). ``step`` defaults to the
        previous one + 1. Raises ``Diverged`` when a guard fires at this step."""
        if loss is None:
            raise ReportError("reporter.step needs loss (the total, weighted as you train it)")
        n = self._next_step(step)
        if attention is not None:
            alignment = diagonality_of(attention)
        values = {"grad_norm": grad_norm, "mel": mel, "loss_scale": loss_scale, "alignment": alignment}
        signals = self._fix_signals(n, values)
        scale = _number("loss_scale", loss_scale)
        skipped = scale is not None and _skipped(scale, self._last_scale, loss, grad_norm)
        self._last_scale = scale if scale is not None else self._last_scale
        record = ReportedStep(
            step=n,
            loss=_number("loss", loss),
            grad_norm=_number("grad_norm", grad_norm),
            mel=_number("mel", mel),
            alignment=_number("alignment", alignment),
            loss_scale=scale,
            skipped=skipped,
        )
        if record.alignment is not None:
            self._latest_alignment = record.alignment
        self._steps.append(record)
        self._writer.log_step(self.run_id, n, _step_row(record))
        if self._on_step is not None:
            self._on_step(record)
        series = record.mel if signals.mel and record.mel is not None else record.loss
        self._history.append(
            step=n, loss=record.loss, mel=series, grad_norm=record.grad_norm, skipped=skipped
        )
        verdict = check_step(
            self._history,
            self.guards,
            warmup_steps=self.warmup_steps,
            fp16=signals.loss_scale,
            off=signals.guards_off,
        )
        if verdict is not None:
            self._end(Diverged(verdict))

    @_watched
    def eval(
        self, *, metric: float, alignment: float | None = None, attention: Any = None, step: int | None = None
    ) -> None:
        """One evaluation: the validation metric (lower is better) and, if the trainer has it, the
        attention's alignment (else the latest step's). Raises ``Diverged`` (non-finite metric, collapse)
        or ``Pruned`` (the study's pruner stopped the run here)."""
        if self.score_last_loss:
            self._note(
                'evals are not read: the study scores the last training loss ([metrics] score = "last_loss")'
            )
            return
        self._eval(metric, alignment, attention, step)

    def score_last(self) -> None:
        """The run's last training loss as its one eval, at its last step (``score_last_loss``); it may
        raise ``Diverged`` (not finite) or ``Pruned`` like any eval."""
        if self._steps:
            self._eval(self._steps[-1].loss, None, None, self._steps[-1].step)

    def report(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Ray Tune's and Syne Tune's name for it; here a step and an eval are two calls."""
        self.misused = True
        raise ReportError(
            "reporter.report(...) is Ray Tune's; here call reporter.step(loss=...) every step and "
            "reporter.eval(metric=...) every eval"
        )

    def halt(self, stop: StopRun) -> NoReturn:
        """End the run from outside the loop's calls (the study's watch); every later call raises it too."""
        self._end(stop)

    def _eval(self, metric: float, alignment: float | None, attention: Any, step: int | None) -> None:
        n = self._steps[-1].step if step is None and self._steps else (step or 0)
        if attention is not None:
            alignment = diagonality_of(attention)
        alignment = _number("alignment", alignment)
        alignment = self._latest_alignment if alignment is None else alignment
        self._fix_alignment(n, alignment)
        value = float(metric)
        ev = EvalMetrics(
            step=n,
            val_mel=value,
            stop_accuracy=math.nan,
            stop_end_margin=math.nan,
            diagonality=math.nan if alignment is None else alignment,
            sharpness=math.nan,
        )
        self._evals.append(ev)
        self._points.append(EvalPoint(n, value, alignment))
        row = {"metric": value} | ({} if alignment is None else {"alignment": alignment})
        self._writer.log_eval(self.run_id, n, row)
        verdict = check_eval(
            self._points, self.guards, warmup_steps=self.warmup_steps, baseline=self._baseline
        )
        stop = self._on_eval is not None and bool(self._on_eval(ev))
        if verdict is not None:
            self._end(Diverged(verdict))
        if stop:
            self.pruned = True
            self._end(Pruned(n))

    # -- what the study reads -----------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return self._steps[-1].step if self._steps else 0

    @property
    def stepped(self) -> bool:
        """Whether the run reported any training step (its first may be step 0)."""
        return bool(self._steps)

    @property
    def over(self) -> bool:
        """Whether the run was ended (diverged, pruned, stalled): every later call raises."""
        return self._stop is not None

    @property
    def stalled(self) -> Stalled | None:
        return self._stop if isinstance(self._stop, Stalled) else None

    @property
    def reported(self) -> bool:
        """Whether the run reported a validation metric at least once (a run's value needs one)."""
        return bool(self._evals)

    @property
    def signals(self) -> Signals:
        """The run's signals so far (a signal never reported counts as missing)."""
        had = self._step_signals or {}
        return Signals(
            grad_norm=had.get("grad_norm", False),
            mel=had.get("mel", False),
            loss_scale=had.get("loss_scale", False),
            alignment=self._has_alignment,
        )

    @property
    def guards_off(self) -> tuple[str, ...]:
        return self.signals.guards_off

    def result(self) -> TrainResult:
        """The run's history as the judge reads it (``trainer.judge.judge``)."""
        return TrainResult(
            steps=self.steps,
            verdict=self.verdict,
            evals=tuple(self._evals),
            recoveries=(),
            stopped_by_callback=self.pruned,
            summary=summarize(self._steps, 0),
            baseline_mel=self._baseline,
            guards_off=self.guards_off,
        )

    # -- internals ------------------------------------------------------------------------------------
    @property
    def _baseline(self) -> float | None:
        """The untrained model's metric, when the trainer reports an eval at step 0 (the collapse guard
        then tells "never left the start" from "fitted the mean and stopped")."""
        first = self._evals[0] if self._evals else None
        return first.val_mel if first is not None and first.step == 0 else None

    def _end(self, stop: StopRun) -> NoReturn:
        if isinstance(stop, Diverged):
            self.verdict = stop.verdict
        self._stop = stop
        raise stop

    def _next_step(self, step: int | None) -> int:
        """The first step may be any integer (0 included); each later one must be higher."""
        previous = self._steps[-1].step if self._steps else None
        if step is None:
            return 1 if previous is None else previous + 1
        if isinstance(step, bool) or not isinstance(step, int):
            raise ReportError(f"step {step!r}: steps must be integers that go up")
        if previous is not None and step <= previous:
            raise ReportError(f"step {step!r} after step {previous}: steps must be integers that go up")
        return step

    def _fix_signals(self, n: int, values: dict[str, float | None]) -> Signals:
        """The first step decides the run's step signals; a later step must report the same ones."""
        now = {name: value is not None for name, value in values.items()}
        if self._step_signals is None:
            self._step_signals, self._first_step = now, n
            self._note(self.signals.step_note())
        for name, before in self._step_signals.items():
            if before != now[name]:
                said = "reported" if before else "did not report"
                raise ReportError(
                    f"step {n} {'lacks' if before else 'reports'} {name}, which step {self._first_step} "
                    f"{said}: report a signal at every step or at none"
                )
        return self.signals

    def _fix_alignment(self, n: int, alignment: float | None) -> None:
        """The first eval decides whether the run has an alignment; a later eval must agree."""
        has = alignment is not None
        if self._has_alignment is None:
            self._has_alignment = has
            if not has:
                self._note("guards off for lack of a signal: collapse and the aligned check (no alignment)")
        elif self._has_alignment != has:
            raise ReportError(
                f"the eval at step {n} {'lacks' if self._has_alignment else 'has'} an alignment, which the "
                "first eval did not: report it at every eval or at none"
            )


def _skipped(scale: float, last: float | None, loss: float, grad_norm: float | None) -> bool:
    """Did the GradScaler skip this update? Its scale dropped since the last step; on the first step,
    where there is no last scale to compare with, a finite loss whose gradients overflowed (what the
    scaler skips: common there, since it starts at 2^16)."""
    if last is not None:
        return scale < last
    return math.isfinite(loss) and grad_norm is not None and not math.isfinite(grad_norm)


def _number(name: str, value: float | None) -> float | None:
    """A reported number as a Python float (NaN and Inf pass: they are what the guards are for)."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ReportError(f"{name} must be a number, got {value!r}") from None


def _step_row(r: ReportedStep) -> dict[str, float]:
    """The telemetry's step columns (trainer/telemetry.py): the user's mel is the unweighted one."""
    row = {"loss": r.loss, "skipped": float(r.skipped)}
    for column, value in (("grad_norm", r.grad_norm), ("mel_l1", r.mel), ("loss_scale", r.loss_scale)):
        if value is not None:
            row[column] = value
    return row
