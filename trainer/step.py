"""One training step: forward, losses, backward, clip, optimizer step, and its numbers read back once.

`train_step` queues the whole step on the device and reads nothing back, so on a GPU the host runs
ahead of it; `read_step` is the step's one host sync (`tests/test_host_syncs.py` holds the loop to it).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from trainer import adaptive
from trainer.config import TrainConfig
from trainer.loss_terms import compute_losses, training_log_prior
from trainer.peaks import PeakMeter
from trainer.results import StepMetrics
from trainer.schedules import forward_sum_share
from tts_model.batching import Batch
from tts_model.losses import masked_mel_loss
from tts_model.model import ModelOutput, TransformerTTS


@dataclass(frozen=True, slots=True)
class RunConstants:
    """Tensors every step needs, made on the device once per run (a tensor made from a Python number is a
    host-to-device copy, which waits for the device)."""

    stop_pos_weight: Tensor  # float32
    mel_weight: Tensor  # float64: cfg.mel_weight, reported as is when the weight is not adapted
    one: Tensor  # float32: the loss scale without a GradScaler
    nan: Tensor  # float32: a peak the model has no tensor for (not measured)
    max_norm: float  # the clip; inf = measure the norm, clip nothing

    @classmethod
    def build(cls, cfg: TrainConfig, device: torch.device) -> RunConstants:
        return cls(
            stop_pos_weight=torch.tensor(cfg.stop_pos_weight, dtype=torch.float32, device=device),
            mel_weight=torch.tensor(cfg.mel_weight, dtype=torch.float64, device=device),
            one=torch.ones((), dtype=torch.float32, device=device),
            nan=torch.full((), math.nan, dtype=torch.float32, device=device),
            max_norm=cfg.grad_clip if cfg.grad_clip > 0 else math.inf,
        )


@dataclass(frozen=True, slots=True)
class StepTensors:
    """One step's numbers, still on the device (0-dim tensors), read back together by `_read_step`."""

    loss: Tensor
    mel: Tensor
    mel_l1: Tensor
    kl: Tensor
    stop: Tensor
    grad_norm: Tensor  # pre-clip
    loss_scale: Tensor  # the scale this step's loss was multiplied by
    scale_after: Tensor  # the scaler's scale after update(): lower when it skipped the step
    mel_weight: Tensor
    adaptive_mean: Tensor  # NaN: no running mean (adaptive weights off, or no finite loss yet)
    attn_logit_max: Tensor  # the forward's largest |cross-attention score| (trainer/peaks.py)
    activation_max: Tensor  # ... and largest |Linear or Conv1d output|


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_step(
    model: TransformerTTS,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    cfg: TrainConfig,
    constants: RunConstants,
    adaptive_mean: Tensor,
    meter: PeakMeter,
    *,
    step: int,
) -> StepTensors:
    """Forward under autocast, losses in fp32, backward, pre-clip norm, clip, AdamW step, scaler update:
    nothing here reads a value back, so the host can queue the step and run ahead of the device.

    The optimizer steps whatever the numbers are: a non-finite loss or norm is a verdict at this very
    step (trial mode stops, full mode rolls back to a checkpoint), so the weights it leaves are never
    used; under fp16 the scaler itself skips an update whose gradients overflowed."""
    # --- forward under autocast, then losses (in fp32) ---------------------------------------------
    # The "prior" form's attention prior (None for the other forms and once it has faded out).
    log_prior = training_log_prior(batch, cfg, step=step, reduction_factor=model.cfg.reduction_factor)
    with autocast(batch.mel.device, cfg.precision), meter.watch():
        out = model(
            batch.text,
            batch.text_lengths,
            batch.mel,
            batch.mel_lengths,
            log_prior=log_prior,
            prior_layers=cfg.prior_layers,
        )
    attn_logit_max, activation_max = meter.read(constants.nan)
    mel_weight, loss_weight = constants.mel_weight, cfg.mel_weight
    if cfg.adaptive_loss_weights:
        adaptive_mean, factor = adaptive.update(
            adaptive_mean, mel_for_adaptive(out, batch), cfg.adaptive_momentum
        )
        mel_weight = cfg.mel_weight * factor  # float64, as the seed's rule in Python floats
        loss_weight = mel_weight.float()  # what a Python float becomes when it multiplies a float32 loss
    terms = compute_losses(
        out,
        batch,
        cfg,
        mel_weight=loss_weight,
        reduction_factor=model.cfg.reduction_factor,
        stop_pos_weight=constants.stop_pos_weight,
        align_share=forward_sum_share(step, cfg),
    )

    # --- backward, then the global gradient norm measured before clipping -------------------------
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms.total).backward()
    scaler.unscale_(optimizer)
    params = [p for p in model.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, constants.max_norm)  # returns the pre-clip norm

    # --- optimizer step (AdamW); the scaler skips it on inf/NaN gradients under fp16 ---------------
    loss_scale = scale_of(scaler, constants).clone()  # update() changes the scale in place
    scaler.step(optimizer)
    scaler.update()
    return StepTensors(
        loss=terms.total,
        mel=terms.mel,
        mel_l1=terms.mel_l1,
        kl=terms.align,
        stop=terms.stop,
        grad_norm=grad_norm,
        loss_scale=loss_scale,
        scale_after=scale_of(scaler, constants),
        mel_weight=mel_weight,
        adaptive_mean=adaptive_mean,
        attn_logit_max=attn_logit_max,
        activation_max=activation_max,
    )


def scale_of(scaler: torch.amp.GradScaler, constants: RunConstants) -> Tensor:
    """The GradScaler's scale as the device tensor it keeps (its public `get_scale()` reads it to the host,
    a sync); 1 without a scaler."""
    return scaler._scale if scaler.is_enabled() else constants.one


def read_step(
    tensors: StepTensors, *, step: int, lr: float, scaled: bool, start: float
) -> tuple[StepMetrics, float]:
    """The step's numbers on the host, in one transfer. float64 on the way holds every float32 value
    exactly, so each number is the one `float(tensor)` gives. Also returns the adaptive running mean."""
    t = tensors
    values = torch.stack(
        [
            x.detach().double()
            for x in (t.loss, t.mel, t.mel_l1, t.kl, t.stop, t.grad_norm, t.loss_scale, t.scale_after)
        ]
        + [
            t.mel_weight.double(),
            t.adaptive_mean.double(),
            t.attn_logit_max.double(),
            t.activation_max.double(),
        ]
    ).tolist()
    loss, mel, mel_l1, kl, stop, grad_norm, loss_scale, scale_after, mel_weight, mean, logit, act = values
    # A GradScaler skip is a finite loss whose scaled gradients overflowed; a non-finite loss is the
    # forward's own overflow (a divergence, judged by the guards), whatever the scaler did after it.
    skipped = scaled and scale_after < loss_scale and math.isfinite(loss)
    metrics = StepMetrics(
        step=step,
        loss=loss,
        mel=mel,
        mel_l1=mel_l1,
        kl=kl,
        stop=stop,
        grad_norm=grad_norm,
        lr=lr,
        loss_scale=loss_scale,
        skipped=skipped,
        step_time=time.perf_counter() - start,
        mel_weight=mel_weight,
        attn_logit_max=logit,
        activation_max=act,
    )
    return metrics, mean


def mel_for_adaptive(out: ModelOutput, batch: Batch) -> Tensor:
    """The seed's running mean tracks the raw mel L1 of the decoder output."""
    return masked_mel_loss(out.mel_before.detach().float(), batch.mel, batch.mel_lengths, None)
