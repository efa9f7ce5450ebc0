"""`python -m trainer`: a real short run leaves what a person looks at, and every input a user can get
wrong ends with exit 2 and ONE line on stderr, never a traceback.

Most cases call `trainer.cli.cli(argv)` in-process (an interpreter start with torch costs seconds); one
real run and one real error go through `python -m trainer` to cover the entry point itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from corpus_fixture import SMALL_SPEC, cache_env, corpus_paths, train_data  # noqa: F401  (pytest fixtures)

from trainer.cli import cli
from trainer.data import SPEECH_SENTENCES
from trainer.diagnosis import Cause
from trainer.diagnosis_full import read_diagnoses
from trainer.telemetry import eval_series, read_run, read_steps
from tts_model.corpus import CorpusPaths

REPO = Path(__file__).resolve().parents[1]
RUN_FLAGS = ["--model-size", "tiny", "--optimization-level", "basic", "--batch-size", "8"]


def call(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit code and stderr of the CLI run in-process (argparse errors arrive as SystemExit)."""
    try:
        code = cli(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def data_flags(paths: CorpusPaths) -> list[str]:
    return ["--train-data", str(paths.train), "--val-data", str(paths.eval)]


def preset_file(tmp_path: Path, content: str | dict) -> Path:
    path = tmp_path / "preset.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def subprocess_env(cache: Path) -> dict[str, str]:
    env = {**os.environ, "TTS_STABILITY_CACHE": str(cache), "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_short_real_run_leaves_checkpoints_telemetry_plots_and_audio(
    corpus_paths: CorpusPaths,  # noqa: F811
    cache_env: Path,  # noqa: F811
    train_data,  # noqa: F811  (features cached before the subprocess starts)
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    argv = RUN_FLAGS + ["--max-steps", "6", "--eval-every", "3", "--checkpoint-every", "3", "--out", str(out)]
    argv += data_flags(corpus_paths) + ["--device", "cpu"]
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", *argv],
        cwd=REPO,
        env=subprocess_env(cache_env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("step_*.pt"))
    assert ckpts == ["step_00000003.pt", "step_00000006.pt"]
    assert (out / "checkpoints" / "best.pt").exists()
    assert sorted(p.name for p in (out / "evals").glob("*.png")) == ["step_00000003.png", "step_00000006.png"]
    wavs = sorted((out / "evals").glob("*.wav"))
    assert wavs and all(w.stat().st_size > 1000 for w in wavs)
    rows = read_steps(out / "telemetry.db", out.name)
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert read_run(out / "telemetry.db", out.name)["status"] == "finished"
    assert "verdict" in proc.stderr + proc.stdout  # the closing report
    # Every eval decodes as many sentences as a study's speech rung judges on (or all this corpus has).
    n = min(SPEECH_SENTENCES, SMALL_SPEC.eval_utterances)
    assert n > 3 and eval_series(out / "telemetry.db", out.name, "decode_sentences") == [(3, n), (6, n)]

    # The same folder again without --resume would mix two runs: refused, before any work.
    code, err = call(argv, capsys)
    assert_one_line_error(code, err, "--resume")


# The seed's failure made quick: lr 1.0 at once, nothing to hold the gradients, fp16. Measured with this
# test's command on the 24-utterance corpus: the loss is NaN from step 2 and the run ends there
# (before the fix it was booked as 17 GradScaler skips and called diverged at step 18).
NAN_PRESET = {
    "lr": 1.0,
    "warmup_steps": 0,
    "scheduler": "constant",
    "grad_clip": 0,
    "precision": "fp16",
    "norm": "pre",
    "max_recoveries": 0,
}


def test_fp16_nan_preset_ends_nonfinite_at_the_step_the_loss_turns(
    corpus_paths: CorpusPaths,  # noqa: F811
    cache_env: Path,  # noqa: F811
    train_data,  # noqa: F811  (features cached before the subprocess starts)
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    argv = RUN_FLAGS + [
        "--device",
        "cpu",
        "--max-steps",
        "40",
        "--preset",
        str(preset_file(tmp_path, NAN_PRESET)),
    ]
    argv += data_flags(corpus_paths) + ["--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", *argv],
        cwd=REPO,
        env=subprocess_env(cache_env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]  # a diverged full training exits 1, not 2
    assert "Traceback" not in proc.stderr
    assert "device: cpu (1 thread)" in proc.stderr  # said before training (OMP_NUM_THREADS=1)
    record = read_run(out / "telemetry.db", out.name)
    assert record is not None and record["status"] == "diverged" and record["verdict_kind"] == "nonfinite"
    step = record["verdict_step"]
    assert 1 <= step <= 12, record
    assert record["verdict_detail"] == f"loss is nan at step {step} (forward overflow under fp16)"
    assert len(read_steps(out / "telemetry.db", out.name)) == step
    # why: replayed after the run (trainer/diagnosis_full.py), kept in the run folder, said in one line
    (found,) = read_diagnoses(out)
    d = found.diagnosis
    assert d.cause is Cause.FP16_OVERFLOW and d.reproduced and d.step == step, d.line()
    assert "went Inf/NaN from finite inputs" in d.evidence, d.line()  # not float32's max as a number
    assert f"why it diverged (ended the run): step {step}: fp16-overflow:" in proc.stderr


def test_describe_device_says_what_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from common.device import describe_device

    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert describe_device(torch.device("cpu")) == "cpu (16 threads)"
    card = SimpleNamespace(name="NVIDIA H200", total_memory=int(139.8 * 2**30))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: card)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert describe_device(torch.device("cuda")) == "cuda:0 NVIDIA H200, 139.8 GiB"
    assert describe_device(torch.device("cuda:1")) == "cuda:1 NVIDIA H200, 139.8 GiB"


def test_error_through_the_real_entry_point(tmp_path: Path, cache_env: Path) -> None:  # noqa: F811
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer",
            "--preset",
            str(preset_file(tmp_path, "{not json")),
            "--device",
            "cpu",
        ],
        cwd=REPO,
        env=subprocess_env(cache_env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(proc.returncode, proc.stderr, "not valid JSON")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--optimization-level", "turbo"], "turbo"),
        (["--model-size", "huge"], "huge"),
        (["--device", "tpu"], "tpu"),
        (["--batch-size", "many"], "many"),
        (["--batch-size", "0"], "batch_size"),
        (["--max-steps", "-1"], "max_steps"),
    ],
    ids=["unknown-level", "unknown-size", "bad-device", "non-integer-flag", "batch-size-0", "negative-steps"],
)
def test_bad_flags(argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = call(argv + ["--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "run").exists()


def test_cuda_requested_without_cuda(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = call(["--device", "cuda", "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, "cuda")


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ({"lrr": 1e-4}, ("unknown field 'lrr'", "did you mean 'lr'")),
        ({"lr": "fast"}, ("'lr'", "number")),
        ({"huber_loss": 1}, ("'huber_loss'", "true or false")),
        ({"lr": 0}, ("'lr'", "> 0")),
        ({"lr": -1e-4}, ("'lr'",)),
        ({"grad_clip": -0.5}, ("'grad_clip'", ">= 0")),
        ({"warmup_steps": -1}, ("'warmup_steps'", ">= 0")),
        ({"warmup_steps": 10.5}, ("'warmup_steps'", "integer")),
        ({"guards": {"spike_zz": 3}}, ("guards.spike_zz",)),
        ("{not json", ("not valid JSON", "line 1")),
        ("[1, 2]", ("JSON object",)),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "bool-as-int",
        "lr-zero",
        "lr-negative",
        "clip-negative",
        "warmup-negative",
        "warmup-fraction",
        "unknown-guard",
        "not-json",
        "not-an-object",
    ],
)
def test_bad_preset_file(
    content, needles: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = preset_file(tmp_path, content)
    code, err = call(["--preset", str(path), "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, str(path), *needles)


def test_missing_preset_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.json"
    code, err = call(["--preset", str(missing), "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, str(missing), "not found")


def test_missing_data_folder(
    corpus_paths: CorpusPaths,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "no_such_folder"
    argv = [
        "--train-data",
        str(missing),
        "--val-data",
        str(corpus_paths.eval),
        "--out",
        str(tmp_path / "run"),
    ]
    code, err = call(RUN_FLAGS + argv, capsys)
    assert_one_line_error(code, err, str(missing))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("given", ["--train-data", "--val-data"])
def test_only_one_data_folder(
    given: str,
    corpus_paths: CorpusPaths,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, err = call(RUN_FLAGS + [given, str(corpus_paths.train), "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, "--train-data", "--val-data")


def test_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a_file"
    out.write_text("not a folder", encoding="utf-8")
    code, err = call(["--out", str(out)], capsys)
    assert_one_line_error(code, err, str(out), "not a folder")


@pytest.mark.parametrize("frames", [1, 3, 40])
def test_eval_artifacts_of_any_decode_length(frames: int, tmp_path: Path) -> None:
    """An untrained model stops after its first decoder step: its 1-3 frames must still give a WAV
    (Griffin-Lim's inverse STFT needs ~n_fft / hop frames; the first eval of a real run crashed here)."""
    import soundfile as sf

    from trainer.artifacts import write_eval_plot, write_eval_wav
    from trainer.evaluate import EvalSample
    from tts_model.audio import FeatureConfig

    torch.manual_seed(0)
    sample = EvalSample(
        target=torch.randn(30, 80) - 4,
        predicted=torch.randn(30, 80) - 4,
        attention=torch.rand(10, 12),
        decoded=torch.randn(frames, 80) - 4,
    )
    features = FeatureConfig()
    wav = write_eval_wav(tmp_path / "x.wav", sample, features)
    assert wav is not None
    info = sf.info(str(wav))
    assert info.samplerate == features.sample_rate and info.frames >= (frames - 1) * features.hop_length
    png = write_eval_plot(tmp_path / "x.png", sample, step=1, val_mel=1.0)
    assert png.stat().st_size > 1000


def test_the_last_line_says_whether_the_model_speaks_and_why() -> None:
    from tests.test_record import NEVER_STOPS, ev, result
    from trainer.cli import speech_line
    from trainer.evaluate import DecodeMetrics
    from trainer.judge import judge
    from trainer.presets import preset
    from tts_model.speech_measure import SentenceMeasure

    cfg = preset("basic")
    rows = tuple(
        SentenceMeasure(id=f"u{i}", stopped=True, length_ratio=1.0, dtw=1.0, walk=0.7, ratio=0.3)
        for i in range(3)
    )
    good = DecodeMetrics(
        sentences=3, stop_rate=1.0, length_ratio=1.0, dtw=1.0, per_sentence=rows, speaks=True
    )

    def line(run) -> str:
        return speech_line(judge(run, cfg.guards, warmup_steps=cfg.warmup_steps), cfg)

    assert line(result((ev(3000, decode=good),))).startswith("speaks: decode ratio 0.30")
    silent = line(result((ev(3000, decode=NEVER_STOPS),)))
    assert silent.startswith("does not speak: ") and "at step 3000" in silent
    assert "no free-running decode" in line(result(()))
