"""The training objective: how the preset's loss knobs combine the model's losses into one number.

Every knob a preset names enters here, so this file is where the seed's three dead switches
(KL weight, label smoothing, Huber) are wired: `tests/test_knobs.py` proves each one moves the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.config import TrainConfig
from trainer.schedules import prior_strength
from tts_model.batching import Batch
from tts_model.losses import (
    alignment_kl,
    annealed_log_prior,
    beta_binomial_log_prior,
    forward_sum_loss,
    guided_attention_loss,
    masked_mel_loss,
    stop_loss,
)
from tts_model.model import ModelOutput


@dataclass(frozen=True, slots=True)
class LossTerms:
    total: torch.Tensor  # weighted sum that is back-propagated
    mel: torch.Tensor  # mel term as trained (L1 or Huber), decoder + postnet, unweighted
    mel_l1: torch.Tensor  # unweighted L1 of the postnet mel: comparable across presets, what guards watch
    align: torch.Tensor  # the alignment form's loss (KL, guided or forward-sum), unweighted
    stop: torch.Tensor  # stop-token BCE, unweighted


def decoder_lengths(mel_lengths: torch.Tensor, reduction_factor: int) -> torch.Tensor:
    """Decoder steps that hold at least one real frame."""
    return torch.div(mel_lengths + reduction_factor - 1, reduction_factor, rounding_mode="floor")


def training_log_prior(
    batch: Batch, cfg: TrainConfig, *, step: int, reduction_factor: int
) -> torch.Tensor | None:
    """The "prior" form's (B, T_dec, L) bias on the cross-attention scores for a training step at `step`,
    faded by `prior_strength`; None when there is none (the other forms, or once it has faded out), so
    from `prior_anneal_end` on a step computes exactly what it would without the form's prior."""
    strength = prior_strength(step, cfg)
    if strength == 0.0:
        return None
    dec_lengths = decoder_lengths(batch.mel_lengths, reduction_factor)
    shape = (-(-batch.mel.shape[1] // reduction_factor), batch.text.shape[1])  # as the model pads
    log_prior = beta_binomial_log_prior(batch.text_lengths, dec_lengths, cfg.prior_scaling, shape=shape)
    return annealed_log_prior(log_prior, strength)


def compute_losses(
    out: ModelOutput,
    batch: Batch,
    cfg: TrainConfig,
    *,
    mel_weight: float | torch.Tensor,
    reduction_factor: int,
    stop_pos_weight: torch.Tensor | None = None,
    align_share: float = 1.0,
) -> LossTerms:
    """Combine the model's losses with the preset's weights; `mel_weight` may be adapted per step (a 0-dim
    float32 tensor then, so the step need not wait for the device). The loop builds `stop_pos_weight`
    (cfg.stop_pos_weight on the device) once per run: a tensor made from a Python number every step is a
    host-to-device copy every step. `align_share`: the share of `forward_sum_weight` this step applies
    (`trainer.schedules.forward_sum_share`). Nothing here reads a value back to the host."""
    huber = cfg.huber_delta if cfg.huber_loss else None
    # Losses in fp32 whatever the autocast dtype: F.huber_loss cannot back-propagate a bf16/fp16
    # prediction against an fp32 target ("Found dtype Float but expected BFloat16").
    mel_before, mel_after = out.mel_before.float(), out.mel_after.float()  # (B, T, n_mels)
    mel = masked_mel_loss(mel_before, batch.mel, batch.mel_lengths, huber_delta=huber) + masked_mel_loss(
        mel_after, batch.mel, batch.mel_lengths, huber_delta=huber
    )
    with torch.no_grad():
        mel_l1 = masked_mel_loss(mel_after, batch.mel, batch.mel_lengths, huber_delta=None)

    dec_lengths = decoder_lengths(batch.mel_lengths, reduction_factor)
    attention = out.attention.float()  # (B, T_dec, L)
    align_weight = cfg.kl_weight
    if cfg.alignment_loss == "kl":
        align = alignment_kl(attention, batch.text_lengths, dec_lengths, width=cfg.alignment_width)
    elif cfg.alignment_loss == "guided":
        align = guided_attention_loss(attention, batch.text_lengths, dec_lengths, g=cfg.alignment_width)
    else:
        # On the attention without the prior, averaged over the layers that carry it: the alignment
        # free-running decoding will have once the prior is gone, so the loss trains that one directly
        # (NeMo's Magpie-TTS also scores the scores before its prior).
        if cfg.prior_layers == "all":
            unbiased = torch.stack(out.unbiased_attentions).float().mean(0)  # (B, T_dec, L)
        else:
            unbiased = out.unbiased_attentions[out.alignment_layer].float()
        align = forward_sum_loss(unbiased, batch.text_lengths, dec_lengths)
        align_weight = cfg.forward_sum_weight * align_share  # the step's share (schedules.forward_sum_share)

    smoothing = cfg.label_smoothing_amount if cfg.label_smoothing else 0.0
    stop = stop_loss(
        out.stop_logits.float(),
        batch.stop_target,
        batch.mel_lengths,
        pos_weight=cfg.stop_pos_weight if stop_pos_weight is None else stop_pos_weight,
        label_smoothing=smoothing,
    )
    total = mel_weight * mel + align_weight * align + cfg.stop_weight * stop
    return LossTerms(total=total, mel=mel, mel_l1=mel_l1, align=align, stop=stop)
