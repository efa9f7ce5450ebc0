"""Every CLI, fed input a user can get wrong: exit 2, one line naming the problem, nothing changed.

One table. Each row runs a CLI in this process (``run_cli(main, argv)``, as ``python -m`` would) and
asserts: exit code 2; stderr is exactly one line, ``error: ...``, that contains the row's keyword (the
problem, or the file or field it is about); no traceback; and no file created, changed or removed
under the work folder, which holds an existing study, so "no study changed" is checked byte for byte.
Odd but valid input (another sample rate, stereo) must load.
"""

from __future__ import annotations

import hashlib
import json
import os
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest

import search
import trainer.cli
from common.cli import run_cli
from tests.corpus_fixture import cache_env, corpus_paths  # noqa: F401  (session fixtures)
from tests.data_fixtures import chirp, make_dataset, write_wav

STUDY = "stability-smoke"


@dataclass(frozen=True)
class Env:
    work: Path  # watched: nothing under it may change
    data: Path  # bad data folders (also watched)
    train: Path  # a good corpus
    val: Path

    @property
    def runs(self) -> str:
        return str(self.work / "runs")

    @property
    def out(self) -> str:
        return str(self.work / "out")


@dataclass(frozen=True)
class Case:
    id: str
    main: Callable
    argv: Callable[[Env], list[str]]
    keyword: str  # must appear in the error line (case-insensitive)


def _search(*flags: str) -> Callable[[Env], list[str]]:
    def argv(env: Env) -> list[str]:
        out = ["--study", STUDY, "--runs-dir", env.runs, "--threads", "1", "--device", "cpu"]
        out += ["--train-data", str(env.train), "--val-data", str(env.val)]
        return out + [f.format(env=env) for f in flags]

    return argv


def _train(*flags: str, data: str | None = None) -> Callable[[Env], list[str]]:
    """The trainer on the good corpus, or on the bad data folder `data` (its train set)."""

    def argv(env: Env) -> list[str]:
        train = env.data / data if data else env.train
        out = ["--model-size", "tiny", "--max-steps", "1", "--out", env.out, "--device", "cpu"]
        out += ["--train-data", str(train), "--val-data", str(env.val)]
        return out + [f.format(env=env) for f in flags]

    return argv


