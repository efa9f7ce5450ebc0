from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf
import torch

from tts_model.config import model_config
from tts_model.inference import dtw_distance, greedy_decode, griffin_lim, write_wav
from tts_model.model import TransformerTTS

N_MELS = 16


@dataclass(frozen=True)
class _Features:  # the fields griffin_lim reads from tts_model.audio.FeatureConfig
    sample_rate: int = 8000
    n_fft: int = 256
    hop_length: int = 64
    win_length: int = 256
    n_mels: int = N_MELS
    f_min: float = 0.0
    f_max: float = 4000.0


def _model(stop_bias: float) -> TransformerTTS:
    torch.manual_seed(0)
    model = TransformerTTS(model_config("tiny", postnet_channels=16, reduction_factor=2), 30, n_mels=N_MELS)
    with torch.no_grad():
        model.stop_head.weight.zero_()
        model.stop_head.bias.fill_(stop_bias)
    return model


def test_greedy_decode_runs_to_max_frames_without_stop():
    model = _model(stop_bias=-20.0).train()
    out = greedy_decode(model, torch.tensor([3, 4, 5, 6, 1]), max_frames=9)
    assert out.mel.shape == (9, N_MELS) and out.attention.shape == (5, 5) and not out.stopped
    assert torch.allclose(out.attention.sum(-1), torch.ones(5), atol=1e-5)
    assert model.training  # mode restored


def test_greedy_decode_stops_on_the_first_stop_frame():
    out = greedy_decode(_model(stop_bias=20.0), torch.tensor([3, 4, 1]), max_frames=50)
    assert out.stopped and out.mel.shape == (1, N_MELS) and out.attention.shape == (1, 3)


def test_greedy_decode_matches_teacher_forcing_on_its_own_output():
    """With prenet dropout off, teacher forcing on the decoded frames reproduces them: the step-wise
    decoder and the parallel forward pass compute the same function."""
    torch.manual_seed(0)
    model = TransformerTTS(model_config("tiny", postnet_channels=16, prenet_dropout=0.0), 30, n_mels=N_MELS)
    with torch.no_grad():
        model.stop_head.bias.fill_(-20.0)
    text = torch.tensor([5, 6, 7, 8, 1])
    out = greedy_decode(model, text, max_frames=9)  # 5 steps of r=2, cropped to 9 frames
    with torch.no_grad():
        forced = model.eval()(text[None], torch.tensor([5]), out.mel_before[None], torch.tensor([9]))
    assert torch.allclose(forced.mel_before[0], out.mel_before, atol=1e-5)
    assert torch.allclose(forced.mel_after[0], out.mel, atol=1e-5)
    assert torch.allclose(forced.attention[0], out.attention, atol=1e-5)


def test_griffin_lim_and_write_wav(tmp_path):
    cfg = _Features()
    torch.manual_seed(0)
    log_mel = torch.randn(20, N_MELS) - 4.0
    wave = griffin_lim(log_mel, cfg, n_iter=4)
    assert wave.dtype == np.float32 and np.isfinite(wave).all()
    assert abs(len(wave) - 19 * cfg.hop_length) <= cfg.hop_length
    path = tmp_path / "x.wav"
    write_wav(path, wave * 7.0, cfg.sample_rate)
    data, rate = sf.read(path, dtype="float32")
    info = sf.info(path)
    assert rate == cfg.sample_rate and info.subtype == "PCM_16"
    assert np.abs(data).max() == pytest.approx(0.95, abs=1e-3)
    write_wav(tmp_path / "silent.wav", np.zeros(100), cfg.sample_rate)  # silence must not divide by zero
    assert np.abs(sf.read(tmp_path / "silent.wav")[0]).max() == 0.0


def _brute_dtw(a: np.ndarray, b: np.ndarray) -> float:
    best: dict[tuple[int, int], tuple[float, int]] = {(0, 0): (np.abs(a[0] - b[0]).mean(), 1)}
    for i in range(len(a)):
        for j in range(len(b)):
            if (i, j) == (0, 0):
                continue
            prev = [best[p] for p in ((i - 1, j - 1), (i - 1, j), (i, j - 1)) if p in best]
            cost, steps = min(prev, key=lambda cs: cs[0])
            best[(i, j)] = (cost + np.abs(a[i] - b[j]).mean(), steps + 1)
    cost, steps = best[(len(a) - 1, len(b) - 1)]
    return cost / steps


def test_dtw_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, 5))
    assert dtw_distance(a, a) == 0.0
    stretched = np.repeat(a, 2, axis=0)  # same content, twice as slow
    assert dtw_distance(a, stretched) == pytest.approx(0.0)
    b = rng.normal(size=(9, 5))
    assert dtw_distance(a, b) == pytest.approx(_brute_dtw(a, b))
    assert dtw_distance(torch.tensor(a), torch.tensor(b)) == pytest.approx(dtw_distance(b, a))
    with pytest.raises(ValueError, match="T1"):
        dtw_distance(a, np.zeros((0, 5)))
