"""The length curriculum: which items each early epoch trains on, and the stream that serves them."""

from __future__ import annotations

import numpy as np
import pytest
from corpus_fixture import cache_env, corpus_paths, train_data  # noqa: F401  (pytest fixtures)

from trainer.data import BatchStream, TrainData
from trainer.run_state import Position
from tts_model.curriculum import START_SHARE, curriculum_subsets

LENGTHS = [50, 10, 40, 20, 30, 90, 60, 80, 70, 100]  # item i's length; the shortest are 1, 3, 4, 2


def test_no_curriculum_steps_means_no_curriculum_epochs() -> None:
    assert curriculum_subsets(LENGTHS, batch_size=2, steps=0) == []


def test_the_first_epoch_trains_on_the_shortest_share_and_the_share_grows_to_all() -> None:
    subsets = curriculum_subsets(LENGTHS, batch_size=2, steps=6)
    assert subsets[0].tolist() == [1, 3, 4]  # ceil(0.3 * 10) shortest: lengths 10, 20, 30
    sizes = [len(s) for s in subsets]
    assert sizes == sorted(sizes) and sizes[-1] < len(LENGTHS)  # growing; the epoch after trains on all
    steps = np.cumsum([0] + [-(-n // 2) for n in sizes])  # each epoch's first step
    assert steps[-2] < 6 <= steps[-1]  # the last curriculum epoch starts before step 6, the next after
    for subset, start in zip(subsets, steps, strict=False):
        expected = START_SHARE + (1 - START_SHARE) * start / 6
        assert len(subset) == max(2, int(np.ceil(expected * len(LENGTHS))))
        assert max(LENGTHS[i] for i in subset) < min(LENGTHS[i] for i in range(10) if i not in subset)


def test_a_tiny_share_still_makes_a_whole_batch() -> None:
    assert len(curriculum_subsets(LENGTHS, batch_size=4, steps=10, start=0.1)[0]) == 4


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"steps": -1}, {"start": 0.0}])
def test_bad_arguments_are_refused(bad: dict) -> None:
    kwargs = {"batch_size": 2, "steps": 4, **bad}
    with pytest.raises(ValueError):
        curriculum_subsets(LENGTHS, kwargs.pop("batch_size"), kwargs.pop("steps"), **kwargs)


def _walk(stream: BatchStream, pos: Position, n: int) -> list[list[int]]:
    return [stream.indices(pos) for _ in range(n)]


def test_the_stream_serves_short_utterances_first_then_everything(train_data: TrainData) -> None:  # noqa: F811
    lengths = [ex.mel.shape[0] for ex in train_data.train.items]
    plain = BatchStream(train_data.train, batch_size=4, seed=0, reduction_factor=2)
    taught = BatchStream(train_data.train, batch_size=4, seed=0, reduction_factor=2, curriculum_steps=12)
    assert len(taught) == len(plain)  # a full epoch's batches: the run's length in steps is unchanged
    first = _walk(taught, Position(), 2)
    shortest = sorted(lengths)[int(np.ceil(START_SHARE * len(lengths))) - 1]
    assert all(lengths[i] <= shortest for batch in first for i in batch)
    assert _walk(plain, Position(), 2) != first
    pos = Position()
    seen = _walk(taught, pos, 40)
    assert pos.epoch > 0 and {i for batch in seen for i in batch} == set(range(len(lengths)))
    # past the curriculum, epochs are the plain stream's own
    late = Position(epoch=pos.epoch + 1)
    assert _walk(taught, late, 3) == _walk(plain, Position(epoch=pos.epoch + 1), 3)


def test_the_stream_resumes_mid_curriculum_where_it_stopped(train_data: TrainData) -> None:  # noqa: F811
    stream = BatchStream(train_data.train, batch_size=4, seed=0, reduction_factor=2, curriculum_steps=12)
    pos = Position()
    _walk(stream, pos, 5)
    saved = Position(epoch=pos.epoch, batch_index=pos.batch_index)
    ahead = _walk(stream, pos, 6)
    fresh = BatchStream(train_data.train, batch_size=4, seed=0, reduction_factor=2, curriculum_steps=12)
    assert _walk(fresh, saved, 6) == ahead
