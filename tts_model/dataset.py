"""LJSpeech-style data sets: metadata, validation with one clear error per problem, cached features.

Features are computed once per data set and feature settings, then every run and trial loads them from
the cache. The cache key covers the config, the metadata bytes and each WAV's name, size and mtime, so
editing any of them recomputes instead of serving stale features.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torchaudio
from rich.progress import Progress

from tts_model.audio import FeatureConfig, LogMel, read_wav
from tts_model.cache import atomic_write, default_cache_dir
from tts_model.errors import DataError
from tts_model.metadata import MetadataRow, metadata_path, read_metadata, wav_paths
from tts_model.text import FRONTENDS, SYMBOLS, Frontend, TextEncoder

if TYPE_CHECKING:
    from rich.console import Console

CACHE_FORMAT = 1  # bump when the cached layout or the feature code changes meaning


@dataclass(frozen=True, kw_only=True, slots=True)
class DataConfig:
    frontend: Frontend = "chars"
    max_frames: int = 1000  # utterances with more mel frames are skipped (counted), never cut
    max_text_len: int = 400  # symbols including EOS; longer utterances are skipped (counted)
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def __post_init__(self) -> None:
        if self.frontend not in FRONTENDS:
            raise ValueError(f"DataConfig.frontend must be one of {FRONTENDS}, got {self.frontend!r}")
        if self.max_frames < 1:
            raise ValueError(f"DataConfig.max_frames must be >= 1, got {self.max_frames}")
        if self.max_text_len < 2:
            raise ValueError(
                f"DataConfig.max_text_len must be >= 2 (one symbol + EOS), got {self.max_text_len}"
            )


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    text: torch.Tensor  # (L,) long, ends with EOS
    mel: torch.Tensor  # (T, n_mels) float32 log-mel


@dataclass(slots=True)
class SpeechDataset:
    items: list[Example]
    skipped: dict[str, int]  # reason -> count
    unknown_chars: Counter[str]
    fingerprint: str  # the feature-cache key: equal fingerprints mean identical features
    config: DataConfig
    folder: Path

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Example:
        return self.items[index]

    def __iter__(self) -> Iterator[Example]:
        return iter(self.items)

    @property
    def n_symbols(self) -> int:
        return len(SYMBOLS)

    @property
    def mel_lengths(self) -> list[int]:
        return [ex.mel.shape[0] for ex in self.items]


def _cache_key(cfg: DataConfig, meta: Path, wavs: list[Path]) -> str:
    h = hashlib.sha256()
    header = {
        "format": CACHE_FORMAT,
        "config": asdict(cfg),
        "symbols": "".join(SYMBOLS),
        "torchaudio": torchaudio.__version__,
    }
    h.update(json.dumps(header, sort_keys=True).encode())
    h.update(meta.read_bytes())
    for wav in wavs:
        st = wav.stat()
        h.update(f"\0{wav.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


@contextlib.contextmanager
def _one_intra_op_thread() -> Iterator[None]:
    """Run feature extraction on one torch thread, then restore the caller's setting.

    Per-clip STFTs are too small to gain from intra-op threads, and on a busy machine the threads'
    spin-waits cost far more than the work (figures: docs/measurements.md).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _compute(
    cfg: DataConfig, meta: Path, rows: list[MetadataRow], wavs: list[Path], console: Console | None
) -> dict:
    encoder = TextEncoder(cfg.frontend)
    logmel = LogMel(cfg.features)
    ids: list[str] = []
    texts: list[torch.Tensor] = []
    mels: list[torch.Tensor] = []
    skipped: Counter[str] = Counter()
    progress = Progress(console=console, transient=True, disable=console is None)
    task = progress.add_task(f"features {meta.parent.name}", total=len(rows))
    with progress:
        for row, wav in zip(rows, wavs, strict=True):
            text = encoder.encode(row.normalized_text)
            if len(text) < 2:
                raise DataError(
                    f"{meta}:{row.line}: text of id {row.id!r} has no symbol the {cfg.frontend} front end "
                    "can encode; fix the transcript"
                )
            if len(text) > cfg.max_text_len:
                skipped[f"text longer than {cfg.max_text_len} symbols"] += 1
            else:
                try:
                    wave = read_wav(wav, cfg.features.sample_rate)
                except DataError as exc:
                    raise DataError(f"{exc} (listed at {meta}:{row.line})") from exc
                with torch.no_grad():
                    mel = logmel(wave)  # (T, n_mels)
                if mel.shape[0] > cfg.max_frames:
                    skipped[f"audio longer than {cfg.max_frames} frames"] += 1
                else:
                    ids.append(row.id)
                    texts.append(torch.tensor(text, dtype=torch.long))
                    mels.append(mel)
            progress.advance(task)
    # One tensor each for text and mel: one read on load instead of thousands of small ones.
    return {
        "ids": ids,
        "text": torch.cat(texts) if texts else torch.zeros(0, dtype=torch.long),
        "text_lengths": [t.shape[0] for t in texts],
        "mel": torch.cat(mels) if mels else torch.zeros(0, cfg.features.n_mels),
        "mel_lengths": [m.shape[0] for m in mels],
        "skipped": dict(skipped),
        "unknown": dict(encoder.unknown),
    }


