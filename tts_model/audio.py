"""Reading WAVs and turning them into the natural-log mel features the seed trained on.

Files are read with soundfile, not torchaudio.load: torchaudio 2.11's loader needs torchcodec and FFmpeg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from tts_model.errors import DataError

# Peak below which a clip counts as silent (-80 dBFS): nothing a TTS model can learn from.
SILENCE_PEAK = 1e-4


@dataclass(frozen=True, kw_only=True, slots=True)
class FeatureConfig:
    """The seed's features: power mel at 22.05 kHz, log(max(mel, 1e-5)), no mean/std normalisation."""

    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    log_floor: float = 1e-5

    def __post_init__(self) -> None:
        if not 8000 <= self.sample_rate <= 192000:
            raise ValueError(f"FeatureConfig.sample_rate must be in [8000, 192000], got {self.sample_rate}")
        if self.n_fft < 16:
            raise ValueError(f"FeatureConfig.n_fft must be >= 16, got {self.n_fft}")
        if not 1 <= self.win_length <= self.n_fft:
            raise ValueError(
                f"FeatureConfig.win_length must be in [1, n_fft={self.n_fft}], got {self.win_length}"
            )
        if not 1 <= self.hop_length <= self.win_length:
            raise ValueError(
                f"FeatureConfig.hop_length must be in [1, win_length={self.win_length}], got {self.hop_length}"
            )
        if not 1 <= self.n_mels <= self.n_fft // 2 + 1:
            raise ValueError(f"FeatureConfig.n_mels must be in [1, n_fft//2+1], got {self.n_mels}")
        nyquist = self.sample_rate / 2
        if not 0.0 <= self.f_min < self.f_max <= nyquist:
            raise ValueError(
                f"FeatureConfig.f_min/f_max must satisfy 0 <= f_min < f_max <= {nyquist:g} (Nyquist), "
                f"got f_min={self.f_min}, f_max={self.f_max}"
            )
        if not 0.0 < self.log_floor < 1.0:
            raise ValueError(f"FeatureConfig.log_floor must be in (0, 1), got {self.log_floor}")

    @property
    def log_pad(self) -> float:
        """The log-mel value of silence: what padded frames are filled with."""
        return math.log(self.log_floor)


def read_wav(path: Path, sample_rate: int) -> torch.Tensor:
    """A WAV as (T,) float32 at `sample_rate`: channels averaged, other rates resampled.

    Raises DataError, naming the file, for anything that would poison training: unreadable or empty
    files, all-silent audio, NaN/Inf samples.
    """
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (T, channels)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{path}: cannot read audio ({reason}); replace it with a valid WAV file or drop its line"
        ) from exc
    if data.shape[0] == 0:
        raise DataError(f"{path}: audio file has no samples; replace it or drop its line")
    if not np.isfinite(data).all():
        raise DataError(f"{path}: audio contains NaN or Inf samples; re-export the file or drop its line")
    wave = torch.from_numpy(data).mean(dim=1)  # (T,)
    if float(wave.abs().max()) < SILENCE_PEAK:
        raise DataError(f"{path}: audio is silent (peak below {SILENCE_PEAK:g}); replace it or drop its line")
    if rate != sample_rate:
        wave = torchaudio.functional.resample(wave, orig_freq=rate, new_freq=sample_rate)
    return wave.contiguous()


class LogMel(torch.nn.Module):
    """Waveform (T,) -> natural-log mel (T_mel, n_mels), exactly as training and Griffin-Lim expect."""

    def __init__(self, cfg: FeatureConfig = FeatureConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=cfg.n_fft,
            win_length=cfg.win_length,
            hop_length=cfg.hop_length,
            f_min=cfg.f_min,
            f_max=cfg.f_max,
            n_mels=cfg.n_mels,
            power=2.0,
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        mel = self.mel(wave)  # (n_mels, T_mel)
        return torch.log(torch.clamp(mel, min=self.cfg.log_floor)).transpose(-1, -2).contiguous()
