from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import chirp, make_dataset, write_wav
from rich.console import Console

from tts_model.audio import FeatureConfig
from tts_model.dataset import DataConfig, load_dataset
from tts_model.errors import DataError
from tts_model.metadata import read_metadata
from tts_model.text import EOS_ID, TextEncoder


def _load(folder: Path, tmp_path: Path, cfg: DataConfig | None = None, console: Console | None = None):
    return load_dataset(folder, cfg or DataConfig(), cache_dir=tmp_path / "cache", console=console)


def _one_line_error(excinfo: pytest.ExceptionInfo[DataError], *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_load_shapes_and_text(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    ds = _load(make_dataset(tmp_path / "d"), tmp_path)
    assert torch.get_num_threads() == threads  # feature extraction restores the caller's setting
    assert len(ds) == 3 and ds.skipped == {} and not ds.unknown_chars
    ex = ds[2]
    assert ex.id == "utt002"
    assert ex.mel.dtype == torch.float32 and ex.mel.shape[1] == 80  # (T, n_mels)
    assert ex.mel.shape[0] == 1 + int(0.3 * 1.5 * 22050) // 256
    assert ex.text.dtype == torch.long and int(ex.text[-1]) == EOS_ID
    assert TextEncoder().decode(ex.text.tolist()) == "in nineteen eighty four, we left?"
    assert ds.n_symbols == TextEncoder().n_symbols
    assert ds.mel_lengths == [e.mel.shape[0] for e in ds.items]


def test_two_field_lines_and_seed_metadata_name(tmp_path: Path) -> None:
    folder = make_dataset(
        tmp_path / "d", ["Two fields, 2 words."], metadata_name="metadata_train.csv", three_fields=False
    )
    rows = read_metadata(folder)
    assert rows[0].text == rows[0].normalized_text == "Two fields, 2 words." and rows[0].line == 1
    assert len(_load(folder, tmp_path)) == 1


def test_cache_is_reused_and_invalidated(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "d")
    first = _load(folder, tmp_path)
    files = list((tmp_path / "cache").glob("*.pt"))
    assert [f.stem for f in files] == [first.fingerprint]
    # Warm: same key, same features, no recompute (the cache file is not rewritten).
    mtime = files[0].stat().st_mtime_ns
    second = _load(folder, tmp_path)
    assert second.fingerprint == first.fingerprint and files[0].stat().st_mtime_ns == mtime
    assert all(
        torch.equal(a.mel, b.mel) and torch.equal(a.text, b.text)
        for a, b in zip(first.items, second.items, strict=True)
    )
    # A changed WAV, metadata or setting gives a new key.
    write_wav(folder / "wavs" / "utt000.wav", chirp(0.4, seed=9))
    third = _load(folder, tmp_path)
    assert third.fingerprint != first.fingerprint and third[0].mel.shape[0] != first[0].mel.shape[0]
    (folder / "metadata.csv").write_text((folder / "metadata.csv").read_text().replace("Hello", "Howdy"))
    fourth = _load(folder, tmp_path)
    assert fourth.fingerprint != third.fingerprint
    fifth = _load(folder, tmp_path, DataConfig(features=FeatureConfig(n_mels=40)))
    assert fifth.fingerprint != fourth.fingerprint and fifth[0].mel.shape[1] == 40


def test_damaged_cache_is_rebuilt(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "d")
    first = _load(folder, tmp_path)
    (tmp_path / "cache" / f"{first.fingerprint}.pt").write_bytes(b"junk")
    assert torch.equal(_load(folder, tmp_path)[0].mel, first[0].mel)


def test_over_long_utterances_are_skipped_and_counted(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "d", ["short.", "a much longer sentence than the limit allows", "ok."])
    # utt000 has 26 frames, utt002 39: max_frames=30 drops utt002; max_text_len=10 drops utt001.
    out = io.StringIO()
    ds = _load(folder, tmp_path, DataConfig(max_frames=30, max_text_len=10), Console(file=out, width=200))
    assert [ex.id for ex in ds] == ["utt000"]
    assert ds.skipped == {"text longer than 10 symbols": 1, "audio longer than 30 frames": 1}
    assert "skipped 2 of 3 utterances" in out.getvalue()


def test_unknown_characters_reported_once(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "d", ["a \u00a7 b", "c \u00a7\u00a7 d"])
    out = io.StringIO()
    ds = _load(folder, tmp_path, console=Console(file=out, width=200))
    assert ds.unknown_chars == {"\u00a7": 3}
    assert out.getvalue().count("dropped characters") == 1


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        _load(tmp_path / "nope", tmp_path)
    _one_line_error(info, "nope", "not found")


def test_no_metadata_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError) as info:
        _load(tmp_path / "d", tmp_path)
    _one_line_error(info, "no metadata file", "metadata.csv")


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("x1|a|b|c", "found 4"),
        ("x1", "found 1"),
        ("|some text", "empty id"),
        ("x1|", "empty text"),
        ("x1|  |", "empty text"),
    ],
)
def test_malformed_line(tmp_path: Path, line: str, fragment: str) -> None:
    folder = make_dataset(tmp_path / "d", ["fine."])
    meta = folder / "metadata.csv"
    meta.write_text(meta.read_text() + line + "\n")
    with pytest.raises(DataError) as info:
        _load(folder, tmp_path)
    _one_line_error(info, f"{meta}:2", fragment)


