"""A small real eSpeak corpus shared by the trainer tests, built once per pytest session.

Trainer tests need real speech (the tiny model must be able to align on it), but a full corpus costs
time. The corpus and its feature cache live under the session's base temp folder, found by a fixed
name, so every test module that imports these fixtures reuses one build: the first module builds it,
the others find a finished corpus and cached features. Nothing is written to the home folder:
TTS_STABILITY_CACHE points into the temp folder for the whole session.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from trainer.data import TrainData, load_train_data
from tts_model.cache import CACHE_ENV
from tts_model.corpus import CorpusPaths, CorpusSpec, ensure_corpus
from tts_model.dataset import DataConfig

SMALL_SPEC = CorpusSpec(train_utterances=24, eval_utterances=8, seed=0, min_seconds=1.0, max_seconds=3.0)
CORPUS_DIR = "small_corpus"
CACHE_DIR = "tts_cache"


def _quiet() -> Console:
    return Console(quiet=True)


def small_corpus(tmp_root: Path) -> CorpusPaths:
    """The 24 + 8 utterance corpus under `tmp_root`, built on first use (seed 0).

    Built in a fresh process: eSpeak's wave generator carries phase from one call to the next, so
    audio synthesised after other tests' eSpeak calls differs by a few samples, and the seeded
    golden-curve tests would depend on test order. A fresh process makes the corpus byte-identical.
    """
    root = Path(tmp_root) / CORPUS_DIR
    code = (
        "import sys; from pathlib import Path; from tts_model.corpus import CorpusSpec, ensure_corpus; "
        f"ensure_corpus(CorpusSpec(**{dataclasses.asdict(SMALL_SPEC)!r}), Path(sys.argv[1]))"
    )
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code, str(root)], check=True, cwd=repo, capture_output=True)
    return ensure_corpus(SMALL_SPEC, root, console=_quiet())


def small_train_data(paths: CorpusPaths) -> TrainData:
    """Train/val sets of `paths` with the default features (cache: wherever TTS_STABILITY_CACHE points)."""
    return load_train_data(paths.train, paths.eval, DataConfig(), console=_quiet())


def subset(data: TrainData, n: int) -> TrainData:
    """A TrainData whose train *and* val sets are the `n` shortest training utterances (overfit tests:
    short utterances make the many steps such a test needs cheap)."""
    items = sorted(data.train.items, key=lambda ex: (ex.mel.shape[0], ex.id))[:n]
    small = dataclasses.replace(data.train, items=items)
    return dataclasses.replace(data, train=small, val=small)


@pytest.fixture(scope="session")
def cache_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the project's cache at the session's temp folder while the tests run."""
    root = tmp_path_factory.getbasetemp() / CACHE_DIR
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(root))
        yield root


@pytest.fixture(scope="session")
def corpus_paths(tmp_path_factory: pytest.TempPathFactory, cache_env: Path) -> CorpusPaths:
    return small_corpus(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def train_data(corpus_paths: CorpusPaths, cache_env: Path) -> TrainData:
    return small_train_data(corpus_paths)
