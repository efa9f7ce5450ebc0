"""The trainer's view of the data: train/val sets loaded once, and a batch stream that can resume."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rich.console import Console

from tts_model.batching import Batch, BucketBatchSampler, collate
from tts_model.corpus import CorpusSpec, ensure_corpus
from tts_model.curriculum import curriculum_subsets
from tts_model.dataset import DataConfig, SpeechDataset, load_dataset
from tts_model.espeak import DEFAULT_VOICE
from tts_model.metadata import read_metadata
from tts_model.speech_anchors import DecodeReference, attach_anchors
from tts_model.text import TextEncoder

DECODE_SENTENCES = 3  # free-running decodes at the last eval: enough to see stopping, cheap on CPU
# A full training's decodes at every eval, and a study's speech rung's at its end: the "speaks" a user
# reads is a median over them, and over 3 one sentence that stops or runs on flipped it between evals 50
# steps apart (docs/measurements.md, "The rung's verdict on 9 sentences").
SPEECH_SENTENCES = 9


class _Position(Protocol):
    epoch: int
    batch_index: int


@dataclass(frozen=True, slots=True)
class TrainData:
    train: SpeechDataset
    val: SpeechDataset
    data_cfg: DataConfig
    train_dir: Path
    val_dir: Path
    # The eSpeak voice of the decode ratio's same-words anchor: the embedded corpus's own voice, else
    # eSpeak's default (user data: see tts_model/speech_anchors.py for what the scale then means).
    anchor_voice: str = DEFAULT_VOICE

    @property
    def n_symbols(self) -> int:
        return TextEncoder(self.data_cfg.frontend).n_symbols

    @property
    def n_mels(self) -> int:
        return self.data_cfg.features.n_mels

    @property
    def fingerprint(self) -> str:
        return f"{self.train.fingerprint[:12]}-{self.val.fingerprint[:12]}"

    def val_batches(self, batch_size: int, reduction_factor: int) -> list[Batch]:
        """Validation in a fixed order, shortest first, so every eval sees the same batches."""
        order = sorted(range(len(self.val)), key=lambda i: self.val[i].mel.shape[0])
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        return [collate([self.val[i] for i in chunk], reduction_factor) for chunk in chunks]

    def decode_examples(self, n: int = DECODE_SENTENCES) -> list[DecodeReference]:
        """The first `n` validation sentences, shortest-first by text, so the decode is cheap and fixed,
        each with its decode-ratio anchors (rendered once per validation set, then read from the cache)."""
        order = sorted(range(len(self.val)), key=lambda i: (self.val[i].text.shape[0], self.val[i].id))
        examples = [self.val[i] for i in order[:n]]
        if not examples:
            return []
        texts = {row.id: row.normalized_text for row in read_metadata(self.val.folder)}
        return attach_anchors(examples, texts, self.data_cfg.features, voice=self.anchor_voice)


def load_train_data(
    train_dir: Path | None,
    val_dir: Path | None,
    data_cfg: DataConfig,
    *,
    corpus: CorpusSpec | None = None,
    console: Console | None = None,
) -> TrainData:
    """Load the user's folders, or build/reuse the embedded eSpeak corpus when neither is given."""
    voice = DEFAULT_VOICE
    if train_dir is None and val_dir is None:
        spec = corpus or CorpusSpec()
        paths = ensure_corpus(spec, console=console)
        train_dir, val_dir, voice = paths.train, paths.eval, spec.voice
    elif train_dir is None or val_dir is None:
        from tts_model.errors import DataError

        raise DataError("give both --train-data and --val-data, or neither to use the embedded corpus")
    train = load_dataset(train_dir, data_cfg, console=console)
    val = load_dataset(val_dir, data_cfg, console=console)
    return TrainData(
        train=train, val=val, data_cfg=data_cfg, train_dir=train_dir, val_dir=val_dir, anchor_voice=voice
    )


class BatchStream:
    """Bucketed batches in an order fixed by (seed, epoch), addressed by a position a checkpoint stores.

    With `curriculum_steps` > 0 the first epochs train on the shortest utterances only
    (tts_model/curriculum.py); `len()` stays a full epoch's batches, which sets a run's length in steps.
    """

    def __init__(
        self,
        dataset: SpeechDataset,
        *,
        batch_size: int,
        seed: int,
        reduction_factor: int,
        curriculum_steps: int = 0,
    ) -> None:
        self._dataset = dataset
        self._r = reduction_factor
        self._lengths = [ex.mel.shape[0] for ex in dataset.items]
        self._batch_size, self._seed = batch_size, seed
        self._sampler = BucketBatchSampler(self._lengths, batch_size=batch_size, seed=seed)
        self._curriculum = curriculum_subsets(self._lengths, batch_size, curriculum_steps)
        self._epoch = -1
        self._batches: list[list[int]] = []

    def __len__(self) -> int:
        return len(self._sampler)

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        if epoch >= len(self._curriculum):
            return self._sampler.batches(epoch)
        subset = self._curriculum[epoch]
        inner = BucketBatchSampler([self._lengths[i] for i in subset], self._batch_size, seed=self._seed)
        return [[int(subset[i]) for i in batch] for batch in inner.batches(epoch)]

    def indices(self, pos: _Position) -> list[int]:
        """The item indices of the batch at `pos`, advancing `pos` past it (into the next epoch if due)."""
        if pos.epoch != self._epoch:
            self._epoch, self._batches = pos.epoch, self._epoch_batches(pos.epoch)
        if pos.batch_index >= len(self._batches):
            pos.epoch, pos.batch_index = pos.epoch + 1, 0
            self._epoch, self._batches = pos.epoch, self._epoch_batches(pos.epoch)
        found = self._batches[pos.batch_index]
        pos.batch_index += 1
        return found

    def next_batch(self, pos: _Position) -> Batch:
        return collate([self._dataset[i] for i in self.indices(pos)], self._r)
