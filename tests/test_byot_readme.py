"""docs/your-trainer.md, "Bring your own trainer": both forms run as written.

The in-process example (the ``space.toml`` and ``train.py`` blocks) is cut out of that page, written to a
folder and run as a user would (``python train.py``); the space block must be ``tests/byot_space.toml``
itself, which the command-line form's three commands there use from the repository root.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import search
from common.cli import run_cli
from studies.record import load_records
from studies.record_keys import C_DIVERGED

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "your-trainer.md"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def section() -> str:
    return PAGE.read_text(encoding="utf-8")


def block(first_line: str) -> str:
    """The fenced block of the section whose first line is ``first_line``."""
    for body in re.findall(r"```[a-z]*\n(.*?)```", section(), flags=re.S):
        if body.startswith(first_line):
            return body
    raise AssertionError(f"{PAGE.name} has no block starting {first_line!r}")


def test_the_space_block_is_the_space_file_the_tests_use() -> None:
    assert block("# space.toml") == (ROOT / "tests" / "byot_space.toml").read_text(encoding="utf-8")


def test_the_in_process_example_runs_as_written(tmp_path: Path) -> None:
    code = block("# train.py")
    lines = [x for x in code.splitlines() if x.strip() and not x.lstrip().startswith("#")]
    assert len(lines) <= 20, f"the example is {len(lines)} lines"
    assert sum("# +" in x for x in code.splitlines()) == 3  # the three lines a loop gains
    (tmp_path / "space.toml").write_text(block("# space.toml"))
    (tmp_path / "train.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "train.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'runs' / 'toy' / 'study.db'}")
    records = load_records(study)
    finished = [r for r in records if r.finished]
    assert len(finished) == 8 and not [r for r in records if r.state == TrialState.FAIL]
    by_preset = {r.preset: r for r in finished if r.preset}
    assert by_preset["basic"].outcome == "stable" and by_preset["basic"].feasible
    enhanced = by_preset["enhanced"]  # lr 1.0: SGD on this problem diverges above ~0.8
    assert enhanced.state == TrialState.PRUNED and enhanced.outcome.startswith("diverged:")
    assert enhanced.constraints[C_DIVERGED] > 0 and not enhanced.feasible
    print(f"\nin-process example: {[(r.number, r.outcome, r.last_value) for r in finished]}")
    assert "guards off for lack of a signal" in done.stderr


def test_the_command_line_form_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    commands = [x for x in block("python search.py").splitlines() if x.startswith("python search.py")]
    assert len(commands) == 3
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    for line in commands:
        argv = shlex.split(line)[2:]  # after "python search.py"
        argv = [a.replace("runs/", f"{runs}/") for a in argv] + ["--runs-dir", str(runs)]
        assert run_cli(search.main, argv) == 0, (line, capsys.readouterr().err[-2000:])
    study = optuna.load_study(study_name="toy-cli", storage=f"sqlite:///{runs / 'toy-cli' / 'study.db'}")
    records = [r for r in load_records(study) if r.finished]
    assert len(records) == 6
    enhanced = next(r for r in records if r.preset == "enhanced")
    assert enhanced.outcome == "diverged:explosion" and enhanced.divergence.step == 30
    assert (runs / "toy-cli" / "report.html").exists()
    script = (runs / "toy-cli" / "best.sh").read_text()
    assert script.startswith("#!/bin/sh\n") and f" {ROOT / 'tests' / 'byot_trainer.py'} --lr " in script
    assert script.rstrip().endswith('"$@"')  # runs from any folder; arguments after it reach the trainer
    print(f"\ncommand-line example: {script.splitlines()[-1]}")
