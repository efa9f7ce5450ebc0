"""Known causes of divergence, injected into the real trainer: the positive controls of the diagnosis.

The diagnosis (``trainer/diagnosis.py``) is trusted to name a cause only where it names the right one
for a fault put there on purpose, and none for a run without one. These switches put the faults there.
They are for tests and benches only: context managers that patch one function of the real code for the
duration of a ``with`` block (a fault is on for the run *and* its replay, as a real defect would be),
never a CLI flag nor a ``TrainConfig`` field a preset could set. An lr far above the edge needs no
switch: it is a config.

- ``double_mask``: the seed's own defect, the cross-attention's padding mask applied twice (+1e18 on
  padded keys, SEED.md): finite in fp32, Inf in an fp16 score, NaN after the softmax;
- ``loader_lets_through``: the audio loader without its checks, as many trainers' loaders are, so a
  NaN or all-zero clip in a copy of the corpus reaches the features (the project's loader refuses it);
- ``fragile_forward_sum``: the forward-sum (CTC) alignment loss without ``zero_infinity``: Inf on an
  utterance whose text is longer than its decoder steps (a clip cut short while its text was kept).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor

import trainer.loss_terms as loss_terms
import tts_model.dataset as dataset
from tts_model.losses import _Q_FLOOR
from tts_model.model import Attention

MASK_BIAS = -1e9  # the additive padding mask the seed used


@contextlib.contextmanager
def double_mask() -> Iterator[None]:
    """Every cross-attention adds the padding mask's square (its mask applied twice) instead of masking."""
    real = Attention.forward

    def forward(
        self: Attention,
        x: Tensor,
        kv: Tensor,
        *,
        key_mask: Tensor | None,
        causal: bool = False,
        weights: bool = False,
        score_bias: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        if not weights or key_mask is None:  # self-attention (SDPA) is untouched
            return real(self, x, kv, key_mask=key_mask, causal=causal, weights=weights, score_bias=score_bias)
        q = self._split(self.q(x))
        k, v = (self._split(t) for t in self.kv(kv).chunk(2, dim=-1))
        p = self.dropout if self.training else 0.0
        scores = self.scores(q, k) / math.sqrt(q.shape[-1])  # (B, H, T, S), fp16 under fp16 autocast
        pad = (~key_mask)[:, None, None, :].to(scores.dtype) * MASK_BIAS  # -1e9 on padding, in its dtype
        scores = scores + pad * pad  # the defect: +1e18 on padding in fp32, +Inf in fp16
        attn = self._softmax(scores.float(), key_mask)
        unbiased = None
        if score_bias is not None:
            unbiased = attn
            attn = self._softmax(scores.float() + score_bias[:, None].float(), key_mask)
        y = F.dropout(attn.to(v.dtype), p, self.training) @ v
        y = y.transpose(1, 2).reshape(x.shape)
        return self.out(y), attn, unbiased

    Attention.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        Attention.forward = real  # type: ignore[method-assign]


@contextlib.contextmanager
def loader_lets_through() -> Iterator[None]:
    """The data set loader reads audio without refusing NaN, Inf or silent clips."""
    real = dataset.read_wav

    def read_wav(path: Path, sample_rate: int) -> Tensor:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        wave = torch.from_numpy(np.ascontiguousarray(data)).mean(dim=1)
        if rate != sample_rate:
            wave = torchaudio.functional.resample(wave, orig_freq=rate, new_freq=sample_rate)
        return wave.contiguous()

    dataset.read_wav = read_wav
    try:
        yield
    finally:
        dataset.read_wav = real


@contextlib.contextmanager
def fragile_forward_sum() -> Iterator[None]:
    """The forward-sum alignment loss as it is without ``zero_infinity``: an impossible alignment is Inf."""
    real = loss_terms.forward_sum_loss

    def forward_sum_loss(
        attn: Tensor, text_lengths: Tensor, dec_lengths: Tensor, blank_logprob: float = -1.0
    ) -> Tensor:
        b, _, n_text = attn.shape
        log_attn = attn.float().clamp_min(_Q_FLOOR).log()
        with_blank = F.pad(log_attn, (1, 0), value=blank_logprob).log_softmax(-1)
        targets = torch.arange(1, n_text + 1, device=attn.device).expand(b, n_text)
        return F.ctc_loss(
            with_blank.transpose(0, 1), targets, dec_lengths, text_lengths, blank=0, reduction="mean"
        )

    loss_terms.forward_sum_loss = forward_sum_loss
    try:
        yield
    finally:
        loss_terms.forward_sum_loss = real


def corrupt_clip(wav: Path, how: str) -> None:
    """Overwrite a WAV of a corpus *copy* in place: ``nan`` (every sample NaN from a quarter of the way
    in) or ``zero`` (every sample 0), same length and rate, as float32 so NaN survives the file."""
    data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    if how == "nan":
        data[len(data) // 4 :] = np.nan
    elif how == "zero":
        data[:] = 0.0
    else:
        raise ValueError(f"corrupt_clip: how must be 'nan' or 'zero', got {how!r}")
    sf.write(str(wav), data, rate, subtype="FLOAT")


def cut_clip(wav: Path, seconds: float) -> None:
    """Cut a WAV of a corpus copy to its first ``seconds``, its transcript kept (the seed's long-clip defect
    the other way round): text longer than its frames."""
    data, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    sf.write(str(wav), data[: int(seconds * rate)], rate, subtype="FLOAT")
