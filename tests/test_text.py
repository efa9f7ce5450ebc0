from __future__ import annotations

import importlib.util

import pytest

from tts_model.text import EOS_ID, PAD_ID, SYMBOLS, TextEncoder, normalize_text


def test_symbol_table_layout() -> None:
    assert SYMBOLS[PAD_ID] == "_" and SYMBOLS[EOS_ID] == "~" and SYMBOLS[2] == " "
    assert len(set(SYMBOLS)) == len(SYMBOLS)
    assert set("abcdefghijklmnopqrstuvwxyz!'(),-.:;?\"") <= set(SYMBOLS)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1984", "nineteen eighty four"),
        ("3", "three"),
        ("In 1984, 3 men came.", "in nineteen eighty four, three men came."),
        ("It cost $5.50", "it cost five dollars fifty cents"),
        ("pi is 3.14", "pi is three point one four"),
        ("the 1st and 22nd and 3rd and 40th", "the first and twenty second and third and fortieth"),
        ("2005 1905 1900 2000", "two thousand five nineteen oh five nineteen hundred two thousand"),
        ("1,000,000 and 12%", "one million and twelve percent"),
        ("at 3:30 or 10:00", "at three thirty or ten o'clock"),
        ("101 7000", "one hundred one seven thousand"),
        ("mp3", "mp three"),
    ],
)
def test_numbers_become_words(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


def test_case_whitespace_quotes_dashes_accents() -> None:
    raw = "  \u201cHello\u201d\t\u2014  World\u2019s   caf\u00e9\u2026 \n"
    assert normalize_text(raw) == '"hello" - world\'s cafe...'


@pytest.mark.parametrize("raw", ["In 1984, 3 men paid $5.50!", "Mixed CASE  text?", "the 21st (of 2024)"])
def test_normalize_is_idempotent(raw: str) -> None:
    once = normalize_text(raw)
    assert normalize_text(once) == once


def test_chars_encode_appends_eos_and_roundtrips() -> None:
    enc = TextEncoder("chars")
    ids = enc.encode("Hi, 2 you!")
    assert ids[-1] == EOS_ID and PAD_ID not in ids
    assert enc.decode(ids) == "hi, two you!"
    assert enc.n_symbols == len(SYMBOLS)
    assert not enc.unknown


def test_unknown_characters_are_counted_not_fatal() -> None:
    enc = TextEncoder("chars")
    ids = enc.encode("a\u00a7b\u00a7 \u4e2d")
    assert enc.decode(ids) == "ab "
    assert enc.unknown == {"\u00a7": 2, "\u4e2d": 1}


def test_bad_frontend() -> None:
    with pytest.raises(ValueError, match="frontend"):
        TextEncoder("phones")  # type: ignore[arg-type]


_HAS_ESPEAK = importlib.util.find_spec("espeakng_loader") is not None


@pytest.mark.skipif(not _HAS_ESPEAK, reason="espeakng-loader not installed")
def test_ipa_frontend_covers_espeak_and_keeps_punctuation() -> None:
    enc = TextEncoder("ipa")
    text = (
        "The quick brown fox, judging azure things; rather better bottles? Measure the church's "
        "vision: uh-oh, button mountain! In 1984 the 3rd kitten thought about four hours."
    )
    ids = enc.encode(text)
    assert not enc.unknown, f"IPA symbols missing from SYMBOLS: {dict(enc.unknown)}"
    symbols = enc.decode(ids)
    for mark in ",;?:!":
        assert mark in symbols
    assert {"\u02c8", "\u0259", "\u0279", "\u03b8", "\u00f0"} <= set(symbols)  # stress, schwa, r, th
