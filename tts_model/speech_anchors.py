"""The decode ratio's two anchors per held-out sentence, rendered once per validation set and cached.

The "same words" anchor is the sentence's text spoken by eSpeak NG at another rate (150 words a minute;
the embedded corpus is spoken at eSpeak's default 175), and its DTW mel L1 to the reference is what
"another rendering of the same words" costs. A rate change, not a plain re-render, because a re-render of
the same text by the same engine is nearly the reference itself (DTW 0.21-0.42 on the embedded corpus):
a model never gets that close, while a change of tempo is a difference a listener ignores.

For user data (LJSpeech folders, human speech) the same-words anchor is still eSpeak at 150 words a
minute, so 0 on the scale means "as close as a robot voice saying these words", which a model trained on
the human voice can beat (a negative ratio). Where eSpeak's voice is hardly closer to the reference than
its mean frame (the anchors' gap under `speech_measure.MIN_ANCHOR_GAP`), that sentence has no ratio.

The anchors depend only on the data (ids, texts, reference mels), the feature settings, the anchor
settings and the eSpeak version, and all of these are in the cache key, like the feature cache's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torch import Tensor

from tts_model import espeak
from tts_model.audio import FeatureConfig, LogMel
from tts_model.cache import atomic_write_text, default_cache_dir
from tts_model.dataset import Example
from tts_model.inference import dtw_distance
from tts_model.speech_measure import Anchors, constant_frame_dtw

FORMAT = 1  # bump when the way anchors are computed changes: old cache entries are ignored
SAME_WORDS_RATE = 150  # words a minute; the corpus speaks at espeak.DEFAULT_RATE (175)


@dataclass(frozen=True, slots=True)
class Reference:
    """One held-out sentence as the anchors need it: its words (as spoken: the normalized text) and mel."""

    id: str
    text: str
    mel: Tensor  # (T, n_mels) log-mel of the reference utterance


@dataclass(frozen=True, slots=True)
class DecodeReference:
    """A held-out example to decode, with its anchors (None: no decode ratio, e.g. its text is unknown)."""

    example: Example
    anchors: Anchors | None


def render_mel(
    text: str,
    features: FeatureConfig,
    *,
    voice: str = espeak.DEFAULT_VOICE,
    rate: int | None = None,
    pitch: int | None = None,
) -> Tensor:
    """`text` spoken by eSpeak NG, as the same log-mel features the data set uses: (T, n_mels).

    Read like a PCM_16 WAV (int16 / 32768) and resampled to the features' rate, so an eSpeak rendering
    compares with a reference file's features exactly as the corpus' own utterances do. Not thread-safe.
    """
    audio = espeak.synthesize(text, voice, rate=rate, pitch=pitch)
    wave = torch.from_numpy(audio.astype(np.float32) / 32768.0)  # (samples,)
    if features.sample_rate != espeak.SAMPLE_RATE:
        wave = torchaudio.functional.resample(wave, espeak.SAMPLE_RATE, features.sample_rate)
    with torch.no_grad():
        return LogMel(features)(wave)


def anchors_from(reference: Tensor, same_words: Tensor) -> Anchors:
    """The anchors of a reference mel (T, n_mels) given another rendering of its words (T', n_mels)."""
    return Anchors(same_words=dtw_distance(same_words, reference), constant=constant_frame_dtw(reference))


def compute_anchors(
    ref: Reference, features: FeatureConfig, *, voice: str = espeak.DEFAULT_VOICE, rate: int = SAME_WORDS_RATE
) -> Anchors:
    return anchors_from(ref.mel, render_mel(ref.text, features, voice=voice, rate=rate))


def _key(refs: Sequence[Reference], features: FeatureConfig, voice: str, rate: int) -> str:
    h = hashlib.sha256()
    header = {
        "format": FORMAT,
        "features": asdict(features),
        "voice": voice,
        "rate": rate,
        "espeak": espeak.version(),
    }
    h.update(json.dumps(header, sort_keys=True).encode())
    for ref in refs:
        mel = ref.mel.detach().float().cpu().contiguous().numpy()
        h.update(f"\0{ref.id}\0{ref.text}\0{mel.shape}\0".encode())
        h.update(mel.tobytes())
    return h.hexdigest()[:24]


def load_anchors(
    refs: Sequence[Reference],
    features: FeatureConfig,
    *,
    voice: str = espeak.DEFAULT_VOICE,
    rate: int = SAME_WORDS_RATE,
    cache_dir: Path | None = None,
) -> list[Anchors]:
    """The anchors of each reference, from the cache or rendered (then cached). Not thread-safe.

    Rendering speaks through the process's eSpeak engine, whose wave generator carries phase from call to
    call: build a corpus before this in the same process, or in its own process (as the corpus fixture does).
    """
    if not refs:
        return []
    path = (cache_dir or default_cache_dir() / "anchors") / f"{_key(refs, features, voice, rate)}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        return [Anchors(same_words=float(a), constant=float(b)) for a, b in cached["anchors"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or damaged: derived data, so recompute (the WAVs are the source of truth)
    anchors = [compute_anchors(ref, features, voice=voice, rate=rate) for ref in refs]
    payload = {"ids": [r.id for r in refs], "anchors": [[a.same_words, a.constant] for a in anchors]}
    atomic_write_text(path, json.dumps(payload) + "\n")
    return anchors


def attach_anchors(
    examples: Sequence[Example],
    texts: Mapping[str, str],
    features: FeatureConfig,
    *,
    voice: str = espeak.DEFAULT_VOICE,
    cache_dir: Path | None = None,
) -> list[DecodeReference]:
    """Each example with its anchors; `texts` maps an id to the words its audio says (the metadata's
    normalized text). An example whose id has no text gets no anchors."""
    known = [ex for ex in examples if ex.id in texts]
    refs = [Reference(ex.id, texts[ex.id], ex.mel) for ex in known]
    anchors = load_anchors(refs, features, voice=voice, cache_dir=cache_dir)
    by_id = {ref.id: a for ref, a in zip(refs, anchors, strict=True)}
    return [DecodeReference(ex, by_id.get(ex.id)) for ex in examples]
