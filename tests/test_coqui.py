"""Coqui TTS's own Trainer as a study's trainer: real Coqui training in real processes, on CPU.

Each trial runs ``examples/coqui/coqui_runner.py`` through the command-line protocol, as ``make
coqui-quick`` does, shrunk: the small test corpus (24 + 8 utterances) and 8-step trials. Checked: every
trial finished and was judged, a huge lr ended PRUNED + infeasible by a guard with its trainer stopped,
and the report renders. With coqui-tts-trainer installed beside the project (two top-level packages
called ``trainer``), the project's processes still import the project's, the runner Coqui's, and a bad
flag or the wrong ``trainer`` is one line, exit 2.

The tests that run Coqui need the ``coqui`` extra (``make test`` and CI install it); elsewhere they skip,
unless TTS_REQUIRE_COQUI=1 (set by .ci/run) makes that a failure.
"""

from __future__ import annotations

import importlib.metadata
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import search
from common.cli import run_cli
from studies.foreign import load_foreign_study
from studies.record import load_records
from studies.record_keys import C_DIVERGED
from studies.scoring import DIVERGED_VIOLATION
from tests.corpus_fixture import cache_env, corpus_paths  # noqa: F401  (session fixtures)
from tts_model.corpus import CorpusPaths

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "examples" / "coqui" / "coqui_runner.py"
SPACE = ROOT / "tests" / "coqui_space.toml"
STEPS, EVAL_EVERY = 8, 4


def _installed(*names: str) -> bool:
    """Installed, asked of the package metadata: importing Coqui's ``trainer`` here would shadow ours."""
    try:
        for name in names:
            importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


COQUI = _installed("coqui-tts", "coqui-tts-trainer")
if not COQUI and os.environ.get("TTS_REQUIRE_COQUI") == "1":
    raise RuntimeError("TTS_REQUIRE_COQUI=1 but the coqui extra is not installed: pip install -e '.[coqui]'")
