"""Model sizes as frozen, checked values: a typo or an impossible shape fails at construction, not mid-trial."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from common.errors import UserError

NORMS = ("post", "pre")
PriorLayers = Literal["all", "alignment"]  # which decoder layers' cross-attention an alignment prior biases


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelConfig:
    """Shape of the transformer TTS. Defaults are the `tiny` size (CPU-trainable).

    `attention_dropout` (on attention weights) is 0 for `tiny`: on CPU it forces SDPA onto its slow path
    and its Bernoulli masks cost a third of a training step; the larger, GPU sizes use 0.1.
    `tiny` decodes r=3 frames per step (the larger sizes r=2): it cuts a CPU training step by ~20%.
    `prenet_dropout` stays on at inference (Tacotron / Transformer-TTS): it is the noise that keeps the
    autoregressive decoder from copying its own input. Set it to 0.0 only in tests that compare outputs.
    """

    enc_dim: int = 128
    enc_layers: int = 2
    enc_heads: int = 2
    dec_dim: int = 128
    dec_layers: int = 2
    dec_heads: int = 2
    ffn_mult: int = 2
    prenet_dim: int = 128
    enc_prenet_layers: int = 3
    conv_kernel: int = 5
    postnet_channels: int = 64
    postnet_layers: int = 5
    reduction_factor: int = 3
    dropout: float = 0.1
    attention_dropout: float = 0.0
    prenet_dropout: float = 0.5
    norm: str = "post"
    alignment_layer: int = -1

    def __post_init__(self) -> None:
        for name in ("enc_dim", "enc_heads", "dec_dim", "dec_heads", "ffn_mult", "prenet_dim"):
            _check_int(name, getattr(self, name), low=1)
        for name in ("enc_layers", "dec_layers", "reduction_factor", "postnet_channels"):
            _check_int(name, getattr(self, name), low=1)
        _check_int("enc_prenet_layers", self.enc_prenet_layers, low=0)
        _check_int("postnet_layers", self.postnet_layers, low=2)
        _check_int("conv_kernel", self.conv_kernel, low=1)
        if self.conv_kernel % 2 == 0:
            raise ValueError(
                f"ModelConfig.conv_kernel must be odd (same-length convs), got {self.conv_kernel}"
            )
        if self.enc_dim % self.enc_heads:
            raise ValueError(
                f"ModelConfig.enc_dim ({self.enc_dim}) must be divisible by enc_heads ({self.enc_heads})"
            )
        if self.dec_dim % self.dec_heads:
            raise ValueError(
                f"ModelConfig.dec_dim ({self.dec_dim}) must be divisible by dec_heads ({self.dec_heads})"
            )
        for name in ("dropout", "attention_dropout", "prenet_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"ModelConfig.{name} must be in [0, 1), got {value!r}")
        if self.norm not in NORMS:
            raise ValueError(f"ModelConfig.norm must be one of {NORMS}, got {self.norm!r}")
        if not -self.dec_layers <= self.alignment_layer < self.dec_layers:
            raise ValueError(
                f"ModelConfig.alignment_layer must be in [{-self.dec_layers}, {self.dec_layers - 1}] "
                f"(dec_layers={self.dec_layers}), got {self.alignment_layer}"
            )


def _check_int(name: str, value: Any, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"ModelConfig.{name} must be an integer >= {low}, got {value!r}")


# `normal` has the seed's "tiny" dimensions (text encoder 256 x 4, decoder 768 x 8, 64-dim heads).
_SIZES: dict[str, ModelConfig] = {
    "tiny": ModelConfig(),
    "small": ModelConfig(
        enc_dim=192,
        enc_layers=3,
        enc_heads=3,
        dec_dim=384,
        dec_layers=4,
        dec_heads=6,
        ffn_mult=4,
        prenet_dim=256,
        postnet_channels=256,
        reduction_factor=2,
        attention_dropout=0.1,
    ),
    "normal": ModelConfig(
        enc_dim=256,
        enc_layers=4,
        enc_heads=4,
        dec_dim=768,
        dec_layers=8,
        dec_heads=12,
        ffn_mult=4,
        prenet_dim=256,
        postnet_channels=512,
        reduction_factor=2,
        attention_dropout=0.1,
    ),
    "big": ModelConfig(
        enc_dim=512,
        enc_layers=6,
        enc_heads=8,
        dec_dim=1024,
        dec_layers=12,
        dec_heads=16,
        ffn_mult=4,
        prenet_dim=256,
        postnet_channels=512,
        reduction_factor=2,
        attention_dropout=0.1,
    ),
}
MODEL_SIZES = frozenset(_SIZES)


def model_config(size: str, **overrides: Any) -> ModelConfig:
    """The named size, with field overrides (e.g. `norm="pre"`); each override is checked like any field."""
    if size not in _SIZES:
        known = ", ".join(_SIZES)
        raise UserError(f"unknown model size {size!r}: choose one of {known}")
    unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(ModelConfig)})
    if unknown:
        raise UserError(f"unknown ModelConfig field(s) {', '.join(unknown)}: check the override names")
    return dataclasses.replace(_SIZES[size], **overrides)
