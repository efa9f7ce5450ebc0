"""How close a free-running decode is to speech: stop and length, DTW mel L1, the attention walk, and the
decode ratio that puts the DTW on a scale with two anchors measured on the data itself.

Teacher-forced mel can look excellent for a model that cannot speak, and a raw DTW distance has no scale:
on the embedded corpus a decode can be *further* from the speech than the reference's own mean frame
repeated (figures: docs/measurements.md). So each sentence's DTW is placed between
two distances of the same reference: the same words spoken again by eSpeak at another rate (0: as close
as another rendering of these words) and a constant frame (1: no closer than saying nothing).

All functions here are pure (tensors and floats in, floats out), so tests feed hand-made values; the
anchors themselves are rendered and cached by `tts_model.speech_anchors`.
"""

from __future__ import annotations

import bisect
import math
import statistics
from dataclasses import dataclass

import torch
from torch import Tensor

from tts_model.inference import dtw_distance

# Below this gap between the two anchors (as a share of the constant anchor) the scale means nothing:
# the other rendering is about as far from the reference as a constant frame. eSpeak against eSpeak
# leaves a gap of ~80% (same words at 150 wpm 0.47-0.54, constant 2.42-2.95); a human reference against
# eSpeak's voice may leave far less, and then that sentence has no ratio (NaN), not a huge or negative one.
MIN_ANCHOR_GAP = 0.1


@dataclass(frozen=True, slots=True)
class Anchors:
    """The two ends of one sentence's scale, both DTW mel L1 to the reference utterance."""

    same_words: float  # the same text rendered by eSpeak at another rate (tts_model.speech_anchors)
    constant: float  # the reference's own mean frame, repeated for the reference's length

    def ratio(self, dtw: float) -> float:
        """(dtw - same_words) / (constant - same_words); NaN when the anchors leave no usable gap."""
        gap = self.constant - self.same_words
        if not (math.isfinite(dtw) and math.isfinite(gap)) or gap < MIN_ANCHOR_GAP * self.constant:
            return math.nan
        return (dtw - self.same_words) / gap


@dataclass(frozen=True, slots=True)
class SentenceMeasure:
    """One held-out sentence decoded greedily, against its reference."""

    id: str
    stopped: bool  # the stop token fired before the length cap
    length_ratio: float  # decoded frames / reference frames
    dtw: float  # DTW mel L1 to the reference (tts_model.inference.dtw_distance)
    walk: float  # attention_walk of the decode's cross-attention, 0-1
    # decode ratio: 0 = another eSpeak rendering, 1 = a constant frame; >= 1 when not stopped; NaN: no anchors
    ratio: float


@dataclass(frozen=True, slots=True)
class SpeechMeasure:
    """Per sentence and the medians a verdict reads (a median holds for at least half of the sentences)."""

    sentences: tuple[SentenceMeasure, ...]

    @property
    def stop_rate(self) -> float:
        return sum(s.stopped for s in self.sentences) / max(len(self.sentences), 1)

    @property
    def length_ratio(self) -> float:
        return _median([s.length_ratio for s in self.sentences])

    @property
    def dtw_median(self) -> float:
        """(DecodeMetrics.dtw is the mean over sentences, as recorded before the decode ratio existed.)"""
        return _median([s.dtw for s in self.sentences])

    @property
    def walk(self) -> float:
        return _median([s.walk for s in self.sentences])

    @property
    def ratio(self) -> float:
        """The median decode ratio over sentences that have one (NaN if none has)."""
        return _median([s.ratio for s in self.sentences])


def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(statistics.median(finite)) if finite else math.nan


def constant_frame_dtw(reference: Tensor) -> float:
    """DTW mel L1 between the reference (T, n_mels) and its own mean frame repeated T times.

    A constant sequence makes every cell of a DTW row equal, so the cheapest path is the diagonal and this
    is the plain mean L1 to the mean frame: what a model that learnt only the average frame scores. A
    longer constant would score less (its extra path steps dwell on the frames nearest it), which is also
    why a decode that runs to the length cap can score a DTW under the constant's while saying nothing:
    `capped_ratio` puts such a decode back at or above 1.
    """
    return dtw_distance(constant_model_mel(reference), reference)


def attention_walk(attention: Tensor) -> float:
    """Share of text positions the attention visits in order: the longest strictly increasing run (not
    necessarily contiguous) of the per-step argmax text position, over the text length (EOS included).

    attention: (T_dec, L), one row per decoder step (rows sum to 1). A sharp monotonic alignment that
    passes over every symbol scores 1; attention stuck on one symbol scores 1/L; steps that jitter back
    are skipped rather than punished, and symbols the walk jumps over count as not visited. The DTW ratio,
    not this, judges what was said: a walk that reads the text twice still scores 1.
    """
    if attention.ndim != 2 or attention.shape[0] < 1 or attention.shape[1] < 1:
        raise ValueError(f"attention_walk needs (T_dec, L) with T_dec, L >= 1, got {tuple(attention.shape)}")
    peaks = attention.float().argmax(-1).tolist()  # (T_dec,) text position per decoder step
    tails: list[int] = []  # tails[k]: smallest last position of an increasing run of length k + 1
    for p in peaks:
        k = bisect.bisect_left(tails, p)
        if k == len(tails):
            tails.append(p)
        else:
            tails[k] = p
    return len(tails) / attention.shape[1]


def capped_ratio(ratio: float) -> float:
    """The decode ratio of a decode that ran to the length cap: no closer than a constant frame (>= 1).

    DTW's path mean lets surplus frames dwell on the reference frames nearest them, so a decode twice too
    long gets a DTW it did not earn: capped decodes that said nothing scored better than a decode that
    stopped at the right length (figures: docs/measurements.md). What a capped decode shows is that the
    model does not know where the sentence ends, so it is scored as saying nothing. A length penalty on
    every decode was not chosen: a decode that stops 1.4x long is a slower tempo (eSpeak at 120 words a
    minute is 1.46x and scores <= 0.11), not a worse rendering. NaN (no anchors) stays NaN.
    """
    return max(ratio, 1.0) if math.isfinite(ratio) else ratio


def measure_sentence(
    *,
    id: str,
    decoded_mel: Tensor,
    attention: Tensor,
    stopped: bool,
    reference: Tensor,
    anchors: Anchors | None,
) -> SentenceMeasure:
    """decoded_mel (T', n_mels) and attention (T_dec, L) of a greedy decode; reference (T, n_mels).
    `stopped`: False when the decode ran to the length cap, whose ratio is then `capped_ratio`."""
    dtw = dtw_distance(decoded_mel, reference)
    ratio = anchors.ratio(dtw) if anchors is not None else math.nan
    return SentenceMeasure(
        id=id,
        stopped=stopped,
        length_ratio=decoded_mel.shape[0] / reference.shape[0],
        dtw=dtw,
        walk=attention_walk(attention),
        ratio=ratio if stopped else capped_ratio(ratio),
    )


@torch.no_grad()
def constant_model_mel(reference: Tensor) -> Tensor:
    """The reference's mean frame repeated for its length, (T, n_mels): what a model that learnt only the
    average frame says. It scores a decode ratio of exactly 1, by construction of the scale."""
    return reference.float().mean(0, keepdim=True).expand_as(reference).clone()
