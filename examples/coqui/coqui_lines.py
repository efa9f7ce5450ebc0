"""The numbers a trial prints: Coqui's model hooks and its Trainer's step-end callback turned into one
JSON line per step and one per eval (the fields: coqui_runner.py's docstring), and the end of the step
budget."""

from __future__ import annotations

import json
import math
import time
from typing import Any

BAND = 0.1  # the diagonal band of the alignment measure (tts_model.losses.attention_diagonality)


class BudgetSpent(Exception):  # noqa: N818  (control flow: the trial's steps are done)
    """Raised from the step-end callback to leave ``Trainer._fit`` after the last step."""


def diagonality(attn: Any, text_lengths: Any, dec_lengths: Any, band: float = BAND) -> float:
    """Share of attention mass within |n/N - t/T| < max(band, 1/N), mean over real decoder steps: a
    copy of ``tts_model.losses.attention_diagonality`` (this process cannot import the project).
    Uniform attention scores about 2 x band; a sharp diagonal 1."""
    import torch

    b, t_dec, n_text = attn.shape
    n = (torch.arange(n_text, dtype=torch.float32) + 0.5)[None, None, :]
    t = (torch.arange(t_dec, dtype=torch.float32) + 0.5)[None, :, None]
    big_n = text_lengths.float().clamp_min(1.0)[:, None, None]
    big_t = dec_lengths.float().clamp_min(1.0)[:, None, None]
    dec_mask = torch.arange(t_dec)[None, :] < dec_lengths[:, None]  # (B, T_dec)
    text_mask = torch.arange(n_text)[None, :] < text_lengths[:, None]  # (B, N)
    valid = dec_mask[:, :, None] & text_mask[:, None, :]
    half = torch.maximum(torch.tensor(band), 1.0 / big_n)
    inside = ((n / big_n - t / big_t).abs() < half) & valid
    mass = (attn.float() * inside).sum(-1)  # (B, T_dec)
    steps = dec_mask.float()
    return float((mass * steps).sum() / steps.sum().clamp_min(1.0))


def emit(row: dict[str, Any]) -> None:
    """One metrics line, flushed at once (``-I`` ignores PYTHONUNBUFFERED). NaN and inf go out as JSON's
    NaN / Infinity, which Python's json reads back."""
    print(json.dumps(row), flush=True)


class Lines:
    """The model's hooks and the Trainer's step-end callback, turned into metrics lines.

    Per step: ``before_backward_pass`` gives the losses, ``before_gradient_clipping`` the gradients
    (their norm before any clip), a wrapped ``train_step`` the attention; ``on_train_step_end`` prints
    the line, runs the eval when one is due, and ends the run after ``steps``."""

    def __init__(self, model: Any, *, steps: int, eval_every: int, bare: bool = False) -> None:
        """``bare``: Coqui alone, to measure what the lines cost: no hook wrapped, no step line, the
        evals as usual."""
        self.model, self.steps, self.eval_every, self.bare = model, steps, eval_every, bare
        self.pending: dict[str, float] = {}
        self.val: list[tuple[float, int]] = []  # (diagonality, decoder steps) per eval batch
        # At each step's end (--timing): wall clock, this process's CPU, and the wall time the steps
        # spent so far in this class's own code (the numbers and the lines: what a trial adds).
        self.ends: list[tuple[float, float, float]] = []
        self.own_s = 0.0
        model.train_log = lambda *a, **k: None  # Coqui's draw figures and run Griffin-Lim
        model.eval_log = lambda *a, **k: None
        if not bare:
            self._wrap(model)

    def _wrap(self, model: Any) -> None:
        import torch

        train_step, before_backward = model.train_step, model.before_backward_pass

        def train_step_and_attention(batch: dict, criterion: Any, optimizer_idx: int | None = None) -> Any:
            outputs, loss_dict = train_step(batch, criterion, optimizer_idx)
            began = time.perf_counter()
            r = model.decoder.r
            dec_lengths = (batch["mel_lengths"] + r - 1) // r
            with torch.no_grad():
                value = diagonality(outputs["alignments"].detach(), batch["text_lengths"], dec_lengths)
            if model.training:
                self.pending["alignment"] = value
                self.own_s += time.perf_counter() - began
            else:  # Coqui's eval_step calls train_step under inference_mode
                self.val.append((value, int(dec_lengths.sum())))
            return outputs, loss_dict

        def losses(loss_dict: dict, optimizer: Any) -> None:
            before_backward(loss_dict, optimizer)
            began = time.perf_counter()
            for ours, theirs in (("loss", "loss"), ("decoder", "decoder_loss"), ("postnet", "postnet_loss"),
                                 ("stopnet", "stopnet_loss"), ("ga", "ga_loss"), ("coqui_align_error", "align_error")):  # fmt: skip
                if theirs in loss_dict:
                    value = loss_dict[theirs]
                    self.pending[ours] = float(value.detach()) if torch.is_tensor(value) else float(value)
            self.own_s += time.perf_counter() - began

        def grads() -> None:
            began = time.perf_counter()
            found = [p.grad for p in model.parameters() if p.grad is not None]
            self.pending["grad_norm"] = float(torch.nn.utils.get_total_norm(found)) if found else 0.0
            self.own_s += time.perf_counter() - began

        model.train_step = train_step_and_attention
        model.before_backward_pass = losses
        model.before_gradient_clipping = grads

    def on_train_step_end(self, trainer: Any) -> None:
        n = trainer.total_steps_done
        if self.bare:
            self.ends.append((time.time(), time.process_time(), 0.0))
            self._maybe_eval_and_end(trainer, n)
            return
        began = time.perf_counter()
        row, self.pending = self.pending, {}
        optimizer = trainer.optimizer[0] if isinstance(trainer.optimizer, list) else trainer.optimizer
        lr = optimizer.param_groups[0]["lr"]
        emit(
            {
                "step": n,
                "loss": row.get("loss", math.nan),
                "grad_norm": row.get("grad_norm", math.nan),
                "mel": row.get("postnet", math.nan),
                "alignment": row.get("alignment", math.nan),
                "lr": lr,
                **{
                    k: row[k]
                    for k in ("decoder", "postnet", "stopnet", "ga", "coqui_align_error")
                    if k in row
                },
            }
        )
        self.own_s += time.perf_counter() - began
        self.ends.append((time.time(), time.process_time(), self.own_s))
        self._maybe_eval_and_end(trainer, n)

    def _maybe_eval_and_end(self, trainer: Any, n: int) -> None:
        if n % self.eval_every == 0 or n >= self.steps:
            self.evaluate(trainer, n)
        if n >= self.steps:
            raise BudgetSpent

    def evaluate(self, trainer: Any, n: int) -> None:
        """Coqui's own eval over the validation folder; its running averages restart per eval (Coqui
        averages every eval of an epoch together)."""
        from trainer.generic_utils import KeepAverage

        trainer.keep_avg_eval, self.val = KeepAverage(), []
        trainer.eval_epoch()
        trainer.model.train()
        avg = trainer.keep_avg_eval.avg_values
        frames = sum(w for _, w in self.val)
        emit(
            {
                "step": n,
                "metric": float(avg.get("avg_postnet_loss", math.nan)),
                "alignment": sum(v * w for v, w in self.val) / frames if frames else math.nan,
                "val_decoder": float(avg.get("avg_decoder_loss", math.nan)),
                "val_loss": float(avg.get("avg_loss", math.nan)),
            }
        )