def _load_cache(path: Path, console: Console | None) -> dict | None:
    """The cached payload, or None when absent or damaged.

    Any failure to unpickle means "rebuild": the cache is derived data, the WAVs are the source of
    truth, so a broad except here cannot hide a problem the user has to fix.
    """
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, weights_only=True)
    except Exception as exc:  # any unpickling failure: rebuild (see docstring)
        if console is not None:
            console.print(f"feature cache {path} is damaged ({type(exc).__name__}); rebuilding it")
        return None
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
        return None
    return payload


def load_dataset(
    folder: Path, cfg: DataConfig, *, cache_dir: Path | None = None, console: Console | None = None
) -> SpeechDataset:
    """Read, validate and featurise a data set, or load its features from the cache.

    Raises DataError (one line: what, which file and line) for any bad input. Only over-long utterances
    are skipped and counted; `console` gets a progress bar while computing and a line for what was
    skipped or could not be encoded.
    """
    folder = Path(folder)
    rows = read_metadata(folder)
    meta = metadata_path(folder)
    wavs = wav_paths(folder, meta, rows)
    key = _cache_key(cfg, meta, wavs)
    cache_file = (cache_dir or default_cache_dir() / "features") / f"{key}.pt"
    payload = _load_cache(cache_file, console)
    if payload is None:
        with _one_intra_op_thread():
            payload = _compute(cfg, meta, rows, wavs, console)
        payload["format"] = CACHE_FORMAT
        atomic_write(cache_file, lambda tmp: torch.save(payload, tmp))

    texts = torch.split(payload["text"], payload["text_lengths"])
    mels = torch.split(payload["mel"], payload["mel_lengths"])
    items = [Example(i, t, m) for i, t, m in zip(payload["ids"], texts, mels, strict=True)]
    skipped = dict(payload["skipped"])
    unknown: Counter[str] = Counter(payload["unknown"])
    reasons = ", ".join(f"{n} {why}" for why, n in skipped.items())
    if not items:
        raise DataError(
            f"{meta}: no usable utterance ({reasons}); raise max_frames/max_text_len or use shorter clips"
        )
    if console is not None:
        if skipped:
            console.print(f"{folder}: skipped {sum(skipped.values())} of {len(rows)} utterances ({reasons})")
        if unknown:
            chars = " ".join(f"{ch!r}x{n}" for ch, n in unknown.most_common())
            console.print(f"{folder}: dropped characters outside the {cfg.frontend} symbol set: {chars}")
    return SpeechDataset(items, skipped, unknown, key, cfg, folder)
