from __future__ import annotations

import numpy as np
import pytest

from tts_model import espeak
from tts_model.errors import CorpusError


def test_synthesize_gives_audible_int16_mono_at_22050() -> None:
    audio = espeak.synthesize("The quiet river carried 3 small boats.")
    assert espeak.SAMPLE_RATE == 22050
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert 1.0 < len(audio) / espeak.SAMPLE_RATE < 6.0
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    assert rms > 300.0  # clearly not silence (int16 full scale is 32767)


def test_longer_text_gives_longer_audio() -> None:
    short = espeak.synthesize("Hello.")
    long = espeak.synthesize("Hello, this sentence is a good deal longer than the first one.")
    assert len(long) > 2 * len(short)


def test_empty_text_is_silent_not_an_error() -> None:
    assert len(espeak.synthesize("")) < espeak.SAMPLE_RATE // 10


def test_voice_by_file_name_or_language_code() -> None:
    assert len(espeak.synthesize("hello there", voice="en-gb")) > 0
    assert len(espeak.synthesize("hello there", voice="de")) > 0
    assert len(espeak.synthesize("hello there", voice="en-us")) > 0


def test_unknown_voice_is_one_line_corpus_error() -> None:
    with pytest.raises(CorpusError) as info:
        espeak.synthesize("hello", voice="no-such-voice")
    assert "no-such-voice" in str(info.value) and "\n" not in str(info.value)
    assert len(espeak.synthesize("hello")) > 0  # the engine still works afterwards


def test_phonemize_returns_ipa_for_every_clause() -> None:
    ipa = espeak.phonemize("Hello there. How are you?")
    assert "ˈ" in ipa  # IPA stress mark
    assert any(ch in ipa for ch in "əɛɪʊ")  # IPA vowels, not eSpeak's ASCII codes
    assert "h" in ipa and "aʊ" in ipa  # both clauses: "hello" and "how"
    assert "?" not in ipa and "." not in ipa


def test_phonemize_spells_out_digits() -> None:
    assert "θɹˈiː" in espeak.phonemize("3 boats")


def test_version_is_recorded() -> None:
    assert espeak.version()[0].isdigit()
