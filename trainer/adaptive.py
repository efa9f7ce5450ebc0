"""The seed's adaptive mel-loss weight, reproduced as defined (including its flaw), computed on the device.

The seed scales the mel weight by clip(0.5 + 0.5 * tanh(loss / running_mean - 1), 0.7, 1.3). Since
tanh < 1, 0.5 + 0.5 * tanh(.) is always below 1.0, so the factor lives in [0.7, 1.0] (1.0 only where
float tanh rounds to 1, a loss ~20x its mean): the 1.3 end is never reached, and at loss == running mean
(the steady state) tanh(0) = 0 gives 0.5, clipped to 0.7. In a prototype run the weight sat at 0.7 x
base. We keep it that way because the search validates the seed's presets as they were; "adaptive on"
mostly means "mel weight x 0.7".

The rule runs on 0-dim float64 tensors so a training step never waits for the device to read the loss
(one host sync a step, see trainer/loop.py). float64 on purpose: each operation is the IEEE double
operation the same formula in Python floats performs, so the running mean is the float rule's bit for
bit; torch's tanh may round the last bit of a double differently from the C library's, which the float32
weight the loss is multiplied by practically never sees (tests/test_adaptive.py checks both against `math.tanh`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

FACTOR_MIN = 0.7
FACTOR_MAX = 1.3  # the seed's upper clip; unreachable, see the module docstring


def initial_mean(mean: float | None, device: torch.device) -> Tensor:
    """The running mean as a tensor: a checkpoint stores it as a float, or None before the first step
    (NaN on the device: "no mean yet")."""
    return torch.tensor(math.nan if mean is None else mean, dtype=torch.float64, device=device)


def stored_mean(mean: float) -> float | None:
    """The checkpoint's form of a mean read back from the device (NaN: none yet)."""
    return None if math.isnan(mean) else mean


def factor_for(mel_loss: Tensor, mean: Tensor) -> Tensor:
    """The seed's multiplier on the base mel weight for a loss against its running mean."""
    ratio = torch.where(mean > 0.0, mel_loss / mean, 1.0)
    return (0.5 + 0.5 * torch.tanh(ratio - 1.0)).clamp(FACTOR_MIN, FACTOR_MAX)


def update(mean: Tensor, mel_loss: Tensor, momentum: float) -> tuple[Tensor, Tensor]:
    """Fold this step's mel loss into the running mean (EMA: mean = m * mean + (1 - m) * loss; the first
    step starts it at the loss), then return the new mean and this step's factor.

    A non-finite loss leaves the mean unchanged and gives factor 1.0: the divergence guards judge that
    step, and a NaN must not poison the mean of a run that recovers.
    """
    loss = mel_loss.detach().double()
    finite = torch.isfinite(loss)
    folded = torch.where(torch.isnan(mean), loss, momentum * mean + (1.0 - momentum) * loss)
    new_mean = torch.where(finite, folded, mean)
    factor = torch.where(finite, factor_for(loss, new_mean), 1.0)
    return new_mean, factor
