from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import chirp, write_wav

from tts_model.audio import FeatureConfig, LogMel, read_wav
from tts_model.errors import DataError


def test_read_wav_mono_float_in_range(tmp_path: Path) -> None:
    wave = read_wav(write_wav(tmp_path / "a.wav", chirp(0.2)), 22050)
    assert wave.dtype == torch.float32 and wave.dim() == 1
    assert wave.shape[0] == int(0.2 * 22050)
    assert float(wave.abs().max()) <= 1.0


def test_stereo_is_mixed_down(tmp_path: Path) -> None:
    stereo = chirp(0.2, channels=2)
    wave = read_wav(write_wav(tmp_path / "s.wav", stereo, subtype="FLOAT"), 22050)
    assert wave.shape == (stereo.shape[0],)
    assert torch.allclose(wave, torch.from_numpy(stereo.mean(axis=1)), atol=1e-6)


def test_16k_is_resampled_to_22050(tmp_path: Path) -> None:
    wave = read_wav(write_wav(tmp_path / "r.wav", chirp(0.5, sample_rate=16000), 16000), 22050)
    assert abs(wave.shape[0] - int(0.5 * 22050)) <= 1


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("garbage.wav", b"this is not a wav file at all" * 10, "cannot read audio"),
        ("empty.wav", b"", "cannot read audio"),
    ],
)
def test_unreadable_wav(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=match) as info:
        read_wav(path, 22050)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_header_without_samples(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "nosamples.wav", np.zeros(0, dtype=np.float32))
    with pytest.raises(DataError, match="no samples|cannot read"):
        read_wav(path, 22050)


def test_silent_wav(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "silent.wav", np.zeros(4000, dtype=np.float32))
    with pytest.raises(DataError, match="silent"):
        read_wav(path, 22050)


def test_nan_in_float_wav(tmp_path: Path) -> None:
    wave = chirp(0.2)
    wave[100] = np.nan
    path = write_wav(tmp_path / "nan.wav", wave, subtype="FLOAT")
    with pytest.raises(DataError, match="NaN or Inf"):
        read_wav(path, 22050)


def test_logmel_shape_and_floor() -> None:
    cfg = FeatureConfig()
    wave = torch.from_numpy(chirp(1.0))
    mel = LogMel(cfg)(wave)
    assert mel.shape == (1 + wave.shape[0] // cfg.hop_length, cfg.n_mels)  # (T_mel, n_mels)
    assert torch.isfinite(mel).all()
    assert float(mel.min()) >= math.log(cfg.log_floor) - 1e-6
    silence = LogMel(cfg)(torch.zeros(2048))
    assert torch.allclose(silence, torch.full_like(silence, cfg.log_pad))


def test_logmel_matches_seed_formula() -> None:
    """log(max(power mel, 1e-5)) with the seed's STFT settings, computed independently of LogMel."""
    import torchaudio

    wave = torch.from_numpy(chirp(0.3))
    ref = torchaudio.transforms.MelSpectrogram(
        sample_rate=22050,
        n_fft=1024,
        win_length=1024,
        hop_length=256,
        f_min=0.0,
        f_max=8000.0,
        n_mels=80,
        power=2,
    )(wave)
    expected = torch.log(torch.clamp(ref, min=1e-5)).T
    assert torch.allclose(LogMel()(wave), expected)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sample_rate": 100}, "sample_rate"),
        ({"hop_length": 0}, "hop_length"),
        ({"win_length": 2048}, "win_length"),
        ({"f_max": 20000.0}, "f_max"),
        ({"log_floor": 0.0}, "log_floor"),
        ({"n_mels": 0}, "n_mels"),
    ],
)
def test_feature_config_checks(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        FeatureConfig(**kwargs)
