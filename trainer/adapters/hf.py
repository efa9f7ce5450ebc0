"""Hugging Face's ``Trainer``, guarded: a ``TrainerCallback`` that hands each step's numbers to the reporter.

SpeechT5 and the other ``transformers`` TTS models train with ``transformers.Trainer``; this callback
brings the divergence guards to it in this process, without a JSON-lines wrapper::

    trainer = transformers.Trainer(..., callbacks=[guard_callback(reporter)])
    trainer.train()

The Trainer hands a callback a step's loss only in its logs, so the callback asks it to log every step
(``control.should_log``, as ``logging_steps=1`` would: the console and ``report_to`` get a line per
step). Per step, from those logs: ``loss`` and ``grad_norm``. The Trainer computes that norm every
optimizer step, the global 2-norm before clipping (``clip_grad_norm_`` with ``max_grad_norm``, or with
``inf`` when clipping is off), so it is the pre-clip norm the explosion guard reads. A Trainer that logs
no ``grad_norm`` (transformers 4.x takes it only when it clips) gets it from the callback: the 2-norm of
the model's ``.grad`` in ``on_pre_optimizer_step``, which comes after the Trainer clips, so only when
``max_grad_norm`` is 0 (unclipped, so pre-clip); with clipping on and no logged norm the explosion guard
is off, and the log says so. Under fp16 the ``GradScaler``'s scale after each step goes with it (a drop
is a skipped step, counted, not a divergence). Per evaluation: ``eval_loss``, or the metric named.

``TrainingArguments.logging_nan_inf_filter`` (on by default) logs a non-finite step loss as the mean of
the window's finite ones (0.0, a window of one step); that step's gradient norm is non-finite too, and
the non-finite guard fires on it at the same step.

A guard that fires (or the pruner) stops the Trainer the way its ``EarlyStoppingCallback`` does:
``control.should_training_stop = True``, after the step that fired; ``train`` returns, and the reporter
keeps the verdict, so the trial is recorded exactly as when the ``StopRun`` leaves a plain loop. The
callback reports nothing after that (an evaluation due at that step, a user's ``evaluate()``).

``transformers`` (and accelerate, which its ``Trainer`` needs) is the ``hf`` extra: it is imported when
the callback is built, not with this module.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

from trainer.reporter import Reporter, ReportError, StopRun

INSTALL = "trainer.adapters.hf needs Hugging Face transformers: pip install -e '.[hf]'"


def guard_callback(reporter: Reporter, *, metric: str = "eval_loss") -> Any:
    """A ``transformers.TrainerCallback`` reporting to ``reporter``; ``metric``: the key of the
    evaluation's metrics the trial is judged by (lower is better)."""
    return _callback_class()(reporter, metric)


@cache
def _callback_class() -> type:
    try:
        from transformers import TrainerCallback
    except ModuleNotFoundError:
        raise ModuleNotFoundError(INSTALL) from None

    class GuardCallback(TrainerCallback):
        """The Trainer's logs and evaluations -> ``reporter``; a ``StopRun`` -> ``should_training_stop``."""

        def __init__(self, reporter: Reporter, metric: str) -> None:
            self.reporter, self.metric = reporter, metric
            self._logs_norm: bool | None = None  # whether the Trainer logs grad_norm (known at the first log)
            self._norm: float | None = None  # the callback's own, while the Trainer's is not known
            self._scale: float | None = None
            self._stop: StopRun | None = None

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self._stop is not None:  # something set the Trainer going again: end it here
                raise self._stop

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self._logs_norm is not True and not args.max_grad_norm:  # unclipped: this is pre-clip
                grads = [p.grad for p in kwargs["model"].parameters() if p.grad is not None]
                self._norm = float(torch.nn.utils.get_total_norm(grads))

        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            scaler = getattr(kwargs.get("optimizer"), "scaler", None)  # accelerate's, under fp16
            self._scale = None if scaler is None else float(scaler.get_scale())

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            control.should_log = True  # the only way a step's loss reaches a callback
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> Any:
            if self._stop is not None or not logs or "loss" not in logs:
                return control  # stopped, or not a training step's log (an eval's, the run's summary)
            if self._logs_norm is None:
                self._logs_norm = "grad_norm" in logs
            norm = logs["grad_norm"] if self._logs_norm else self._norm
            scale = {} if self._scale is None else {"loss_scale": self._scale}
            return self._call(control, self.reporter.step, loss=logs["loss"], grad_norm=norm, **scale)

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> Any:
            if self._stop is not None:
                return control
            if not metrics or self.metric not in metrics:
                keys = ", ".join(sorted(metrics or ())) or "nothing"
                raise ReportError(
                    f"the evaluation has no {self.metric!r} (it has: {keys}): pass "
                    "guard_callback(reporter, metric=NAME)"
                )
            return self._call(control, self.reporter.eval, metric=metrics[self.metric])

        def _call(self, control: Any, report: Any, **numbers: float) -> Any:
            try:
                report(**numbers)
            except StopRun as stop:
                self._stop = stop
                control.should_training_stop = True
            return control

    return GuardCallback
