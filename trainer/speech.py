"""The verdict word "speaks": a pure function of the speech measure and the thresholds in GuardConfig.

Kept apart from the divergence guards because it judges a different thing: not whether training broke,
but whether the model's free-running decode says the held-out sentences (DESIGN.md, "speaks").
"""

from __future__ import annotations

import math

from trainer.config import GuardConfig
from tts_model.speech_measure import SpeechMeasure


def speak_failures(measure: SpeechMeasure, cfg: GuardConfig) -> tuple[str, ...]:
    """Why `measure` does not speak, one short reason per unmet condition (empty: it speaks).

    Each condition is on a median over the sentences, so it holds for at least half of them; the stop
    rate is a share. A NaN (no sentence, or no anchors) fails its condition: unmeasured is not speaking.
    """
    if not measure.sentences:
        return ("no sentence was decoded",)
    reasons: list[str] = []
    if not measure.stop_rate >= cfg.speak_min_stop_rate:
        reasons.append(f"stopped {measure.stop_rate:.0%} of decodes (needs {cfg.speak_min_stop_rate:.0%})")
    lo, hi = 1.0 / cfg.speak_length_ratio, cfg.speak_length_ratio
    if not lo <= measure.length_ratio <= hi:
        reasons.append(f"median length {measure.length_ratio:.2f}x the reference (needs {lo:.2f}-{hi:.2f}x)")
    if not measure.ratio <= cfg.speak_max_decode_ratio:
        what = "no anchors" if math.isnan(measure.ratio) else f"{measure.ratio:.2f}"
        reasons.append(f"decode ratio {what} (needs <= {cfg.speak_max_decode_ratio:g})")
    if not measure.walk >= cfg.speak_min_attention_walk:
        reasons.append(f"attention walk {measure.walk:.2f} (needs >= {cfg.speak_min_attention_walk:g})")
    return tuple(reasons)


def speaks(measure: SpeechMeasure, cfg: GuardConfig) -> bool:
    """True when the decode stops at a sane length, lands measurably nearer the reference than a constant
    frame (the decode ratio), and its attention walks the text in order."""
    return not speak_failures(measure, cfg)
