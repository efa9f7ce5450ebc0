"""Free-running synthesis: greedy decoding, Griffin-Lim, WAV writing, and a DTW distance between mels.

Teacher-forced mel loss can look excellent for a model whose attention never aligned; greedy decoding
is what shows it (no stop, or babble), so the stability verdict runs it on a few validation sentences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch import Tensor

from tts_model.model import TransformerTTS

if TYPE_CHECKING:
    from tts_model.audio import FeatureConfig


@dataclass
class Decoded:
    mel: Tensor  # (T, n_mels) after the postnet
    mel_before: Tensor  # (T, n_mels) the decoder's frames, as fed back to it
    attention: Tensor  # (T_dec, L) head-averaged cross-attention of the alignment layer
    stopped: bool  # False: max_frames was reached without a stop token


@torch.no_grad()
def greedy_decode(
    model: TransformerTTS, text: Tensor, *, max_frames: int, stop_threshold: float = 0.5
) -> Decoded:
    """Decode one utterance (text (L,) long) r frames per step until a stop probability exceeds the threshold.

    The decoder prenet's dropout stays on (as in training). Its output is computed once per new frame and
    cached, so earlier steps keep the dropout noise they were generated with; the decoder stack itself is
    rerun over the prefix each step (O(T^2), fine for a few hundred steps)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        text = text.to(device)[None]  # (1, L)
        memory, memory_mask = model.encode(text, torch.tensor([text.shape[1]], device=device))
        r, n_mels = model.r, model.n_mels
        frame = torch.zeros(1, 1, n_mels, device=device)  # step 0 input
        prenet_out: list[Tensor] = []
        mels: list[Tensor] = []
        rows: list[Tensor] = []
        stopped = False
        for _ in range(max(1, -(-max_frames // r))):
            prenet_out.append(model.decoder_prenet(frame))  # (1, 1, dec_dim)
            # No alignment prior, whatever the model trained with: the prior needs the utterance's length.
            mel, stop, attentions, _ = model.decode(torch.cat(prenet_out, dim=1), memory, memory_mask)
            group = mel[:, -r:]  # (1, r, n_mels)
            mels.append(group)
            rows.append(attentions[model.cfg.alignment_layer][0, -1])  # (L,)
            hits = (torch.sigmoid(stop[0, -r:]) > stop_threshold).nonzero()
            if len(hits):
                mels[-1] = group[:, : int(hits[0]) + 1]  # keep frames up to and including the stop frame
                stopped = True
                break
            frame = group[:, -1:]
        mel_before = torch.cat(mels, dim=1)[:, :max_frames]  # (1, T, n_mels)
        mask = torch.ones(mel_before.shape[:2], dtype=torch.bool, device=device)
        mel_after = model.postnet_residual(mel_before, mask)[0]
        return Decoded(mel=mel_after, mel_before=mel_before[0], attention=torch.stack(rows), stopped=stopped)
    finally:
        model.train(was_training)


def griffin_lim(log_mel: Tensor, feature_cfg: FeatureConfig, n_iter: int = 32) -> np.ndarray:
    """Natural-log power mel (T, n_mels) -> waveform float32, for listening, not for quality.

    An untrained model often stops after its first decoder step (1-3 frames), and the inverse STFT
    cannot invert fewer than ~n_fft / hop frames, so short inputs are padded with silence (the log
    floor): early evals still give a (near-silent) WAV instead of an error.
    """
    cfg = feature_cfg
    n_stft = cfg.n_fft // 2 + 1
    log_mel = log_mel.detach().float().cpu()  # (T, n_mels)
    min_frames = cfg.n_fft // cfg.hop_length + 1
    if log_mel.shape[0] < min_frames:
        silence = torch.full((min_frames - log_mel.shape[0], log_mel.shape[1]), math.log(cfg.log_floor))
        log_mel = torch.cat([log_mel, silence])
    mel = torch.exp(log_mel).T  # (n_mels, T) power mel
    inverse = torchaudio.transforms.InverseMelScale(
        n_stft=n_stft, n_mels=cfg.n_mels, sample_rate=cfg.sample_rate, f_min=cfg.f_min, f_max=cfg.f_max
    )
    spec = inverse(mel).clamp_min(0.0)  # (n_stft, T) power spectrogram
    gl = torchaudio.transforms.GriffinLim(
        n_fft=cfg.n_fft, n_iter=n_iter, win_length=cfg.win_length, hop_length=cfg.hop_length, power=2.0
    )
    return gl(spec).numpy().astype(np.float32)


def write_wav(path: Path | str, wave: np.ndarray, sample_rate: int) -> None:
    """PCM_16 WAV, peak-normalised to 0.95 so Griffin-Lim output of any scale is audible and never clips."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    wave = np.nan_to_num(wave, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    if peak > 0.0:
        wave = wave * (0.95 / peak)
    sf.write(str(path), wave, sample_rate, subtype="PCM_16")


def dtw_distance(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """Mean per-bin L1 between frames along the DTW path of a (T1, n) and b (T2, n); compares a free-running
    mel with the reference although their lengths differ."""
    a = np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if isinstance(b, Tensor) else b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(
            f"dtw_distance needs (T1, n) and (T2, n) with T1, T2 >= 1, got {a.shape} and {b.shape}"
        )
    cost = np.abs(a[:, None, :] - b[None, :, :]).mean(-1)  # (T1, T2)
    t1, t2 = cost.shape
    acc = np.full((t1 + 1, t2 + 1), np.inf)  # acc[i, j]: best path cost to cell (i-1, j-1)
    steps = np.zeros((t1 + 1, t2 + 1), dtype=np.int64)  # its length, to turn the sum into a mean
    acc[0, 0] = 0.0
    for k in range(2, t1 + t2 + 1):  # anti-diagonals i + j = k depend only on the two before them
        i = np.arange(max(1, k - t2), min(t1, k - 1) + 1)
        j = k - i
        options = np.stack([acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]])  # diag, up, left
        lengths = np.stack([steps[i - 1, j - 1], steps[i - 1, j], steps[i, j - 1]])
        best = options.argmin(0)  # ties go to the diagonal, then up
        cols = np.arange(len(i))
        acc[i, j] = cost[i - 1, j - 1] + options[best, cols]
        steps[i, j] = lengths[best, cols] + 1
    return float(acc[t1, t2] / steps[t1, t2])
