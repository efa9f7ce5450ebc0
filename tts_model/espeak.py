"""eSpeak NG speech and IPA through ctypes, from the library bundled by the `espeakng-loader` wheel.

Why ctypes and not a subprocess: the wheel ships the shared library and its data but no executable, and
one in-process engine synthesises ~100 sentences a second, so the embedded corpus builds in seconds
with nothing downloaded. The engine is a process-wide handle created lazily on first use.

Thread-unsafe: eSpeak NG keeps global state (current voice, one synth callback), so call these
functions from one thread at a time. Separate processes each get their own engine.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass, field

import numpy as np

from tts_model.errors import CorpusError

SAMPLE_RATE = 22050  # eSpeak NG's native output rate; checked against what espeak_Initialize reports
DEFAULT_VOICE = "en-us"
# eSpeak NG's defaults (speak_lib.h: espeakRATE_NORMAL 175 words a minute, pitch 50 of 0-100): what the
# embedded corpus is spoken at, since it never sets them.
DEFAULT_RATE = 175
DEFAULT_PITCH = 50
RATE_RANGE = (80, 450)  # espeakRATE_MINIMUM .. espeakRATE_MAXIMUM
PITCH_RANGE = (0, 100)

_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: like RETRIEVAL, but espeak_Synth returns when done
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02
_EE_OK = 0
_BUFFER_MS = 200
_PARAM_RATE = 1  # espeak_PARAMETER: espeakRATE
_PARAM_PITCH = 3  # espeakPITCH

# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events); events are not needed here.
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _VoiceSpec(ctypes.Structure):
    """speak_lib.h's espeak_VOICE. `languages` is a packed list: (priority byte, name, NUL)*, then NUL."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


def _languages(addr: int | None) -> list[str]:
    langs: list[str] = []
    while addr and ctypes.string_at(addr, 1) != b"\0":
        lang = ctypes.string_at(addr + 1)
        langs.append(lang.decode("utf-8", errors="replace"))
        addr += len(lang) + 2
    return langs


def _voice_names(lib: ctypes.CDLL) -> frozenset[str]:
    """Every name a voice answers to: file name ("en-us"), full name, or language code ("en-gb")."""
    names: set[str] = set()
    voices = lib.espeak_ListVoices(None)
    i = 0
    while voices[i]:
        voice = voices[i].contents
        if voice.name:
            names.add(voice.name.decode("utf-8", errors="replace").lower())
        if voice.identifier:
            names.add(voice.identifier.decode("utf-8", errors="replace").rsplit("/", 1)[-1].lower())
        names.update(lang.lower() for lang in _languages(voice.languages))
        i += 1
    return frozenset(names)


@dataclass(slots=True)
class _Engine:
    """The loaded library plus the state eSpeak's C API makes global (voice, callback, sample sink)."""

    lib: ctypes.CDLL
    callback: object = None  # the ctypes callback; kept referenced so it is never garbage-collected
    chunks: list[np.ndarray] = field(default_factory=list)
    voice: str | None = None
    voices: frozenset[str] = frozenset()

    def set_voice(self, voice: str) -> None:
        if voice == self.voice:
            return
        if not voice.strip():
            raise CorpusError("empty eSpeak NG voice name: pass a language code such as en-us")
        # Checked against the list first: selecting by language matches prefixes ("no-such" -> Norwegian).
        ok = voice.lower() in self.voices
        if ok:  # by file name ("en-us", "en-gb-x-rp"), else by language code ("en-gb" lives in file "en")
            ok = self.lib.espeak_SetVoiceByName(voice.encode("utf-8")) == _EE_OK
            if not ok:
                lang = ctypes.create_string_buffer(voice.encode("utf-8"))
                spec = _VoiceSpec(languages=ctypes.addressof(lang))
                ok = self.lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) == _EE_OK
        if not ok:
            self.voice = None
            raise CorpusError(
                f"unknown eSpeak NG voice {voice!r}: use one of its {len(self.voices)} language codes or "
                "voice names, e.g. en-us, en-gb, en-gb-x-rp, de, fr, es"
            )
        self.voice = voice


