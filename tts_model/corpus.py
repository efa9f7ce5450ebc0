"""The embedded LJSpeech-style corpus: generated sentences spoken by eSpeak NG, built once and cached.

Why synthetic speech: a stability search needs a data set that every machine has without a download,
that is consistent enough for a tiny model to align on within minutes, and that still has real text
(punctuation, numbers) and real audio. eSpeak NG speaks ~100 sentences a second, so 1000 utterances
take seconds.

Layout: ROOT/dataset_train/{metadata.csv, wavs/ID.wav}, ROOT/dataset_eval/..., ROOT/manifest.json.
The build happens in a hidden sibling folder that is renamed into place after the manifest is written,
so an interrupted build never looks complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import soundfile as sf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from common.errors import UserError
from tts_model import espeak
from tts_model.cache import atomic_write_text, default_cache_dir
from tts_model.errors import CorpusError
from tts_model.sentences import iter_sentences
from tts_model.text import normalize_text

FORMAT = 2  # bump when the layout or the way utterances are made changes: old caches are rebuilt
MANIFEST = "manifest.json"
SPLITS = ("train", "eval")


# Which cleaner wrote metadata's normalized_text; part of the manifest, so a corpus made by another
# cleaner is rebuilt rather than reused.
NORMALIZER = "tts_model.text"


@dataclass(frozen=True, kw_only=True, slots=True)
class CorpusSpec:
    """Everything that decides the corpus' content; its hash names the cache folder."""

    train_utterances: int = 1000
    eval_utterances: int = 100
    seed: int = 0
    voice: str = espeak.DEFAULT_VOICE
    min_seconds: float = 1.0
    max_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.train_utterances <= 1_000_000:
            raise CorpusError(f"train_utterances must be in [1, 1000000], got {self.train_utterances}")
        if not 1 <= self.eval_utterances <= 1_000_000:
            raise CorpusError(f"eval_utterances must be in [1, 1000000], got {self.eval_utterances}")
        if not self.voice.strip():
            raise CorpusError("voice must be an eSpeak NG voice such as en-us, got an empty string")
        if not 0.0 <= self.min_seconds < self.max_seconds <= 60.0:
            raise CorpusError(
                f"need 0 <= min_seconds < max_seconds <= 60, got min_seconds={self.min_seconds}, "
                f"max_seconds={self.max_seconds}"
            )

    def key(self) -> str:
        """A short stable hash of the spec and FORMAT."""
        blob = json.dumps({"format": FORMAT, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class CorpusPaths:
    root: Path
    train: Path
    eval: Path

    @classmethod
    def at(cls, root: Path) -> CorpusPaths:
        return cls(root=root, train=root / "dataset_train", eval=root / "dataset_eval")


def _expected_manifest_fields(spec: CorpusSpec) -> dict:
    return {"format": FORMAT, "spec": dataclasses.asdict(spec), "normalizer": NORMALIZER}


def is_complete(root: Path, spec: CorpusSpec) -> bool:
    """True when ROOT holds a finished corpus built from `spec` (the manifest is written last)."""
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    expected = _expected_manifest_fields(spec)
    if any(manifest.get(k) != v for k, v in expected.items()):
        return False
    paths = CorpusPaths.at(root)
    return (paths.train / "metadata.csv").is_file() and (paths.eval / "metadata.csv").is_file()


def _utterances(
    spec: CorpusSpec, total: int, normalize: Callable[[str], str]
) -> Iterator[tuple[str, str, np.ndarray]]:
    """(text, normalized text, int16 samples), skipping sentences spoken outside [min_seconds, max_seconds].

    eSpeak speaks the normalized text, so the audio says exactly the words of the third metadata column
    (eSpeak reads "1984" as "nineteen hundred eighty four", a cleaner may say "nineteen eighty four").
    """
    lo, hi = spec.min_seconds * espeak.SAMPLE_RATE, spec.max_seconds * espeak.SAMPLE_RATE
    tried = made = 0
    for text in iter_sentences(spec.seed):
        if made == total:
            return
        tried += 1
        if tried > 20 * total + 100:
            raise CorpusError(
                f"only {made} of {tried} sentences lasted between {spec.min_seconds} and "
                f"{spec.max_seconds} s with voice {spec.voice!r}: widen min_seconds/max_seconds"
            )
        spoken = normalize(text)
        audio = espeak.synthesize(spoken, spec.voice)
        if lo <= len(audio) <= hi:
            made += 1
            yield text, spoken, audio


def _write_splits(tmp: Path, spec: CorpusSpec, normalize: Callable[[str], str], bar: Progress) -> dict:
    """Speak and write train then eval utterances one at a time (memory stays flat); returns stats."""
    counts = {"train": spec.train_utterances, "eval": spec.eval_utterances}
    lines: dict[str, list[str]] = {s: [] for s in SPLITS}
    seconds: dict[str, list[float]] = {s: [] for s in SPLITS}
    for s in SPLITS:
        (tmp / f"dataset_{s}" / "wavs").mkdir(parents=True)
    task = bar.add_task("synthesising", total=sum(counts.values()))
    for i, (text, spoken, audio) in enumerate(_utterances(spec, sum(counts.values()), normalize)):
        split = "train" if i < counts["train"] else "eval"
        uid = f"{split}_{len(lines[split]) + 1:05d}"
        sf.write(
            tmp / f"dataset_{split}" / "wavs" / f"{uid}.wav", audio, espeak.SAMPLE_RATE, subtype="PCM_16"
        )
        lines[split].append(f"{uid}|{text}|{spoken}")
        seconds[split].append(len(audio) / espeak.SAMPLE_RATE)
        bar.advance(task)
    for s in SPLITS:
        (tmp / f"dataset_{s}" / "metadata.csv").write_text("\n".join(lines[s]) + "\n", encoding="utf-8")
    return {
        s: {
            "count": len(sec),
            "total_seconds": round(sum(sec), 3),
            "min_seconds": round(min(sec), 3),
            "max_seconds": round(max(sec), 3),
            "mean_seconds": round(sum(sec) / len(sec), 3),
        }
        for s, sec in seconds.items()
    }


def _clear_stale_partials(out: Path) -> None:
    """Remove hidden build folders left by killed builds (their process is gone)."""
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        try:
            pid = int(stale.name.rsplit("-", 2)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


def _check_out(out: Path) -> None:
    for path in (out, *out.parents):
        if path.exists() and not path.is_dir():
            raise CorpusError(f"corpus folder {out}: {path} is an existing file; pass a folder path to --out")
    if out.is_dir() and any(out.iterdir()):
        ours = {MANIFEST, "dataset_train", "dataset_eval"}
        if not any((out / name).exists() for name in ours):
            raise CorpusError(
                f"{out} is a non-empty folder that is not a corpus: pass a new or empty folder to --out"
            )


def build_corpus(
    out: Path, spec: CorpusSpec = CorpusSpec(), *, progress: bool = True, console: Console | None = None
) -> CorpusPaths:
    """Synthesise the corpus into `out`, replacing an older or partial corpus there. Not thread-safe."""
    out = Path(out).expanduser().absolute()
    _check_out(out)
    espeak.synthesize("", spec.voice)  # fail fast (one line) on an unknown voice, before any work
    console = console or Console()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _clear_stale_partials(out)
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()  # not mkdtemp: its 0700 mode would end up on the finished corpus
    except OSError as exc:
        raise CorpusError(
            f"cannot write the corpus to {out}: {exc.strerror or exc}; choose a writable folder"
        ) from exc
    try:
        started = time.perf_counter()
        columns = (TextColumn("eSpeak corpus"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, disable=not progress) as bar:
            stats = _write_splits(tmp, spec, normalize_text, bar)
        manifest = {
            **_expected_manifest_fields(spec),
            "key": spec.key(),
            "splits": stats,
            "sample_rate": espeak.SAMPLE_RATE,
            "versions": {
                "espeak_ng": espeak.version(),
                "espeakng_loader": metadata.version("espeakng-loader"),
            },
            "build_seconds": round(time.perf_counter() - started, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        if not is_complete(out, spec):  # another process may have finished the same corpus meanwhile
            _move_into_place(tmp, out)
    except OSError as exc:
        raise CorpusError(
            f"writing the corpus to {out} failed: {exc}; check free space and permissions"
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CorpusPaths.at(out)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished build over `out`; an older corpus there is moved aside, then deleted."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "corpus")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def ensure_corpus(
    spec: CorpusSpec = CorpusSpec(), root: Path | None = None, *, console: Console | None = None
) -> CorpusPaths:
    """The corpus for `spec`, built only if ROOT has no finished one; prints its folder."""
    console = console or Console()
    root = (
        Path(root).expanduser().absolute()
        if root is not None
        else default_cache_dir() / "corpus" / spec.key()
    )
    if not is_complete(root, spec):
        build_corpus(root, spec, progress=True, console=console)
    console.print(f"corpus: {root}")
    return CorpusPaths.at(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tts_model.corpus",
        description="Build (or find) the embedded eSpeak NG corpus in LJSpeech layout.",
    )
    parser.add_argument("--out", type=Path, default=None, help="corpus folder (default: the cache)")
    parser.add_argument("--utterances", type=int, default=1000, help="training utterances")
    parser.add_argument("--eval-utterances", type=int, default=None, help="default: max(1, N // 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--voice", default=espeak.DEFAULT_VOICE, help="eSpeak NG voice, e.g. en-us, en-gb")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the problem
        return int(exc.code or 0)
    n_eval = args.eval_utterances if args.eval_utterances is not None else max(1, args.utterances // 10)
    try:
        spec = CorpusSpec(
            train_utterances=args.utterances, eval_utterances=n_eval, seed=args.seed, voice=args.voice
        )
        ensure_corpus(spec, args.out)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
