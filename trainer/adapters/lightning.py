"""PyTorch Lightning, guarded: a ``Callback`` that hands each step's numbers to the reporter.

Most TTS code trained today sits on Lightning (NeMo's TTS models, many research repos): this callback
brings the divergence guards to a ``lightning.Trainer`` in this process, without a JSON-lines wrapper::

    trainer = lightning.Trainer(..., callbacks=[guard_callback(reporter)])
    trainer.fit(model, train_loader, val_loader)

Per optimizer step: the loss ``training_step`` returned (times ``accumulate_grad_batches``, which
Lightning divides it by), the gradient norm before clipping, and the loss scale when a ``GradScaler``
runs (fp16). Per validation: the metric the module logged (``self.log("val_loss", ...)``; the sanity
check is skipped). The gradient norm is the global 2-norm of the module's ``.grad``, taken in
``on_before_optimizer_step``: Lightning calls it after ``backward`` (and the scaler's unscale) and before
it clips, so it is the pre-clip norm the explosion guard reads, whatever ``gradient_clip_val`` is.

A guard that fires (or the pruner) ends the run the way Lightning's ``EarlyStopping`` does:
``trainer.should_stop = True``, after the step that fired; ``fit`` returns, and the reporter keeps the
verdict, so the trial is recorded exactly as when the ``StopRun`` leaves a plain loop. Lightning runs one
last validation when it stops early: the callback reports nothing more. A trainer that does not stop
(``min_steps`` / ``min_epochs`` not reached) gets the ``StopRun`` raised at its next batch.

Lightning is the ``lightning`` extra: it is imported when the callback is built, not with this module.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

from trainer.reporter import Reporter, ReportError, StopRun

INSTALL = "trainer.adapters.lightning needs PyTorch Lightning: pip install -e '.[lightning]'"


def guard_callback(reporter: Reporter, *, metric: str = "val_loss") -> Any:
    """A ``lightning.pytorch.Callback`` reporting to ``reporter``; ``metric``: the name the module logs its
    validation metric under (lower is better)."""
    return _callback_class()(reporter, metric)


@cache
def _callback_class() -> type:
    try:
        from lightning.pytorch import Callback
    except ModuleNotFoundError:
        raise ModuleNotFoundError(INSTALL) from None

    class GuardCallback(Callback):
        """Lightning's hooks -> ``reporter.step`` / ``reporter.eval``; a ``StopRun`` -> ``should_stop``."""

        def __init__(self, reporter: Reporter, metric: str) -> None:
            self.reporter, self.metric = reporter, metric
            self._norm_sq: float | None = None  # this batch's optimizer steps, summed squares
            self._stop: StopRun | None = None

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if self._stop is not None:  # the trainer went on (min_steps, min_epochs): end it here
                raise self._stop

        def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
            # Manual optimization may step several optimizers in one batch: one global norm over them.
            grads = [
                p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None
            ]
            norm = float(torch.nn.utils.get_total_norm(grads))  # as clip_grad_norm_ takes it; NaN, Inf kept
            self._norm_sq = (self._norm_sq or 0.0) + norm**2

        def on_train_batch_end(
            self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            if self._stop is not None or self._norm_sq is None:
                return  # stopped, or a micro-batch of gradient accumulation: no optimizer step yet
            norm, self._norm_sq = self._norm_sq**0.5, None
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if loss is None:
                raise ReportError(
                    "the LightningModule's training_step returned no loss: return it (or {'loss': ...}) "
                    "for the guards to read"
                )
            if pl_module.automatic_optimization:
                loss = loss * trainer.accumulate_grad_batches
            self._call(trainer, self.reporter.step, loss=float(loss), grad_norm=norm, **_scale(trainer))

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if self._stop is not None or trainer.sanity_checking:
                return
            value = trainer.callback_metrics.get(self.metric)
            if value is None:
                logged = ", ".join(sorted(trainer.callback_metrics)) or "nothing"
                raise ReportError(
                    f"the LightningModule logged no {self.metric!r} (it logged: {logged}): call "
                    f"self.log({self.metric!r}, ...) in validation_step, or pass guard_callback(reporter, "
                    "metric=NAME)"
                )
            self._call(trainer, self.reporter.eval, metric=float(value))

        def _call(self, trainer: Any, report: Any, **numbers: float) -> None:
            try:
                report(**numbers)
            except StopRun as stop:
                self._stop = stop
                trainer.should_stop = True

    return GuardCallback


def _scale(trainer: Any) -> dict[str, float]:
    """The GradScaler's scale after this step's update (fp16 mixed precision), else nothing: a drop is a
    skipped step, which the reporter counts instead of calling it a divergence."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return {} if scaler is None else {"loss_scale": float(scaler.get_scale())}