@functools.cache
def _engine() -> _Engine:
    """Load and initialise eSpeak NG once per process (espeak_Initialize must not be called twice)."""
    import espeakng_loader

    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
    except OSError as exc:
        raise CorpusError(f"cannot load eSpeak NG ({exc}): reinstall the `espeakng-loader` package") from exc
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_VoiceSpec)]
    lib.espeak_SetVoiceByProperties.restype = ctypes.c_int
    lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_VoiceSpec)]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceSpec))
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_GetParameter.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.espeak_GetParameter.restype = ctypes.c_int

    data_path = espeakng_loader.get_data_path().encode("utf-8")
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, 0)
    if rate != SAMPLE_RATE:
        raise CorpusError(
            f"eSpeak NG initialised at {rate} Hz, expected {SAMPLE_RATE}: reinstall `espeakng-loader`"
        )
    engine = _Engine(lib=lib, voices=_voice_names(lib))

    def on_audio(wav: ctypes._Pointer, n: int, _events: int | None) -> int:
        if wav and n > 0:
            engine.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue synthesis

    engine.callback = _SYNTH_CALLBACK(on_audio)
    lib.espeak_SetSynthCallback(engine.callback)
    return engine


def synthesize(
    text: str,
    voice: str = DEFAULT_VOICE,
    *,
    seed: int = 0,
    rate: int | None = None,
    pitch: int | None = None,
) -> np.ndarray:
    """Speak `text` with `voice`; returns int16 mono samples at `SAMPLE_RATE`. Not thread-safe.

    `rate` (words a minute) and `pitch` (0-100) apply to this call only and are put back afterwards, so
    a call with them never changes how later calls (the corpus) speak; None keeps eSpeak's current
    setting (its defaults, `DEFAULT_RATE` and `DEFAULT_PITCH`, unless a voice file says otherwise).

    eSpeak's noise generator is reseeded per call, but its wave generator also carries phase from one
    call to the next (a few samples of length): the same texts spoken in the same order by a fresh
    process give identical samples; the same text twice in one process differs slightly.
    """
    if rate is not None and not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        raise CorpusError(
            f"eSpeak NG rate must be {RATE_RANGE[0]}-{RATE_RANGE[1]} words a minute, got {rate}"
        )
    if pitch is not None and not PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]:
        raise CorpusError(f"eSpeak NG pitch must be {PITCH_RANGE[0]}-{PITCH_RANGE[1]}, got {pitch}")
    engine = _engine()
    engine.set_voice(voice)
    engine.lib.espeak_ng_SetRandSeed(seed)
    changed = [(p, v) for p, v in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch)) if v is not None]
    before = [(p, engine.lib.espeak_GetParameter(p, 1)) for p, _ in changed]
    data = text.encode("utf-8") + b"\0"
    buf = ctypes.create_string_buffer(data, len(data))
    engine.chunks.clear()
    try:
        for param, value in changed:
            engine.lib.espeak_SetParameter(param, value, 0)
        err = engine.lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != _EE_OK:
            raise CorpusError(f"eSpeak NG failed (error {err}) on {text[:60]!r}: check the text and voice")
        if not engine.chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(engine.chunks).astype(np.int16, copy=False)
    finally:
        engine.chunks.clear()
        for param, value in before:
            engine.lib.espeak_SetParameter(param, value, 0)


def phonemize(text: str, voice: str = DEFAULT_VOICE) -> str:
    """IPA for `text`, clauses joined by a space (eSpeak drops punctuation here). Not thread-safe."""
    engine = _engine()
    engine.set_voice(voice)
    data = text.encode("utf-8") + b"\0"
    buf = ctypes.create_string_buffer(data, len(data))
    ptr = ctypes.c_void_p(ctypes.addressof(buf))
    clauses: list[str] = []
    # espeak_TextToPhonemes translates one clause per call and advances `ptr`; NULL means the end.
    while ptr.value:
        out = engine.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, _PHONEMES_IPA)
        if out:
            clause = out.decode("utf-8", errors="replace").strip()
            if clause:
                clauses.append(clause)
    return " ".join(clauses)


def version() -> str:
    """The eSpeak NG library version, recorded in the corpus manifest (a new version speaks differently)."""
    raw = _engine().lib.espeak_Info(None)
    return raw.decode("utf-8", errors="replace") if raw else "unknown"
