"""Padding, masks and a length-bucketed batch order, deterministic under a seed.

Batches of similar lengths waste little compute on padding; shuffling the batch order (and jittering
which utterances share a batch) keeps epochs from seeing the same sequence of batches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from tts_model.dataset import Example
from tts_model.text import PAD_ID

MEL_PAD = math.log(1e-5)  # log-mel of silence at the default log_floor: padding looks like silence


@dataclass(slots=True)
class Batch:
    text: torch.Tensor  # (B, L) long, PAD_ID after each length
    text_lengths: torch.Tensor  # (B,) long
    mel: torch.Tensor  # (B, T, n_mels) float, MEL_PAD after each length, T a multiple of r
    mel_lengths: torch.Tensor  # (B,) long
    stop_target: torch.Tensor  # (B, T) float, 1.0 from frame mel_length-1 on
    ids: tuple[str, ...] = ()

    def to(self, device: torch.device | str) -> Batch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device, non_blocking=True)
        return Batch(**moved)

    @property
    def text_mask(self) -> torch.Tensor:
        """(B, L) bool, True on real symbols."""
        return torch.arange(self.text.shape[1], device=self.text.device)[None, :] < self.text_lengths[:, None]

    @property
    def mel_mask(self) -> torch.Tensor:
        """(B, T) bool, True on real frames."""
        return torch.arange(self.mel.shape[1], device=self.mel.device)[None, :] < self.mel_lengths[:, None]


def collate(examples: Sequence[Example], reduction_factor: int = 1, *, mel_pad: float = MEL_PAD) -> Batch:
    """Pad a list of examples into a Batch; T is rounded up to a multiple of `reduction_factor`."""
    if not examples:
        raise ValueError("collate needs at least one example")
    if reduction_factor < 1:
        raise ValueError(f"reduction_factor must be >= 1, got {reduction_factor}")
    batch_size = len(examples)
    # Sizes from the Python shapes, not from the length tensors: reading a tensor here would be one
    # more host read in every training step (tests/test_host_syncs.py counts them).
    text_sizes = [ex.text.shape[0] for ex in examples]
    mel_sizes = [ex.mel.shape[0] for ex in examples]
    text_lengths = torch.tensor(text_sizes, dtype=torch.long)
    mel_lengths = torch.tensor(mel_sizes, dtype=torch.long)
    max_t = -(-max(mel_sizes) // reduction_factor) * reduction_factor
    n_mels = examples[0].mel.shape[1]

    text = torch.full((batch_size, max(text_sizes)), PAD_ID, dtype=torch.long)  # (B, L)
    mel = torch.full((batch_size, max_t, n_mels), mel_pad, dtype=torch.float32)  # (B, T, n_mels)
    for i, ex in enumerate(examples):
        text[i, : ex.text.shape[0]] = ex.text
        mel[i, : ex.mel.shape[0]] = ex.mel
    frames = torch.arange(max_t)[None, :]  # (1, T)
    stop_target = (frames >= (mel_lengths[:, None] - 1)).float()  # (B, T)
    ids = tuple(ex.id for ex in examples)
    return Batch(text, text_lengths, mel, mel_lengths, stop_target, ids)


class BucketBatchSampler:
    """Batches of indices grouped by length, in an order fixed by (seed, epoch).

    Each epoch sorts the indices by length times a small random factor (±`jitter`), cuts the sorted
    list into batches and shuffles the batch order. Similar lengths share a batch, yet which ones do
    changes from epoch to epoch. With shuffle=False the order is plain sorted-by-length, for evaluation.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        *,
        drop_last: bool = False,
        jitter: float = 0.1,
    ) -> None:
        if len(lengths) == 0:
            raise ValueError("BucketBatchSampler needs at least one length")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        self.lengths = np.asarray(lengths, dtype=np.float64)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.jitter = jitter

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batches(self, epoch: int) -> list[list[int]]:
        n = len(self.lengths)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])
            keys = self.lengths * rng.uniform(1.0 - self.jitter, 1.0 + self.jitter, size=n)
            order = np.lexsort((rng.permutation(n), keys))  # ties broken at random, not by index
        else:
            order = np.argsort(self.lengths, kind="stable")
        cut = [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        if self.drop_last and len(cut[-1]) < self.batch_size:
            cut.pop()
        if self.shuffle:
            cut = [cut[i] for i in rng.permutation(len(cut))]
        return cut
