from __future__ import annotations

import re

import pytest

from tts_model.sentences import generate_sentences, iter_sentences


def test_deterministic_in_the_seed() -> None:
    assert generate_sentences(50, seed=1) == generate_sentences(50, seed=1)
    assert generate_sentences(50, seed=1) != generate_sentences(50, seed=2)


def test_prefix_of_the_stream() -> None:
    stream = iter_sentences(7)
    assert generate_sentences(20, seed=7) == [next(stream) for _ in range(20)]
    assert generate_sentences(10, seed=7) == generate_sentences(20, seed=7)[:10]


def test_sentences_are_distinct_and_varied() -> None:
    sentences = generate_sentences(500, seed=0)
    assert len(set(sentences)) == 500
    words = {w.lower() for s in sentences for w in re.findall(r"[A-Za-z']+", s)}
    assert len(words) > 250


def test_kinds_punctuation_and_numbers_present() -> None:
    sentences = generate_sentences(300, seed=0)
    assert sum(s.endswith("?") for s in sentences) > 30
    assert sum(s.endswith(".") or s.endswith('."') for s in sentences) > 100
    assert sum(s.endswith("!") for s in sentences) > 10
    assert sum("," in s for s in sentences) > 30
    assert sum(bool(re.search(r"\d", s)) for s in sentences) > 30
    assert any(re.search(r"\bin (1[89]|20)\d\d\b", s) for s in sentences)  # a year
    assert any('"' in s for s in sentences) and any(":" in s for s in sentences)


def test_sentence_length_suits_one_to_five_seconds() -> None:
    for s in generate_sentences(300, seed=3):
        assert 2 <= len(s.split()) <= 30, s
        assert s[0].isupper() and s.rstrip('"')[-1] in ".?!", s
        assert "|" not in s and "\n" not in s  # safe in metadata.csv


def test_negative_count_rejected() -> None:
    with pytest.raises(ValueError, match="n must be >= 0"):
        generate_sentences(-1, seed=0)
    assert generate_sentences(0, seed=0) == []