needs_coqui = pytest.mark.skipif(
    not COQUI, reason="the coqui extra is not installed (pip install -e '.[coqui]'; make test and CI do)"
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def runner_command(corpus, *extra: str) -> str:  # noqa: ANN001
    """The trial's command: this Python (the venv with the extra), isolated, as the Makefile's."""
    argv = [
        sys.executable,
        "-I",
        str(RUNNER),
        "--train-data",
        str(corpus.train),
        "--val-data",
        str(corpus.eval),
    ]
    fields = "--config {config} --out {run_dir} --seed {seed}"
    return f"{shlex.join(argv)} {fields} {shlex.join(extra)}"


@needs_coqui
def test_a_coqui_smoke_study_judges_every_trial_and_stops_a_huge_lr(
    corpus_paths,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs = tmp_path / "runs"
    command = runner_command(corpus_paths, "--steps", str(STEPS), "--eval-every", str(EVAL_EVERY), "--tiny")
    argv = ["--study", "coqui-smoke", "--space", str(SPACE), "--runs-dir", str(runs), "--trials", "3"]
    began = time.monotonic()
    assert run_cli(search.main, [*argv, "--command", command]) == 0
    study_s = time.monotonic() - began
    err = capsys.readouterr().err
    study = optuna.load_study(
        study_name="coqui-smoke", storage=f"sqlite:///{runs / 'coqui-smoke' / 'study.db'}"
    )
    records = load_records(study)

    # Every trial finished (COMPLETE or PRUNED) and was judged: an outcome word, the guards it had.
    assert len(records) == 3 and all(r.state in (TrialState.COMPLETE, TrialState.PRUNED) for r in records)
    assert all(r.outcome for r in records), [r.outcome for r in records]
    by_preset = {r.preset: r for r in records if r.preset}
    default, huge = by_preset["coqui-default"], by_preset["huge-lr"]
    # Coqui's numbers reached every guard: only the project's own decode check is off.
    assert default.guards_off == ("decode",), default.guards_off
    assert default.state == TrialState.COMPLETE and default.steps_run == STEPS and default.exit_code == 0

    # lr 1e4: the loss goes non-finite within a few steps (Coqui trains on through NaN); the guard
    # stops it at that step, the trial is PRUNED and infeasible, and the trainer process is gone.
    assert huge.state == TrialState.PRUNED and huge.outcome.startswith("diverged:"), huge.outcome
    assert huge.constraints == {C_DIVERGED: DIVERGED_VIOLATION} and not huge.feasible
    assert huge.divergence.step < STEPS and huge.steps_run == huge.divergence.step
    assert huge.stopped_with in ("SIGTERM", "SIGKILL") and huge.exit_code != 0
    assert f"trial {huge.number}: stopped the trainer" in err

    # The report renders this space (no grad clip assumed, the presets' verdicts).
    assert run_cli(search.main, [*argv, "--report"]) == 0
    html = (runs / "coqui-smoke" / "report.html").read_text(encoding="utf-8")
    assert "coqui-default" in html and "huge-lr" in html and "<img" in html
    print(
        f"\ncoqui smoke study: 3 trials in {study_s:.0f} s; "
        + "; ".join(f"{r.preset or f'trial {r.number}'}: {r.outcome} at step {r.steps_run}" for r in records)
    )


def test_the_shipped_space_file_and_config_agree() -> None:
    """examples/coqui/space.toml: every key is in config.json, every preset in its ranges."""
    corpus = CorpusPaths.at(Path("runs/coqui-corpus"))
    command = runner_command(corpus, "--steps", "100", "--eval-every", "20", "--tiny")
    study = load_foreign_study(
        ROOT / "examples" / "coqui" / "space.toml", name="coqui-quick", command=command
    )
    assert study.presets == ("coqui-default", "enhanced") and study.space.warmup_param == "warmup_steps"
    assert study.preset_values()["coqui-default"]["warmup_steps"] == 4000


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}


@needs_coqui
@pytest.mark.skipif(not _installed("tts-stability-search"), reason="the project is not pip-installed here")
def test_each_process_imports_its_own_trainer(tmp_path: Path) -> None:
    """Outside the repository, site-packages (Coqui's ``trainer``) comes before the project's editable
    install: importing ``studies`` claims ``trainer`` for the project (common/our_trainer.py). The
    runner, run with ``-I``, gets Coqui's even with the repository on PYTHONPATH."""
    ours = "import studies.execution.inprocess, trainer.reporter, trainer; print(trainer.__file__)"
    got = subprocess.run(
        [sys.executable, "-c", ours],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert got.returncode == 0, got.stderr[-2000:]
    assert Path(got.stdout.strip()) == ROOT / "trainer" / "__init__.py"

    coquis = "import trainer; print(trainer.__file__, hasattr(trainer, 'Trainer'))"
    env = _clean_env() | {"PYTHONPATH": str(ROOT)}
    got = subprocess.run(
        [sys.executable, "-I", "-c", coquis], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert got.returncode == 0 and got.stdout.strip().endswith("True"), got.stdout + got.stderr[-2000:]
    assert Path(got.stdout.split()[0]) != ROOT / "trainer" / "__init__.py"

    late = "import trainer; import studies"  # Coqui's first: the project cannot take it back
    got = subprocess.run(
        [sys.executable, "-c", late],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        got.returncode == 1 and "coqui-tts-trainer's has the same name" in got.stderr.strip().splitlines()[-1]
    )


@needs_coqui
@pytest.mark.parametrize(
    ("case", "flags", "python_flags", "words"),
    [
        ("no config", ["--config", "nope.json"], ["-I"], "--config nope.json: no such file"),
        ("no corpus", ["--train-data", "nowhere"], ["-I"], "--train-data nowhere: no metadata.csv there"),
        ("no steps", ["--steps", "0"], ["-I"], "--steps and --eval-every must be >= 1"),
        ("the project's trainer", [], ["-P"], "run this file with `python -I`"),
    ],
)
def test_the_runner_says_a_bad_input_in_one_line(
    corpus_paths,  # noqa: F811
    tmp_path: Path,
    case: str,
    flags: list[str],
    python_flags: list[str],
    words: str,
) -> None:
    base = {
        "--config": str(ROOT / "examples" / "coqui" / "config.json"),
        "--train-data": str(corpus_paths.train),
        "--val-data": str(corpus_paths.eval),
        "--out": str(tmp_path / "out"),
    }
    base.update(zip(flags[::2], flags[1::2], strict=True))
    argv = [x for flag_value in base.items() for x in flag_value]
    env = _clean_env() | {"PYTHONPATH": str(ROOT)}  # -P keeps PYTHONPATH: the project's trainer wins
    got = subprocess.run(
        [sys.executable, *python_flags, str(RUNNER), *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = got.stderr.strip().splitlines()
    assert got.returncode == 2 and len(lines) == 1 and words in lines[0], (case, got.stderr[-2000:])
    assert not (tmp_path / "out").exists()