S, T = search.main, trainer.cli.main
CASES = [
    # data: each folder is built broken in `env` below
    Case("data-missing-folder", T, _train(data="no-such-folder"), "no-such-folder"),
    Case("data-empty-metadata", T, _train(data="empty-metadata"), "metadata"),
    Case("data-malformed-line", T, _train(data="malformed-line"), ":2"),
    Case("data-missing-wav", T, _train(data="missing-wav"), "utt001"),
    Case("data-corrupt-wav", T, _train(data="corrupt-wav"), "utt001.wav"),
    Case("data-zero-length-wav", T, _train(data="zero-length-wav"), "utt001.wav"),
    Case("data-nonfinite-audio", T, _train(data="nonfinite-audio"), "nan"),
    Case("data-silent-audio", T, _train(data="silent-audio"), "silent"),
    Case("data-empty-text", T, _train(data="empty-text"), "text"),
    Case("data-train-without-val", S, lambda env: ["--study", STUDY, "--train-data", str(env.train)], "val-data"),
    # presets: a JSON file of TrainConfig fields on top of --optimization-level
    Case("preset-unknown-key", T, _train("--preset", "{env.data}/unknown-key.json"), "lr_rate"),
    Case("preset-wrong-type", T, _train("--preset", "{env.data}/wrong-type.json"), "lr"),
    Case("preset-lr-zero", T, _train("--preset", "{env.data}/lr-zero.json"), "lr"),
    Case("preset-clip-negative", T, _train("--preset", "{env.data}/clip-negative.json"), "grad_clip"),
    Case("preset-warmup-negative", T, _train("--preset", "{env.data}/warmup-negative.json"), "warmup_steps"),
    Case("preset-not-json", T, _train("--preset", "{env.data}/not-json.json"), "json"),
    Case("preset-missing-file", T, _train("--preset", "{env.data}/absent.json"), "absent.json"),
    Case("preset-unknown-guard", T, _train("--preset", "{env.data}/unknown-guard.json"), "no_such_guard"),
    # flags
    Case("flag-unknown-study", S, lambda env: ["--study", "stabilty", "--runs-dir", env.runs], "stabilty"),
    Case("flag-trials-zero", S, _search("--trials", "0"), "--trials"),
    Case("flag-seed-negative", S, _search("--seed", "-1"), "--seed"),
    Case("flag-seed-too-big", S, _search("--seed", str(2**32)), "--seed"),
    Case("flag-trials-negative", S, _search("--trials", "-3"), "--trials"),
    Case("flag-trials-not-a-number", S, _search("--trials", "many"), "many"),
    Case("flag-workers-zero", S, _search("--workers", "0"), "--workers"),
    Case("flag-threads-zero", S, _search("--threads", "0"), "--threads"),
    Case("flag-unknown-model-size", S, _search("--model-size", "huge"), "huge"),
    Case("flag-trainer-unknown-model-size", T, _train("--model-size", "huge"), "huge"),
    Case("flag-unknown-level", T, _train("--optimization-level", "turbo"), "turbo"),
    Case("flag-bad-device", S, _search("--device", "tpu"), "tpu"),
    Case("flag-trainer-bad-device", T, _train("--device", "tpu"), "tpu"),
    Case("flag-trainer-batch-size-zero", T, _train("--batch-size", "0"), "batch_size"),
    Case("flag-misspelt", S, _search("--trails", "5"), "--trails"),
    Case("flag-horizon-scale-zero", S, _search("--horizon-scale", "0"), "--horizon-scale"),
    Case("flag-horizon-scale-above-one", S, _search("--horizon-scale", "2"), "--horizon-scale"),
    # storage
    Case("storage-malformed-url", S, _search("--storage", "://nowhere"), "malformed"),
    Case("storage-no-scheme", S, _search("--storage", "runs/study.db"), "scheme"),
    Case("storage-postgres-typo", S, _search("--storage", "postgres://u@127.0.0.1/db"), "postgresql://"),
    Case("storage-unknown-database", S, _search("--storage", "oracle+nope://u@h/db"), "unknown database"),
    Case("storage-unreachable-server", S, _search("--storage", "postgresql://u@127.0.0.1:1/db"), "cannot reach"),
    Case("storage-missing-folder", S, _search("--storage", "sqlite:///{env.work}/nope/study.db"), "does not exist"),
    Case("storage-read-only", S, _search("--storage", "sqlite:///{env.data}/read-only/study.db"), "read-only"),
    Case("export-without-a-study", S, _search("--export-preset", "{env.work}/best.json", "--study", "stability"), "run the search first"),
]  # fmt: skip


