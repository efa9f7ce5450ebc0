"""The decode ratio's anchors from real eSpeak speech: the scale's two ends by construction, eSpeak's
per-call rate and pitch, and the anchor cache."""

from __future__ import annotations

import math

import pytest
import torch

from tts_model import espeak, speech_anchors
from tts_model.audio import FeatureConfig
from tts_model.dataset import Example
from tts_model.errors import CorpusError
from tts_model.speech_anchors import Reference, anchors_from, attach_anchors, load_anchors, render_mel
from tts_model.speech_measure import constant_model_mel, measure_sentence

TEXT = "did ben lift the wagon?"
OTHER = "julia measured the hammer."
FEATURES = FeatureConfig()


def _measure(decoded: torch.Tensor, reference: torch.Tensor, anchors) -> float:
    walk = torch.eye(3)  # the attention does not enter the ratio
    return measure_sentence(
        id="x", decoded_mel=decoded, attention=walk, stopped=True, reference=reference, anchors=anchors
    ).ratio


def test_rate_and_pitch_apply_to_one_call_only() -> None:
    normal = espeak.synthesize(TEXT)
    slow = espeak.synthesize(TEXT, rate=120)
    low = espeak.synthesize(TEXT, pitch=35)
    again = espeak.synthesize(TEXT)
    assert len(slow) > 1.3 * len(normal)  # 175 / 120 = 1.46
    assert abs(len(low) - len(normal)) < 0.05 * len(normal) and not _same(low, normal)
    assert abs(len(again) - len(normal)) < 0.01 * len(normal)  # the rate was put back


def _same(a, b) -> bool:
    return len(a) == len(b) and bool((a == b).all())


@pytest.mark.parametrize(("kwargs", "word"), [({"rate": 20}, "rate"), ({"pitch": 101}, "pitch")])
def test_bad_rate_or_pitch_is_one_line(kwargs: dict, word: str) -> None:
    with pytest.raises(CorpusError, match=word) as info:
        espeak.synthesize(TEXT, **kwargs)
    assert "\n" not in str(info.value)


def test_constant_frame_scores_one_and_the_other_rate_zero_by_construction() -> None:
    reference = render_mel(TEXT, FEATURES)  # (T, n_mels), as the corpus speaks it (175 wpm)
    other_rate = render_mel(TEXT, FEATURES, rate=speech_anchors.SAME_WORDS_RATE)
    anchors = anchors_from(reference, other_rate)
    assert _measure(constant_model_mel(reference), reference, anchors) == 1.0
    assert _measure(other_rate, reference, anchors) == 0.0
    # The scale is wide on eSpeak speech (measured 0.47-0.54 against 2.42-2.95 on the corpus) ...
    assert anchors.same_words < 0.35 * anchors.constant
    # ... another rendering at that rate lands near 0, a different sentence near or past 1.
    again = render_mel(TEXT, FEATURES, rate=speech_anchors.SAME_WORDS_RATE)
    assert abs(_measure(again, reference, anchors)) < 0.1
    assert _measure(render_mel(OTHER, FEATURES), reference, anchors) > 0.7


def test_render_mel_resamples_to_the_feature_rate() -> None:
    f16 = FeatureConfig(sample_rate=16000, f_max=8000.0)
    at_16k, at_22k = render_mel(TEXT, f16), render_mel(TEXT, FEATURES)
    assert at_16k.shape[1] == f16.n_mels
    assert at_16k.shape[0] == pytest.approx(at_22k.shape[0] * 16000 / 22050, rel=0.03)


def test_anchors_are_cached_per_data_and_settings(tmp_path, monkeypatch) -> None:
    mel = render_mel(TEXT, FEATURES)
    refs = [Reference("a", TEXT, mel)]
    first = load_anchors(refs, FEATURES, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1

    def no_render(*_args, **_kwargs):
        raise AssertionError("rendered again although the anchors were cached")

    monkeypatch.setattr(speech_anchors, "compute_anchors", no_render)
    assert load_anchors(refs, FEATURES, cache_dir=tmp_path) == first
    for changed in (
        [Reference("a", TEXT, mel + 0.01)],  # another reference
        [Reference("a", OTHER, mel)],  # other words
    ):
        with pytest.raises(AssertionError, match="rendered again"):
            load_anchors(changed, FEATURES, cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="rendered again"):
        load_anchors(refs, FEATURES, rate=210, cache_dir=tmp_path)
    next(tmp_path.glob("*.json")).write_text("{damaged", encoding="utf-8")
    monkeypatch.undo()
    (redone,) = load_anchors(refs, FEATURES, cache_dir=tmp_path)  # a damaged entry is recomputed
    assert redone.constant == first[0].constant  # eSpeak's phase moves the rendering a little
    assert redone.same_words == pytest.approx(first[0].same_words, abs=0.1)


def test_an_example_without_text_gets_no_anchors(tmp_path) -> None:
    mel = render_mel(TEXT, FEATURES)
    known, unknown = Example("a", torch.tensor([1, 2]), mel), Example("b", torch.tensor([1, 2]), mel)
    refs = attach_anchors([known, unknown], {"a": TEXT}, FEATURES, cache_dir=tmp_path)
    assert refs[0].example is known and refs[0].anchors is not None
    assert refs[1].example is unknown and refs[1].anchors is None
    assert math.isfinite(refs[0].anchors.ratio(1.0))
