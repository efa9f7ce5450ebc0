"""Tiny LJSpeech-style folders written on the fly, so data tests need no downloaded corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def chirp(seconds: float = 0.3, sample_rate: int = 22050, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A rising tone plus a little noise: audible, non-silent, different per seed. (T,) or (T, channels)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 200.0 + 50.0 * seed
    wave = 0.3 * np.sin(2 * np.pi * (f0 * t + 400.0 * t**2))
    wave += 0.01 * np.random.default_rng(seed).standard_normal(t.shape)
    wave = wave.astype(np.float32)
    if channels > 1:
        wave = np.stack([wave * (c + 1) / channels for c in range(channels)], axis=1)
    return wave


def write_wav(path: Path, wave: np.ndarray, sample_rate: int = 22050, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sample_rate, subtype=subtype)
    return path


def make_dataset(
    root: Path,
    texts: list[str] | None = None,
    *,
    seconds: float = 0.3,
    metadata_name: str = "metadata.csv",
    three_fields: bool = True,
) -> Path:
    """A folder with `metadata_name` and one chirp per line in wavs/; returns the folder."""
    texts = texts if texts is not None else ["Hello there.", "It is 3 o'clock!", "In 1984, we left?"]
    lines = []
    for i, text in enumerate(texts):
        uid = f"utt{i:03d}"
        write_wav(root / "wavs" / f"{uid}.wav", chirp(seconds * (1 + 0.25 * i), seed=i))
        lines.append(f"{uid}|{text}|{text}" if three_fields else f"{uid}|{text}")
    (root / metadata_name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
