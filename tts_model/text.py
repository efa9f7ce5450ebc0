"""Text front end: cleaners that turn written English into speakable characters, and symbol ids.

One symbol table serves both front ends ("chars" and "ipa"), so the embedding size never depends on the
front end and a model's `n_symbols` is always `len(SYMBOLS)`.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Literal

Frontend = Literal["chars", "ipa"]
FRONTENDS: tuple[str, ...] = ("chars", "ipa")

PAD = "_"
EOS = "~"
PUNCTUATION = "!'(),-.:;?\""
LETTERS = "abcdefghijklmnopqrstuvwxyz"
# What eSpeak NG emits for English (and most of what it emits for other languages): the IPA letters,
# stress and length marks, and the syllabic diacritic U+0329. ASCII letters come from LETTERS.
IPA = (
    "ɑɐɒæɓʙβɔɕçɗɖðʤəɘɚɛɜɝɞɟʄɡɠɢʛɦɧħɥʜɨɪʝɭɬɫɮʟɱɯɰŋɳɲɴøɵɸθœɶʘɹɺɾɻʀʁɽʂʃʈʧʉʊʋⱱʌɣɤʍχʎʏʑʐʒʔʡʕʢ"
    "ǀǁǂǃˈˌːˑʼʴʰʱʲʷˠˤ˞\u0329ᵻ"
)

SYMBOLS: tuple[str, ...] = (PAD, EOS, " ", *PUNCTUATION, *LETTERS, *IPA)
PAD_ID = 0
EOS_ID = 1
_CHAR_SET = frozenset(" " + PUNCTUATION + LETTERS)
_IPA_SET = frozenset(SYMBOLS[2:])
_ID = {s: i for i, s in enumerate(SYMBOLS)}

_UNIFY = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u2032": "'",
        "`": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
        "\u2026": "...",
        "[": "(",
        "]": ")",
        "{": "(",
        "}": ")",
        "&": " and ",
        "\u00a0": " ",
    }
)
_SPACES = re.compile(r"\s+")
_SPLIT_PUNCT = re.compile(r"([!(),\-.:;?\"]+)")


_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth"}
_ORDINAL |= {"nine": "ninth", "twelve": "twelfth"}

_THOUSANDS_SEP = re.compile(r"(?<=\d),(?=\d{3}\b)")
_MONEY = re.compile(r"\$(\d+)(?:\.(\d{1,2}))?\b")
_PERCENT = re.compile(r"(\d)\s?%")
_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\b")
_DECIMAL = re.compile(r"\b(\d+)\.(\d+)\b")
_ORDINAL_NUM = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_INTEGER = re.compile(r"\d+")
_LETTER_DIGIT = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")


def _cardinal(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + _cardinal(rest))
    if n >= 1000 * 10**12:  # beyond trillions nobody says the number: read the digits
        return " ".join(_ONES[int(d)] for d in str(n))
    for value, name in _SCALES:
        if n >= value:
            rest = n % value
            return _cardinal(n // value) + " " + name + ("" if rest == 0 else " " + _cardinal(rest))
    raise AssertionError(n)


def _ordinal(n: int) -> str:
    *head, last = _cardinal(n).split(" ")
    if last in _ORDINAL:
        last = _ORDINAL[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])


def _integer(digits: str) -> str:
    """Four-digit numbers from 1001 to 2999 are read as years ("nineteen eighty four"), as people do."""
    n = int(digits)
    if len(digits) == 4 and 1000 < n < 3000 and not 2000 <= n < 2010:
        hi, lo = divmod(n, 100)
        if lo == 0:
            return _cardinal(hi) + " hundred"
        return _cardinal(hi) + (" oh " + _ONES[lo] if lo < 10 else " " + _cardinal(lo))
    return _cardinal(n)


def _money(m: re.Match[str]) -> str:
    dollars, cents = int(m.group(1)), int((m.group(2) or "0").ljust(2, "0"))
    words = f"{_cardinal(dollars)} dollar{'' if dollars == 1 else 's'}"
    if cents:
        words += f" {_cardinal(cents)} cent{'' if cents == 1 else 's'}"
    return words


def _time(m: re.Match[str]) -> str:
    hour, minute = int(m.group(1)), int(m.group(2))
    if minute == 0:
        return f"{_cardinal(hour)} o'clock"
    return _cardinal(hour) + (" oh " if minute < 10 else " ") + _cardinal(minute)


def expand_numbers(text: str) -> str:
    """Digits -> words: money, percent, clock times, decimals, ordinals, years, cardinals."""
    text = _THOUSANDS_SEP.sub("", text)
    text = _MONEY.sub(_money, text)
    text = _PERCENT.sub(r"\1 percent", text)
    text = _TIME.sub(_time, text)
    text = _DECIMAL.sub(
        lambda m: _integer(m.group(1)) + " point " + " ".join(_ONES[int(d)] for d in m.group(2)), text
    )
    text = _ORDINAL_NUM.sub(lambda m: _ordinal(int(m.group(1))), text)
    text = _LETTER_DIGIT.sub(" ", text)  # "ab12" -> "ab 12": a number is its own word
    return _INTEGER.sub(lambda m: _integer(m.group(0)), text)


def normalize_text(text: str) -> str:
    """Written English -> what is said: lowercase, numbers as words, one kind of quote and dash.

    Punctuation is kept because it carries phrasing (pauses, questions). Accents are folded to ASCII
    ("café" -> "cafe") so the chars front end sees letters it knows. Idempotent.
    """
    text = unicodedata.normalize("NFKC", text).translate(_UNIFY)
    text = expand_numbers(text)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.lower()
    return _SPACES.sub(" ", text).strip()


class TextEncoder:
    """Normalised text -> symbol ids ending in EOS; characters it cannot encode are counted, not fatal.

    The counter lets the loader report unknown characters once per data set instead of once per line.
    The "ipa" front end phonemizes with eSpeak NG (imported lazily so "chars" never loads it).
    """

    def __init__(self, frontend: Frontend = "chars", *, voice: str = "en-us") -> None:
        if frontend not in FRONTENDS:
            raise ValueError(f"frontend must be one of {FRONTENDS}, got {frontend!r}")
        self.frontend = frontend
        self.voice = voice
        self.unknown: Counter[str] = Counter()

    @property
    def n_symbols(self) -> int:
        return len(SYMBOLS)

    def symbols_of(self, text: str) -> str:
        """The symbol string the ids are made from: cleaned characters, or IPA with punctuation kept."""
        text = normalize_text(text)
        if self.frontend == "chars":
            return text
        return _phonemize_keeping_punctuation(text, self.voice)

    def encode(self, text: str) -> list[int]:
        allowed = _CHAR_SET if self.frontend == "chars" else _IPA_SET
        ids: list[int] = []
        for ch in self.symbols_of(text):
            if ch in allowed:
                ids.append(_ID[ch])
            else:
                self.unknown[ch] += 1
        ids.append(EOS_ID)
        return ids

    def decode(self, ids: list[int]) -> str:
        """Ids -> symbols, without PAD and EOS; for logs and tests."""
        return "".join(SYMBOLS[i] for i in ids if i not in (PAD_ID, EOS_ID))


def _phonemize_keeping_punctuation(text: str, voice: str) -> str:
    """eSpeak drops punctuation, so phonemize the runs between punctuation marks and put the marks back."""
    from tts_model.espeak import phonemize

    out: list[str] = []
    for part in _SPLIT_PUNCT.split(text):
        if not part:
            continue
        if _SPLIT_PUNCT.fullmatch(part):
            out.append(part)
        elif part.strip():
            lead = " " if part[0] == " " and out else ""
            trail = " " if part[-1] == " " else ""
            out.append(lead + phonemize(part.strip(), voice=voice).strip() + trail)
        else:
            out.append(part)
    return _SPACES.sub(" ", "".join(out)).strip()
