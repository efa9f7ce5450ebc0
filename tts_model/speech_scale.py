"""`python -m tts_model.speech_scale`: the decode-ratio scale measured on the embedded corpus.

The thresholds of "speaks" (trainer/config.py, GuardConfig.speak_*) were chosen from these figures, so
they are one command away: per reference point, the DTW mel L1 to each of the N shortest validation
sentences (shortest by text, the sentences the trainer decodes) and the decode ratio it would score.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor

from tts_model.audio import FeatureConfig
from tts_model.corpus import CorpusSpec, ensure_corpus
from tts_model.dataset import DataConfig, load_dataset
from tts_model.inference import dtw_distance
from tts_model.metadata import read_metadata
from tts_model.speech_anchors import SAME_WORDS_RATE, anchors_from, render_mel
from tts_model.speech_measure import constant_model_mel

Point = Callable[[str, Tensor, Tensor], Tensor]  # (words, reference mel, next sentence's mel) -> mel


def _blur(frames: int) -> Point:
    def point(_words: str, mel: Tensor, _other: Tensor) -> Tensor:
        x = F.pad(mel.T[None], (frames // 2, frames // 2), mode="replicate")  # (1, n_mels, T + k - 1)
        return F.avg_pool1d(x, frames, stride=1)[0].T  # (T, n_mels)

    return point


def _espeak(features: FeatureConfig, **settings: int | str) -> Point:
    def point(words: str, _mel: Tensor, _other: Tensor) -> Tensor:
        return render_mel(words, features, **settings)

    return point


def _points(cfg: DataConfig) -> dict[str, Point]:
    f = cfg.features
    ms = 1000 * f.hop_length / f.sample_rate
    return {
        "same text re-rendered (175 wpm)": _espeak(f),
        **{f"rate {r} wpm": _espeak(f, rate=r) for r in (120, 150, 210, 250)},
        **{f"pitch {p}": _espeak(f, pitch=p) for p in (35, 70)},
        **{f"voice {v}": _espeak(f, voice=v) for v in ("en-gb", "en-029", "de")},
        **{f"blurred over {k * ms:.0f} ms": _blur(k) for k in (5, 9, 17, 33)},
        "time-reversed reference": lambda _w, m, _o: m.flip(0),
        "a different sentence": lambda _w, _m, other: other,
        "mean frame (constant)": lambda _w, m, _o: constant_model_mel(m),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tts_model.speech_scale", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sentences", type=int, default=5, help="shortest validation sentences (default 5)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = DataConfig()
    val = load_dataset(ensure_corpus(CorpusSpec(), console=Console(quiet=True)).eval, cfg)
    texts = {row.id: row.normalized_text for row in read_metadata(val.folder)}
    refs = sorted(val.items, key=lambda ex: (ex.text.shape[0], ex.id))[: args.sentences]
    same = [render_mel(texts[ex.id], cfg.features, rate=SAME_WORDS_RATE) for ex in refs]
    anchors = [anchors_from(ex.mel, other) for ex, other in zip(refs, same, strict=True)]
    print(f"{len(refs)} sentences: " + "; ".join(f"{ex.id} {texts[ex.id]!r}" for ex in refs))
    print(f"{'reference point':34s} {'DTW mel L1':>12s} {'decode ratio':>14s} {'median':>7s}")
    for name, point in _points(cfg).items():
        dtws = [
            dtw_distance(point(texts[ex.id], ex.mel, refs[(i + 1) % len(refs)].mel), ex.mel)
            for i, ex in enumerate(refs)
        ]
        ratios = [a.ratio(d) for a, d in zip(anchors, dtws, strict=True)]
        print(
            f"{name:34s} {min(dtws):5.2f}-{max(dtws):<5.2f}  {min(ratios):6.2f}-{max(ratios):<6.2f} "
            f"{statistics.median(ratios):7.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