def test_duplicate_id(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "d", ["one.", "two."])
    meta = folder / "metadata.csv"
    meta.write_text("utt000|one.\nutt001|two.\nutt000|again.\n")
    with pytest.raises(DataError) as info:
        _load(folder, tmp_path)
    _one_line_error(info, f"{meta}:3", "line 1")


def test_missing_wav(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "d")
    (folder / "wavs" / "utt001.wav").unlink()
    with pytest.raises(DataError) as info:
        _load(folder, tmp_path)
    _one_line_error(info, f"{folder / 'metadata.csv'}:2", "utt001", "not found")


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda p: p.write_bytes(os.urandom(64)), "cannot read audio"),
        (lambda p: p.write_bytes(b""), "cannot read audio"),
        (lambda p: write_wav(p, np.zeros(5000, dtype=np.float32)), "silent"),
        (lambda p: write_wav(p, np.full(5000, np.nan, dtype=np.float32), subtype="FLOAT"), "NaN"),
    ],
    ids=["garbage", "zero-length", "silent", "nan"],
)
def test_bad_audio_names_file_and_line(tmp_path: Path, damage, fragment: str) -> None:
    folder = make_dataset(tmp_path / "d")
    damage(folder / "wavs" / "utt001.wav")
    with pytest.raises(DataError) as info:
        _load(folder, tmp_path)
    _one_line_error(info, "utt001.wav", fragment, f"{folder / 'metadata.csv'}:2")


def test_text_with_nothing_encodable(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "d", ["fine.", "\u00a7\u00a7"])
    with pytest.raises(DataError) as info:
        _load(folder, tmp_path)
    _one_line_error(info, "metadata.csv:2", "utt001")


def test_no_usable_utterance(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "d")
    with pytest.raises(DataError) as info:
        _load(folder, tmp_path, DataConfig(max_frames=5))
    _one_line_error(info, "no usable utterance", "3 audio longer than 5 frames")


def test_resampled_and_stereo_wavs_load(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path / "d", ["one.", "two."])
    write_wav(folder / "wavs" / "utt000.wav", chirp(0.5, sample_rate=16000), 16000)
    write_wav(folder / "wavs" / "utt001.wav", chirp(0.5, channels=2))
    ds = _load(folder, tmp_path)
    expected = 1 + int(0.5 * 22050) // 256
    assert [ex.mel.shape[0] for ex in ds] == [expected, expected]


def test_data_config_checks() -> None:
    with pytest.raises(ValueError, match="max_frames"):
        DataConfig(max_frames=0)
    with pytest.raises(ValueError, match="frontend"):
        DataConfig(frontend="phones")  # type: ignore[arg-type]
