from __future__ import annotations

import math

import pytest
import torch

from tts_model.batching import MEL_PAD, BucketBatchSampler, collate
from tts_model.dataset import Example
from tts_model.text import PAD_ID


def _example(uid: str, n_text: int, n_frames: int, n_mels: int = 4) -> Example:
    return Example(uid, torch.arange(2, 2 + n_text), torch.randn(n_frames, n_mels))


def test_collate_pads_and_masks() -> None:
    a, b = _example("a", 3, 5), _example("b", 6, 2)
    batch = collate([a, b], reduction_factor=1)
    assert batch.text.shape == (2, 6) and batch.mel.shape == (2, 5, 4)  # (B, L), (B, T, n_mels)
    assert batch.text_lengths.tolist() == [3, 6] and batch.mel_lengths.tolist() == [5, 2]
    assert batch.text[0, 3:].eq(PAD_ID).all()
    assert torch.equal(batch.mel[1, :2], b.mel) and batch.mel[1, 2:].eq(MEL_PAD).all()
    assert MEL_PAD == pytest.approx(math.log(1e-5))
    assert batch.text_mask.tolist() == [[True] * 3 + [False] * 3, [True] * 6]
    assert batch.mel_mask.sum().item() == 7
    assert batch.ids == ("a", "b")


def test_collate_rounds_t_up_to_reduction_factor_and_stop_target() -> None:
    batch = collate([_example("a", 2, 5), _example("b", 2, 3)], reduction_factor=4)
    assert batch.mel.shape[1] == 8
    assert batch.stop_target.dtype == torch.float32
    assert batch.stop_target.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1, 1]]


def test_collate_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        collate([], 1)
    with pytest.raises(ValueError, match="reduction_factor"):
        collate([_example("a", 2, 3)], 0)


def test_batch_to_keeps_fields() -> None:
    batch = collate([_example("a", 2, 3)], 2).to("cpu")
    assert batch.ids == ("a",) and batch.mel.device.type == "cpu"


def _flat(batches: list[list[int]]) -> list[int]:
    return sorted(i for b in batches for i in b)


def test_sampler_is_deterministic_and_covers_everything() -> None:
    lengths = [(i * 37) % 101 + 10 for i in range(103)]
    sampler = BucketBatchSampler(lengths, batch_size=8, seed=3)
    assert len(sampler) == 13
    epoch0 = sampler.batches(0)
    assert epoch0 == BucketBatchSampler(lengths, batch_size=8, seed=3).batches(0)
    assert epoch0 != sampler.batches(1)
    assert epoch0 != BucketBatchSampler(lengths, batch_size=8, seed=4).batches(0)
    assert _flat(epoch0) == list(range(103)) and len(epoch0) == len(sampler)


def test_sampler_groups_similar_lengths() -> None:
    lengths = list(range(10, 410))
    batches = BucketBatchSampler(lengths, batch_size=16, seed=0).batches(0)
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    random_spread = 400 * 15 / 17  # expected range of 16 uniform draws from 400 values
    assert sum(spreads) / len(spreads) < random_spread / 4
    assert batches != sorted(batches, key=lambda b: min(lengths[i] for i in b))  # batch order shuffled


def test_sampler_without_shuffle_and_drop_last() -> None:
    lengths = [5, 1, 4, 2, 3]
    sampler = BucketBatchSampler(lengths, batch_size=2, shuffle=False)
    assert sampler.batches(0) == [[1, 3], [4, 2], [0]] == sampler.batches(7)
    dropping = BucketBatchSampler(lengths, batch_size=2, seed=1, drop_last=True)
    assert len(dropping) == 2 and all(len(b) == 2 for b in dropping.batches(0))


def test_sampler_checks() -> None:
    with pytest.raises(ValueError):
        BucketBatchSampler([], 2)
    with pytest.raises(ValueError, match="batch_size"):
        BucketBatchSampler([1], 0)
