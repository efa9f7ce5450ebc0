"""Audit an LJSpeech-style data set for what breaks TTS training, before anything trains on it.

The loader stops at the first bad file, after featurising every file before it; a run that starts
on a quietly bad set diverges or never aligns, and the cause looks like the recipe's. The audit reads
every clip once (no features, no cache) and names every problem item with what it is and why it
matters. Errors break training (the loader refuses the set, the features go NaN or flat, or no
alignment can exist); warnings train, worse; notes say what the loader does on its own.

`python search.py --check-data` prints the audit (exit 2 on any error); the search runs the cheap
checks (`PREFLIGHT`) before its first trial. Thresholds and their reasons: docs/data.md.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import soundfile as sf

from tts_model.audio import SILENCE_PEAK, FeatureConfig
from tts_model.dataset import DataConfig
from tts_model.errors import DataError
from tts_model.metadata import MetadataRow, metadata_path, read_metadata
from tts_model.text import TextEncoder

CLIP_LEVEL = 0.999  # |sample| at or above this (-0.009 dBFS) and at most 1.0 counts as at full scale
CLIP_SHARE = 0.001  # more than 1 sample in 1,000 at full scale: clipped, not just peak-normalised
OUTLIER_Z = 3.5  # |modified z| beyond which a duration is an outlier (Iglewicz and Hoaglin)
OUTLIER_MIN_CLIPS = 10  # below this a median and MAD say too little to call anything an outlier
_MAD_TO_SIGMA = 0.6745  # the normal's MAD is 0.6745 sigma: modified z = 0.6745 (x - median) / MAD


class Severity(Enum):
    ERROR = "error"  # training breaks: the loader refuses the set, or no feature or alignment is sane
    WARNING = "warning"  # it trains, worse or slower: worth fixing
    NOTE = "note"  # what the loader does on its own


class Check(Enum):
    """Every check: its label (the word each line and the table use), severity and why it matters."""

    METADATA = ("metadata", Severity.ERROR, "the loader cannot read the set: no trial starts")
    MISSING = ("missing wav", Severity.ERROR, "the loader stops at the first missing file: no trial starts")
    UNREADABLE = ("unreadable or empty", Severity.ERROR, "the loader stops at it: no trial starts")
    NONFINITE = (
        "NaN/Inf samples",
        Severity.ERROR,
        "NaN reaches the mel, then the loss and every weight, at the first batch that holds it",
    )
    SILENT = (
        "silent or all-zero",
        Severity.ERROR,
        "its mel is the log floor everywhere (log(0) without it): nothing to learn; the loader refuses it",
    )
    TOO_SHORT = (
        "too short for the STFT",
        Severity.ERROR,
        "the loader's centred STFT cannot reflect-pad it and stops with a traceback",
    )
    TEXT_TOO_LONG = (
        "text longer than its frames",
        Severity.ERROR,
        "the decoder has fewer steps than symbols: it cannot attend each symbol, no alignment exists",
    )
    NO_SYMBOL = ("no symbol", Severity.ERROR, "the front end drops every character: the loader refuses it")
    CLIPPED = (
        "clipped",
        Severity.WARNING,
        "flat-topped waves put broadband energy in every band: the model learns the distortion",
    )
    DROPPED = (
        "dropped symbols",
        Severity.WARNING,
        "the audio says what the text does not show: attention must skip over that speech",
    )
    DURATION = (
        "duration outlier",
        Severity.WARNING,
        "often a wrong cut or a wrong transcript; long clips also set the padded batch's memory",
    )
    SKIPPED = (
        "skipped by the loader",
        Severity.WARNING,
        "over max_frames or max_text_len: counted and left out, never cut",
    )
    LOW_RATE = (
        "low sample rate",
        Severity.WARNING,
        "upsampling adds no content: mel bands above half the file's rate stay at the log floor",
    )
    RESAMPLED = ("resampled", Severity.NOTE, "the loader resamples on reading; nothing to fix")

    def __init__(self, label: str, severity: Severity, why: str) -> None:
        self.label = label
        self.severity = severity
        self.why = why


# What would make log(0) or NaN features, or stop the loader: the search refuses these before a trial.
PREFLIGHT = frozenset(
    {Check.METADATA, Check.MISSING, Check.UNREADABLE, Check.NONFINITE, Check.SILENT, Check.TOO_SHORT}
)


@dataclass(frozen=True, slots=True)
class Finding:
    check: Check
    where: str  # the file, or metadata.csv:LINE
    what: str

    def line(self) -> str:
        return f"{self.check.severity.value}: {self.where}: {self.check.label}: {self.what}; {self.check.why}"


@dataclass(frozen=True, slots=True)
class ClipScan:
    """One WAV, read once: what every audio check needs."""

    rate: int
    samples: int  # per channel
    nonfinite: int  # NaN/Inf samples, any channel
    peak: float  # of the channel mix (as the loader hears it); full scale is 1.0
    at_full_scale: int  # samples (any channel) with CLIP_LEVEL <= |x| <= 1

    @property
    def seconds(self) -> float:
        return self.samples / self.rate


@dataclass(frozen=True, slots=True)
class FolderAudit:
    folder: Path
    clips: int  # metadata lines
    findings: tuple[Finding, ...]


@dataclass(frozen=True, slots=True)
class DataAudit:
    folders: tuple[FolderAudit, ...]
    reduction_factor: int
    seconds: float  # wall time of the audit

    @property
    def findings(self) -> list[Finding]:
        return [f for folder in self.folders for f in folder.findings]

    @property
    def breaks_training(self) -> bool:
        return any(f.check.severity is Severity.ERROR for f in self.findings)


def scan_clip(path: Path) -> ClipScan:
    """Read a WAV once; DataError with the reader's reason when it cannot be read or has no samples.

    PCM_16 (most data sets) is read as int16: exact, and ~2.7x faster to read than as float.
    """
    try:
        with sf.SoundFile(str(path)) as f:
            pcm16 = f.subtype == "PCM_16"
            data = f.read(dtype="int16" if pcm16 else "float32", always_2d=True)  # (T, channels)
            rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise DataError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    if data.shape[0] == 0:
        raise DataError("no samples")
    scale = 32768.0 if pcm16 else 1.0
    top, bottom = float(data.max()), float(data.min())  # NaN propagates through max and min
    if not math.isfinite(top + bottom):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        return ClipScan(rate=rate, samples=data.shape[0], nonfinite=bad, peak=math.nan, at_full_scale=0)
    # Mono: the extremes (np.abs of int16 -32768 overflows); more channels: the mix the loader hears.
    peak = max(top, -bottom) if data.shape[1] == 1 else float(np.abs(data.mean(axis=1)).max())
    at_full = 0
    if max(top, -bottom) >= CLIP_LEVEL * scale:  # only clips that reach full scale pay for the count
        magnitude = np.abs(data.astype(np.float32)) / scale
        at_full = int(np.count_nonzero((magnitude >= CLIP_LEVEL) & (magnitude <= 1.0)))
    return ClipScan(rate=rate, samples=data.shape[0], nonfinite=0, peak=peak / scale, at_full_scale=at_full)


def resampled_length(scan: ClipScan, features: FeatureConfig) -> int:
    """Samples after the loader's resampling (torchaudio rounds up)."""
    return math.ceil(scan.samples * features.sample_rate / scan.rate)


