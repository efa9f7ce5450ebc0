from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
from rich.console import Console

from tts_model import corpus, espeak
from tts_model.corpus import CorpusSpec, build_corpus, ensure_corpus, is_complete, main
from tts_model.errors import CorpusError

SMALL = CorpusSpec(train_utterances=12, eval_utterances=3, seed=5)


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=100)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus") / "small"
    build_corpus(root, SMALL, progress=False, console=_quiet())
    return root


def test_layout_metadata_and_wavs(built: Path) -> None:
    for split, n in (("train", 12), ("eval", 3)):
        folder = built / f"dataset_{split}"
        lines = (folder / "metadata.csv").read_text(encoding="utf-8").splitlines()
        assert len(lines) == n
        for i, line in enumerate(lines, start=1):
            uid, text, normalized = line.split("|")
            assert uid == f"{split}_{i:05d}" and text and normalized
            info = sf.info(folder / "wavs" / f"{uid}.wav")
            assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
            assert SMALL.min_seconds <= info.frames / info.samplerate <= SMALL.max_seconds
        assert len(list((folder / "wavs").iterdir())) == n


def test_manifest_records_spec_counts_and_versions(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["spec"]["train_utterances"] == 12 and manifest["spec"]["seed"] == 5
    assert manifest["splits"]["train"]["count"] == 12 and manifest["splits"]["eval"]["count"] == 3
    assert SMALL.min_seconds <= manifest["splits"]["train"]["min_seconds"]
    assert manifest["splits"]["train"]["max_seconds"] <= SMALL.max_seconds
    assert manifest["versions"]["espeak_ng"] == espeak.version()
    assert manifest["sample_rate"] == 22050 and manifest["key"] == SMALL.key()
    assert is_complete(built, SMALL)
    assert not is_complete(built, CorpusSpec(train_utterances=12, eval_utterances=3, seed=6))


def test_train_and_eval_sentences_do_not_overlap(built: Path) -> None:
    def texts(split: str) -> set[str]:
        lines = (built / f"dataset_{split}" / "metadata.csv").read_text(encoding="utf-8").splitlines()
        return {line.split("|")[1] for line in lines}

    assert not texts("train") & texts("eval")


def test_second_ensure_costs_nothing(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = (built / "manifest.json").stat().st_mtime_ns

    def must_not_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilt a complete corpus")

    monkeypatch.setattr(corpus, "build_corpus", must_not_build)
    console = _quiet()
    paths = ensure_corpus(SMALL, built, console=console)
    assert paths.train == built / "dataset_train" and paths.eval == built / "dataset_eval"
    assert str(built) in console.file.getvalue()
    assert (built / "manifest.json").stat().st_mtime_ns == before


def test_partial_corpus_is_rebuilt_and_stale_build_folders_removed(tmp_path: Path) -> None:
    root = tmp_path / "c"
    (root / "dataset_train").mkdir(parents=True)
    (root / "dataset_train" / "metadata.csv").write_text("junk|half written\n")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".c.partial-{dead.pid}-abcd1234"
    (stale / "dataset_train").mkdir(parents=True)
    assert not is_complete(root, SMALL)
    ensure_corpus(SMALL, root, console=_quiet())
    assert is_complete(root, SMALL)
    assert len((root / "dataset_train" / "metadata.csv").read_text().splitlines()) == 12
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_interrupted_build_leaves_nothing_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real = espeak.synthesize

    def dies_midway(text: str, voice: str = "en-us") -> object:
        nonlocal calls
        calls += 1
        if calls > 5:
            raise KeyboardInterrupt
        return real(text, voice)

    monkeypatch.setattr(espeak, "synthesize", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(tmp_path / "c", SMALL, progress=False, console=_quiet())
    assert not (tmp_path / "c").exists()
    assert list(tmp_path.iterdir()) == []


def test_impossible_duration_range_fails_with_one_line() -> None:
    spec = CorpusSpec(train_utterances=1, eval_utterances=1, min_seconds=0.0, max_seconds=0.05)
    with pytest.raises(CorpusError, match="widen min_seconds/max_seconds"):
        list(corpus._utterances(spec, 2, str.lower))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"train_utterances": 0}, "train_utterances"),
        ({"eval_utterances": 0}, "eval_utterances"),
        ({"voice": " "}, "voice"),
        ({"min_seconds": 5.0, "max_seconds": 1.0}, "min_seconds"),
    ],
)
def test_spec_checks_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(CorpusError, match=field):
        CorpusSpec(**kwargs)


def test_cli_builds_then_reuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--utterances", "6", "--seed", "1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["count"] == 6
    assert manifest["splits"]["eval"]["count"] == 1  # max(1, N // 10)
    assert str(out) in capsys.readouterr().out
    before = (out / "manifest.json").stat().st_mtime_ns
    assert main(["--out", str(out), "--utterances", "6", "--seed", "1"]) == 0
    assert (out / "manifest.json").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "args",
    [
        ["--out", "{file}"],
        ["--out", "{file}/sub"],
        ["--out", "{full}"],
        ["--out", "{new}", "--voice", "no-such-voice"],
        ["--out", "{new}", "--utterances", "0"],
    ],
)
def test_cli_user_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("someone's data")
    paths = {"file": tmp_path / "file.txt", "full": tmp_path / "full", "new": tmp_path / "new"}
    assert main([a.format(**paths) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "new").exists()
    assert (tmp_path / "full" / "notes.txt").read_text() == "someone's data"
