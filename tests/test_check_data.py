"""`search.py --check-data` and the search's pre-flight, on a real eSpeak corpus with injected faults.

A copy of the small session corpus gets five faults, one per clip: all zeros, NaN samples (a float
WAV), clipping, a transcript far longer than its frames, a metadata line whose WAV is gone. The audit
must name each (file and what) and exit 2; the clean copy exits 0; and the search refuses a data set
with a NaN clip in one line, before any feature is computed and before a study exists.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import search
from common.cli import run_cli
from tests.corpus_fixture import cache_env, corpus_paths  # noqa: F401  (session fixtures)
from tts_model.audio import FeatureConfig
from tts_model.corpus import CorpusPaths
from tts_model.data_audit import Check, ClipScan, clip_findings, duration_outliers, text_findings
from tts_model.dataset import DataConfig

LONG_TEXT = " ".join(["the decoder cannot attend every one of these many symbols"] * 5)  # 294 chars


def _copy(paths: CorpusPaths, root: Path) -> tuple[Path, Path]:
    train, val = root / "train", root / "val"
    shutil.copytree(paths.train, train)
    shutil.copytree(paths.eval, val)
    return train, val


def _rewrite(wav: Path, change, subtype: str = "PCM_16") -> None:
    data, rate = sf.read(str(wav), dtype="float32")
    sf.write(str(wav), change(data), rate, subtype=subtype)


def _with_nan(data: np.ndarray) -> np.ndarray:
    data = data.copy()
    data[1000:1010] = np.nan
    return data


def _inject_faults(train: Path) -> dict[str, tuple[str, str]]:
    """Five faults, one clip each; returns what each line must name: id -> (severity, label)."""
    wavs = train / "wavs"
    _rewrite(wavs / "train_00001.wav", np.zeros_like)
    _rewrite(wavs / "train_00002.wav", _with_nan, subtype="FLOAT")
    _rewrite(wavs / "train_00003.wav", lambda d: np.clip(d * 20.0, -1.0, 1.0))
    meta = train / "metadata.csv"
    lines = meta.read_text(encoding="utf-8").splitlines()
    lines = [f"train_00004|{LONG_TEXT}|{LONG_TEXT}" if ln.startswith("train_00004|") else ln for ln in lines]
    meta.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (wavs / "train_00005.wav").unlink()
    return {
        "train_00001.wav": ("error", Check.SILENT.label),
        "train_00002.wav": ("error", Check.NONFINITE.label),
        "train_00003.wav": ("warning", Check.CLIPPED.label),
        "train_00004.wav": ("error", Check.TEXT_TOO_LONG.label),
        "train_00005.wav": ("error", Check.MISSING.label),
    }


def _check_data(train: Path, val: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    capsys.readouterr()
    argv = ["--check-data", "--study", "stability-quick", "--train-data", str(train), "--val-data", str(val)]
    code = run_cli(search.main, argv)
    return code, capsys.readouterr().out.splitlines()


def test_check_data_names_each_injected_fault_and_exits_2(
    corpus_paths: CorpusPaths,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    train, val = _copy(corpus_paths, tmp_path)
    expected = _inject_faults(train)
    code, out = _check_data(train, val, capsys)
    assert code == 2, "\n".join(out)
    for wav, (severity, label) in expected.items():
        hits = [ln for ln in out if wav in ln and f": {label}: " in ln]
        assert len(hits) == 1, f"{wav}: expected one '{label}' line in:\n" + "\n".join(out)
        assert hits[0].startswith(f"{severity}: "), hits[0]
        print(hits[0])  # the report quotes these lines (pytest -s)
    items = [ln for ln in out if ln.startswith(("error: ", "warning: "))]
    assert len(items) == len(expected), "a line for a clip that has no fault:\n" + "\n".join(items)


def test_the_clean_copy_exits_0(
    corpus_paths: CorpusPaths,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    train, val = _copy(corpus_paths, tmp_path)
    code, out = _check_data(train, val, capsys)
    assert code == 0, "\n".join(out)
    assert not [ln for ln in out if ln.startswith("error: ")]
    assert any("clean for training" in ln for ln in out)


def test_the_search_refuses_a_nan_clip_in_one_line_before_features_or_a_study(
    corpus_paths: CorpusPaths,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    train, val = _copy(corpus_paths, tmp_path)
    _rewrite(
        val / "wavs" / "eval_00003.wav", _with_nan, subtype="FLOAT"
    )  # in val: train would featurise first
    cache = tmp_path / "cache"
    monkeypatch.setenv("TTS_STABILITY_CACHE", str(cache))
    runs = tmp_path / "runs"
    argv = ["--study", "stability-smoke", "--trials", "1", "--runs-dir", str(runs), "--device", "cpu"]
    argv += ["--threads", "1", "--train-data", str(train), "--val-data", str(val)]
    capsys.readouterr()
    code = run_cli(search.main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert not list(cache.rglob("*.pt")), "features were computed before the refusal"
    assert not runs.exists() or not any(runs.rglob("*")), "a study was created"
    line = err[0]
    print(line)  # the report quotes it (pytest -s)
    assert line.startswith("error: ") and "eval_00003.wav" in line and "NaN" in line, line
    assert "--check-data" in line, line  # points at the full list


# --- the pure checks, on hand-written values ----------------------------------------------------------------
def test_clip_checks_tell_silence_nan_shortness_and_clipping_from_a_peak_normalised_clip() -> None:
    features = FeatureConfig()

    def checks(cheap: bool = False, **kw) -> list[Check]:
        scan = ClipScan(
            **{"rate": 22050, "samples": 22050, "nonfinite": 0, "peak": 0.5, "at_full_scale": 0} | kw
        )
        return [f.check for f in clip_findings("a.wav", scan, features, cheap=cheap)]

    assert checks() == []
    assert checks(peak=1.0, at_full_scale=5) == []  # peak-normalised: a few samples touch full scale
    assert checks(peak=1.0, at_full_scale=200) == [Check.CLIPPED]
    assert checks(cheap=True, peak=1.0, at_full_scale=200) == []  # the pre-flight does not judge clipping
    assert checks(peak=0.0) == [Check.SILENT]
    assert checks(nonfinite=3, peak=float("nan")) == [Check.NONFINITE]
    assert checks(samples=512) == [Check.TOO_SHORT]  # n_fft 1024: the STFT pads 512 each side
    assert checks(samples=513) == []
    assert checks(samples=300, rate=8000) == []  # 827 samples once resampled to 22050 Hz


def test_text_fits_its_decoder_steps_at_the_reduction_factor() -> None:
    cfg = DataConfig()

    def checks(symbols: int, frames: int, r: int, dropped: str = "") -> list[Check]:
        found = text_findings("m:1", symbols=symbols, dropped=Counter(dropped), frames=frames, r=r, cfg=cfg)
        return [f.check for f in found]

    assert checks(30, 90, r=3) == []  # 30 steps, 30 symbols: each can be attended
    assert checks(31, 90, r=3) == [Check.TEXT_TOO_LONG]
    assert checks(31, 90, r=2) == []  # 45 steps
    assert checks(10, 2000, r=3) == [Check.SKIPPED]  # over max_frames: the loader skips it
    assert checks(10, 90, r=3, dropped="#") == [Check.DROPPED]


def test_duration_outliers_are_robust_and_on_a_log_scale() -> None:
    base = [2.0, 2.2, 2.5, 1.8, 3.0, 2.1, 2.4, 2.6, 1.9, 2.3]
    assert duration_outliers(base) == []
    found = duration_outliers([*base, 0.2, 30.0])
    assert [i for i, _ in found] == [10, 11] and found[0][1] < 0 < found[1][1]
    assert duration_outliers([2.0] * 12 + [9.0]) == []  # MAD 0: no scale to judge by
    assert duration_outliers([2.0, 2.1, 30.0]) == []  # too few clips