def mel_frames(scan: ClipScan, features: FeatureConfig) -> int:
    """The loader's frame count: centred STFT frames of the resampled clip."""
    return resampled_length(scan, features) // features.hop_length + 1


def clip_findings(
    where: str, scan: ClipScan, features: FeatureConfig, *, cheap: bool = False
) -> list[Finding]:
    """NaN/Inf, silence, a clip too short for the STFT and (unless `cheap`) clipping of one scanned clip."""
    total = scan.samples
    if scan.nonfinite:
        return [Finding(Check.NONFINITE, where, f"{scan.nonfinite:,} samples are NaN or Inf")]
    samples, pad = resampled_length(scan, features), features.n_fft // 2
    if samples <= pad:  # torch.stft(center=True) reflect-pads n_fft // 2 each side: needs more samples
        what = f"{samples} samples at {features.sample_rate} Hz; the STFT needs more than {pad} (n_fft {features.n_fft})"
        return [Finding(Check.TOO_SHORT, where, what)]
    if scan.peak < SILENCE_PEAK:
        what = "all samples are zero" if scan.peak == 0 else f"peak {20 * math.log10(scan.peak):.0f} dBFS"
        return [Finding(Check.SILENT, where, f"{what} (silent: peak below {SILENCE_PEAK:g}, -80 dBFS)")]
    if not cheap and scan.at_full_scale > CLIP_SHARE * total:
        share = scan.at_full_scale / total
        return [
            Finding(
                Check.CLIPPED,
                where,
                f"{share:.1%} of samples at full scale ({scan.at_full_scale:,}; over {CLIP_SHARE:.1%} is clipping)",
            )
        ]
    return []


