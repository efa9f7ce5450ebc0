"""The speech measure's pieces on hand-made tensors: attention walk, DTW anchors, the decode ratio, medians,
and the `speaks` verdict with each of its conditions failing alone."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from trainer.config import ConfigError, GuardConfig
from trainer.speech import speak_failures, speaks
from tts_model.inference import dtw_distance
from tts_model.speech_measure import (
    Anchors,
    SentenceMeasure,
    SpeechMeasure,
    attention_walk,
    capped_ratio,
    constant_frame_dtw,
    constant_model_mel,
    measure_sentence,
)


def _one_hot(positions: list[int], n_text: int) -> torch.Tensor:
    """(T_dec, L) attention putting all mass on the given text position at each step."""
    return torch.nn.functional.one_hot(torch.tensor(positions), n_text).float()


def test_walk_of_a_monotonic_alignment_is_one() -> None:
    # Two decoder steps per symbol, every symbol visited in order.
    assert attention_walk(_one_hot([0, 0, 1, 1, 2, 2, 3, 3, 4, 4], 5)) == 1.0


def test_walk_stuck_on_one_symbol_is_one_over_length() -> None:
    assert attention_walk(_one_hot([2] * 12, 6)) == pytest.approx(1 / 6)
    assert attention_walk(_one_hot([5, 4, 3, 2, 1, 0], 6)) == pytest.approx(1 / 6)  # backwards


def test_walk_skips_jitter_and_counts_skipped_symbols_as_unvisited() -> None:
    assert attention_walk(_one_hot([0, 1, 2, 1, 3, 2, 4], 5)) == 1.0  # steps back are left out
    assert attention_walk(_one_hot([0, 2, 4], 5)) == pytest.approx(3 / 5)  # 1 and 3 jumped over
    # The text read twice: in order, so 1 (the DTW ratio, not the walk, judges what was said).
    assert attention_walk(_one_hot([0, 1, 2, 0, 1, 2], 3)) == 1.0


def test_walk_uses_the_argmax_of_soft_attention() -> None:
    soft = torch.full((4, 4), 0.1)
    soft[torch.arange(4), torch.arange(4)] = 0.7  # a soft diagonal
    assert attention_walk(soft) == 1.0
    assert attention_walk(torch.full((8, 4), 0.25)) == pytest.approx(1 / 4)  # uniform: argmax stays at 0


def test_walk_rejects_a_bad_shape() -> None:
    with pytest.raises(ValueError, match="T_dec"):
        attention_walk(torch.zeros(0, 4))
    with pytest.raises(ValueError, match="T_dec"):
        attention_walk(torch.zeros(2, 3, 4))


def test_constant_frame_dtw_is_the_plain_l1_to_the_mean_frame() -> None:
    torch.manual_seed(0)
    ref = torch.randn(30, 8)
    plain = float((ref - ref.mean(0)).abs().mean())
    assert constant_frame_dtw(ref) == pytest.approx(plain, rel=1e-6)
    # A shorter constant sequence scores the same (each reference frame once) ...
    assert dtw_distance(ref.mean(0, keepdim=True).expand(7, 8), ref) == pytest.approx(plain, rel=1e-6)
    # ... a longer one less: the extra steps dwell on the frames nearest the constant. Hence the anchor
    # uses the reference's own length, and a decode run to the cap can score under 1 while saying nothing
    # (which `capped_ratio` undoes, see below).
    assert dtw_distance(ref.mean(0, keepdim=True).expand(90, 8), ref) < plain


def test_a_capped_decode_never_scores_closer_than_a_constant() -> None:
    """The flaw: a decode run to the cap has surplus frames that dwell on the reference frames nearest
    them, so DTW rates a 2.2x-long drone nearer than a noisy rendering stopped at the right length (the
    measured case: capped decodes 0.66-0.93, the one that stopped 1.24). Capped, it is scored >= 1."""
    torch.manual_seed(2)
    ref = torch.randn(30, 8).cumsum(0)  # (30, 8) a varying utterance
    anchors = Anchors(same_words=0.3, constant=constant_frame_dtw(ref))
    said = ref + 1.8 * torch.randn(30, 8)  # the right length, a noisy rendering
    drone = ref.mean(0, keepdim=True).expand(66, 8) + 0.1 * torch.randn(66, 8)  # 2.2x, saying nothing

    def measure(mel: torch.Tensor, stopped: bool) -> SentenceMeasure:
        return measure_sentence(
            id="s", decoded_mel=mel, attention=_one_hot([0] * 10, 10), stopped=stopped, reference=ref,
            anchors=anchors,
        )  # fmt: skip

    stopped, capped = measure(said, True), measure(drone, False)
    assert anchors.ratio(capped.dtw) < stopped.ratio < 1.0  # the ratio before the floor preferred the drone
    assert capped.ratio == 1.0 and capped.length_ratio == pytest.approx(2.2)
    assert SpeechMeasure((capped,) * 3).ratio > SpeechMeasure((stopped,) * 3).ratio
    # Further than a constant stays as far; no anchors stays unmeasured; a stopped decode is as measured.
    assert capped_ratio(1.3) == 1.3 and math.isnan(capped_ratio(math.nan))
    assert measure(drone, True).ratio == anchors.ratio(capped.dtw)


def test_decode_ratio_is_zero_and_one_at_the_anchors() -> None:
    anchors = Anchors(same_words=0.5, constant=2.5)
    assert anchors.ratio(0.5) == 0.0
    assert anchors.ratio(2.5) == 1.0
    assert anchors.ratio(1.5) == pytest.approx(0.5)
    assert anchors.ratio(0.3) < 0.0  # closer than another rendering
    assert math.isnan(anchors.ratio(math.nan))
    # No usable gap (another voice about as far as a constant): no scale, no ratio.
    assert math.isnan(Anchors(same_words=2.4, constant=2.5).ratio(1.0))
    assert math.isnan(Anchors(same_words=3.0, constant=2.5).ratio(1.0))


def test_measure_sentence_scores_the_constant_model_one() -> None:
    torch.manual_seed(1)
    ref = torch.randn(20, 8)
    anchors = Anchors(same_words=0.3, constant=constant_frame_dtw(ref))
    m = measure_sentence(
        id="a",
        decoded_mel=constant_model_mel(ref),
        attention=_one_hot([0] * 7, 5),
        stopped=True,
        reference=ref,
        anchors=anchors,
    )
    assert m.ratio == 1.0 and m.length_ratio == 1.0 and m.walk == pytest.approx(0.2) and m.stopped
    exact = measure_sentence(
        id="a", decoded_mel=ref, attention=_one_hot([0, 1, 2], 3), stopped=True, reference=ref, anchors=None
    )
    assert exact.dtw == 0.0 and math.isnan(exact.ratio) and exact.walk == 1.0


def _sentence(**changes: object) -> SentenceMeasure:
    good = SentenceMeasure(id="s", stopped=True, length_ratio=1.05, dtw=0.9, walk=0.7, ratio=0.2)
    return dataclasses.replace(good, **changes)


def test_medians_ignore_sentences_without_a_ratio() -> None:
    m = SpeechMeasure((_sentence(ratio=0.1), _sentence(ratio=math.nan), _sentence(ratio=0.3)))
    assert m.ratio == pytest.approx(0.2) and m.stop_rate == 1.0 and m.walk == pytest.approx(0.7)
    assert math.isnan(SpeechMeasure((_sentence(ratio=math.nan),)).ratio)
    assert math.isnan(SpeechMeasure(()).ratio)


def test_speaks_when_every_condition_holds() -> None:
    cfg = GuardConfig()
    measure = SpeechMeasure((_sentence(), _sentence(ratio=0.4), _sentence(stopped=False, ratio=0.9)))
    assert speaks(measure, cfg) and speak_failures(measure, cfg) == ()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"stopped": False}, "stopped"),
        ({"length_ratio": 1.6}, "length"),
        ({"length_ratio": 0.6}, "length"),
        ({"ratio": 0.55}, "decode ratio"),
        ({"ratio": math.nan}, "no anchors"),
        ({"walk": 0.35}, "attention walk"),
    ],
)
def test_each_condition_alone_stops_it_speaking(changes: dict, reason: str) -> None:
    measure = SpeechMeasure((_sentence(**changes),) * 3)
    failures = speak_failures(measure, GuardConfig())
    assert not speaks(measure, GuardConfig())
    assert len(failures) == 1 and reason in failures[0], failures


def test_thresholds_come_from_the_config() -> None:
    measure = SpeechMeasure((_sentence(ratio=0.55, walk=0.35),))
    assert not speaks(measure, GuardConfig())
    assert speaks(measure, GuardConfig(speak_max_decode_ratio=0.6, speak_min_attention_walk=0.3))
    assert not speaks(SpeechMeasure(()), GuardConfig())  # nothing decoded: not speaking


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("speak_min_stop_rate", 1.5),
        ("speak_length_ratio", 1.0),
        ("speak_max_decode_ratio", 0.0),
        ("speak_max_decode_ratio", 1.0),
        ("speak_min_attention_walk", -0.1),
        ("speak_max_decode_ratio", math.nan),
    ],
)
def test_speak_thresholds_are_range_checked(name: str, value: float) -> None:
    with pytest.raises(ConfigError, match=name):
        GuardConfig(**{name: value})