def _broken_data(root: Path) -> None:
    """One folder per data row, each a small valid data set with exactly one thing wrong."""

    def base(name: str) -> Path:
        return make_dataset(root / name, ["Hello there.", "It is late.", "Come in, please!"])

    (base("empty-metadata") / "metadata.csv").write_text("", encoding="utf-8")
    meta = base("malformed-line") / "metadata.csv"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join([lines[0], "utt001 no pipes here", lines[2]]) + "\n")
    (base("missing-wav") / "wavs" / "utt001.wav").unlink()
    (base("corrupt-wav") / "wavs" / "utt001.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4)
    (base("zero-length-wav") / "wavs" / "utt001.wav").write_bytes(b"")
    bad = chirp(0.4, seed=1)
    bad[100:110] = np.nan
    write_wav(base("nonfinite-audio") / "wavs" / "utt001.wav", bad, subtype="FLOAT")
    write_wav(base("silent-audio") / "wavs" / "utt001.wav", np.zeros(8000, dtype=np.float32))
    meta = base("empty-text") / "metadata.csv"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join([lines[0], "utt001||", lines[2]]) + "\n")

    presets = {
        "unknown-key": '{"lr_rate": 1e-4}',
        "wrong-type": '{"lr": "fast"}',
        "lr-zero": '{"lr": 0}',
        "clip-negative": '{"grad_clip": -0.5}',
        "warmup-negative": '{"warmup_steps": -5}',
        "not-json": "{lr: 1e-4,",
        "unknown-guard": json.dumps({"guards": {"no_such_guard": 1}}),
    }
    for name, text in presets.items():
        (root / f"{name}.json").write_text(text, encoding="utf-8")
    ro = root / "read-only"
    ro.mkdir()
    ro.chmod(0o555)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, corpus_paths) -> Env:  # noqa: F811
    work = tmp_path_factory.mktemp("matrix")
    data = work / "data"
    _broken_data(data)
    # An existing study that no bad command may touch.
    runs = work / "runs" / STUDY
    runs.mkdir(parents=True)
    study = optuna.create_study(study_name=STUDY, storage=f"sqlite:///{runs / 'study.db'}")
    study.enqueue_trial({"lr": 1e-3})
    return Env(work=work, data=data, train=corpus_paths.train, val=corpus_paths.eval)


def _snapshot(root: Path) -> dict[str, tuple[int, str]]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            files[str(path.relative_to(root))] = (
                path.stat().st_mode,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
        elif path.is_dir():
            files[str(path.relative_to(root)) + "/"] = (path.stat().st_mode, "")
    return files


def test_the_table_is_wide_enough() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(
    case: Case, env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = case.argv(env)
    if case.id == "storage-read-only" and os.geteuid() == 0:
        # root writes through chmod 555; /proc/1 is read-only even for root.
        argv = [a.replace(f"{env.data}/read-only", "/proc/1") for a in argv]
    before = _snapshot(env.work)
    capsys.readouterr()
    try:
        code = run_cli(case.main, argv)
    except SystemExit as exit:  # argparse's own errors end the process, as they would from a shell
        code = exit.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("error: ") and "Traceback" not in err
    assert case.keyword.lower() in lines[0].lower(), lines[0]
    assert _snapshot(env.work) == before, "a bad command created or changed files"


def test_the_gpu_study_on_a_cpu_machine_is_refused_unless_forced(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = _snapshot(env.work)
    capsys.readouterr()
    assert run_cli(search.main, ["--study", "stability", "--trials", "50", "--runs-dir", env.runs]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--study stability-quick" in lines[0] and "--device cpu" in lines[0], lines
    assert _snapshot(env.work) == before, "the refused command created or changed files"


def _write_16k_stereo(path: Path) -> None:
    t = np.arange(8000) / 16000
    left = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
    right = (0.2 * np.sin(2 * np.pi * 330 * t) * 32767).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.stack([left, right], axis=1).tobytes())


def test_other_sample_rates_are_resampled_and_stereo_mixed_down(tmp_path: Path) -> None:
    from tts_model.audio import read_wav
    from tts_model.dataset import DataConfig, load_dataset

    folder = make_dataset(tmp_path / "odd", ["Hello there.", "It is late."])
    _write_16k_stereo(folder / "wavs" / "utt001.wav")
    audio = read_wav(folder / "wavs" / "utt001.wav", 22050)
    assert audio.ndim == 1 and abs(audio.shape[0] - 11025) <= 2  # 0.5 s at 22050 Hz, one channel
    dataset = load_dataset(folder, DataConfig(), cache_dir=tmp_path / "cache")
    assert len(dataset) == 2 and not dataset.skipped
    frames = (
        dataset.items[1].mel.shape[0] if dataset.items[1].id == "utt001" else dataset.items[0].mel.shape[0]
    )
    assert abs(frames - (11025 // 256 + 1)) <= 2