def text_findings(
    where: str, *, symbols: int, dropped: Counter[str], frames: int, r: int, cfg: DataConfig
) -> list[Finding]:
    """One transcript against its clip: kept by the loader? attendable? anything the front end drops?"""
    out: list[Finding] = []
    if dropped:
        chars = " ".join(f"{ch!r}" for ch in sorted(dropped))
        out.append(Finding(Check.DROPPED, where, f"the {cfg.frontend} front end drops {chars}"))
    if symbols > cfg.max_text_len or frames > cfg.max_frames:
        out.append(
            Finding(
                Check.SKIPPED,
                where,
                f"{symbols} symbols (max_text_len {cfg.max_text_len}), {frames} frames (max_frames {cfg.max_frames})",
            )
        )
        return out
    steps = -(-frames // r)  # the decoder's steps: r frames each
    if symbols > steps:
        out.append(
            Finding(
                Check.TEXT_TOO_LONG,
                where,
                f"{symbols} symbols (with EOS) for {frames} mel frames = {steps} decoder steps at r={r}",
            )
        )
    return out


def duration_outliers(seconds: Sequence[float], z: float = OUTLIER_Z) -> list[tuple[int, float]]:
    """(index, modified z) of the durations beyond `z`; none when too few clips or all alike (MAD 0).

    On log durations: they are positive and skewed, and a clip 4x shorter than the median is as odd as
    one 4x longer. Median and MAD, not mean and standard deviation: the outliers to find would inflate
    the latter and hide themselves.
    """
    if len(seconds) < OUTLIER_MIN_CLIPS:
        return []
    values = np.log(np.asarray(seconds, dtype=np.float64))
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    if mad == 0.0:
        return []
    scores = _MAD_TO_SIGMA * (values - median) / mad
    return [(int(i), float(scores[i])) for i in np.flatnonzero(np.abs(scores) > z)]


def _scanned(folder: Path) -> Iterator[tuple[str, MetadataRow, Path, ClipScan | Finding]]:
    """(metadata line, row, wav, its scan or why there is none) for each line; DataError for metadata
    the loader would refuse (a missing folder, a malformed line), said by the loader's own words."""
    rows = read_metadata(folder)
    meta = metadata_path(folder)
    for row in rows:
        line, wav = f"{meta}:{row.line}", folder / "wavs" / f"{row.id}.wav"
        if not wav.is_file():
            yield line, row, wav, Finding(Check.MISSING, line, f"{wav} not found")
            continue
        try:
            yield line, row, wav, scan_clip(wav)
        except DataError as exc:
            yield line, row, wav, Finding(Check.UNREADABLE, str(wav), str(exc))


def preflight_findings(folder: Path, features: FeatureConfig) -> list[Finding]:
    """The PREFLIGHT checks only: what would make NaN or log(0) features or stop the loader."""
    found: list[Finding] = []
    for _, _, wav, scan in _scanned(folder):
        found += [scan] if isinstance(scan, Finding) else clip_findings(str(wav), scan, features, cheap=True)
    return found


def audit_folder(folder: Path, cfg: DataConfig, reduction_factor: int) -> FolderAudit:
    """Every check on one folder, with the front end, features and limits the loader uses."""
    try:
        clips = list(_scanned(folder))
    except DataError as exc:
        return FolderAudit(folder, 0, (Finding(Check.METADATA, str(folder), str(exc)),))
    encoder = TextEncoder(cfg.frontend)
    findings: list[Finding] = []
    durations: list[tuple[str, float]] = []
    rates: dict[int, list[str]] = {}
    for line, row, wav, scan in clips:
        if isinstance(scan, Finding):
            findings.append(scan)
            continue
        findings += clip_findings(str(wav), scan, cfg.features)
        rates.setdefault(scan.rate, []).append(str(wav))
        durations.append((str(wav), scan.seconds))
        encoder.unknown.clear()
        symbols = len(encoder.encode(row.normalized_text))
        if symbols < 2:
            findings.append(Finding(Check.NO_SYMBOL, line, f"{row.normalized_text!r}"))
            continue
        findings += text_findings(
            f"{line} ({wav.name})",
            symbols=symbols,
            dropped=Counter(encoder.unknown),
            frames=mel_frames(scan, cfg.features),
            r=reduction_factor,
            cfg=cfg,
        )
    findings += _rate_findings(rates, cfg.features)
    findings += _duration_findings(durations)
    return FolderAudit(folder, len(clips), tuple(findings))


def _rate_findings(rates: dict[int, list[str]], features: FeatureConfig) -> list[Finding]:
    """One line per sample rate other than the config's (a line per clip would bury the errors)."""
    out = []
    for rate, wavs in sorted(rates.items()):
        if rate == features.sample_rate:
            continue
        check = Check.LOW_RATE if rate / 2 < features.f_max else Check.RESAMPLED
        what = (
            f"{len(wavs):,} clip{'s' * (len(wavs) > 1)} at {rate} Hz, resampled to {features.sample_rate} Hz"
        )
        if check is Check.LOW_RATE:
            what += f" (f_max {features.f_max:g} Hz)"
        out.append(Finding(check, wavs[0] + (f" and {len(wavs) - 1:,} more" if len(wavs) > 1 else ""), what))
    return out


def _duration_findings(durations: list[tuple[str, float]]) -> list[Finding]:
    seconds = [s for _, s in durations]
    if not seconds:
        return []
    median = float(np.median(seconds))
    return [
        Finding(
            Check.DURATION,
            durations[i][0],
            f"{durations[i][1]:.2f} s against a median of {median:.2f} s (modified z of its log {z:+.1f}, beyond ±{OUTLIER_Z:g})",
        )
        for i, z in duration_outliers(seconds)
    ]


def audit(folders: Sequence[Path], cfg: DataConfig, reduction_factor: int) -> DataAudit:
    started = time.perf_counter()
    done = tuple(audit_folder(Path(f), cfg, reduction_factor) for f in folders)
    return DataAudit(done, reduction_factor, time.perf_counter() - started)


def preflight(folders: Sequence[Path], features: FeatureConfig | None = None) -> None:
    """Refuse, in one line, a data set that would make NaN or log(0) features or stop the loader.

    The search runs it before its first trial and before any feature is computed, so a bad clip deep
    in the set is found in a second, not after minutes of featurising the files before it.
    """
    features = features or FeatureConfig()  # the search's (studies.execution.runs.load_data)
    bad = [f for folder in folders for f in preflight_findings(Path(folder), features)]
    if not bad:
        return
    first = bad[0]
    more = f" and {len(bad) - 1} more such item{'s' * (len(bad) > 2)}" if len(bad) > 1 else ""
    data = " ".join(
        f"--{name}-data {folder}" for name, folder in zip(("train", "val"), folders, strict=False)
    )
    raise DataError(
        f"{first.where}: {first.check.label} ({first.what}){more}; training would break on it: run "
        f"`python search.py --check-data {data}` for the list, then fix or drop those lines"
    )
