"""The training objective: how the preset's loss knobs combine the model's losses into one number.

Every knob a preset names enters here, so this file is where the seed's three dead switches
(KL weight, label smoothing, Huber) are wired: `tests/test_knobs.py` proves each one moves the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.config import TrainConfig
from tts_model.batching import Batch
from tts_model.losses import alignment_kl, guided_attention_loss, masked_mel_loss, stop_loss
from tts_model.model import ModelOutput


@dataclass(frozen=True, slots=True)
class LossTerms:
    total: torch.Tensor  # weighted sum that is back-propagated
    mel: torch.Tensor  # mel term as trained (L1 or Huber), decoder + postnet, unweighted
    mel_l1: torch.Tensor  # unweighted L1 of the postnet mel: comparable across presets, what guards watch
    align: torch.Tensor  # the "KL" knob's alignment loss, unweighted
    stop: torch.Tensor  # stop-token BCE, unweighted


def decoder_lengths(mel_lengths: torch.Tensor, reduction_factor: int) -> torch.Tensor:
    """Decoder steps that hold at least one real frame."""
    return torch.div(mel_lengths + reduction_factor - 1, reduction_factor, rounding_mode="floor")


def compute_losses(
    out: ModelOutput,
    batch: Batch,
    cfg: TrainConfig,
    *,
    mel_weight: float | torch.Tensor,
    reduction_factor: int,
    stop_pos_weight: torch.Tensor | None = None,
) -> LossTerms:
    """Combine the model's losses with the preset's weights; `mel_weight` may be adapted per step (a 0-dim
    float32 tensor then, so the step need not wait for the device). The loop builds `stop_pos_weight`
    (cfg.stop_pos_weight on the device) once per run: a tensor made from a Python number every step is a
    host-to-device copy every step. Nothing here reads a value back to the host."""
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
    if cfg.alignment_loss == "kl":
        align = alignment_kl(attention, batch.text_lengths, dec_lengths, width=cfg.alignment_width)
    else:
        align = guided_attention_loss(attention, batch.text_lengths, dec_lengths, g=cfg.alignment_width)

    smoothing = cfg.label_smoothing_amount if cfg.label_smoothing else 0.0
    stop = stop_loss(
        out.stop_logits.float(),
        batch.stop_target,
        batch.mel_lengths,
        pos_weight=cfg.stop_pos_weight if stop_pos_weight is None else stop_pos_weight,
        label_smoothing=smoothing,
    )
    total = mel_weight * mel + cfg.kl_weight * align + cfg.stop_weight * stop
    return LossTerms(total=total, mel=mel, mel_l1=mel_l1, align=align, stop=stop)
