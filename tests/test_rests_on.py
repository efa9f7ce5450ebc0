"""Conclusions say what they rest on, and a thin one says so and what would firm it up."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import search
from common.cli import run_cli
from studies.evidence.rests_on import THIN, rests_on

ROOT = Path(__file__).resolve().parents[1]


def test_the_words() -> None:
    assert rests_on(5) == "rests on 5 trials"
    assert rests_on(THIN, "stable trial") == f"rests on {THIN} stable trials"
    assert rests_on(1, "stable trial") == "rests on 1 stable trial: thin, run more trials (--trials 20)"
    assert rests_on(0, "run", more="run --margin basic enhanced").endswith(
        "thin, run --margin basic enhanced"
    )


def test_a_study_with_one_stable_trial_says_its_conclusions_are_thin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", "200")
    runs = tmp_path / "runs"
    space = ["--study", "toy", "--space", "tests/byot_space.toml", "--runs-dir", str(runs)]
    command = f"{sys.executable} tests/byot_trainer.py --lr {{lr}} --grad-clip {{grad_clip}} --warmup {{warmup_steps}}"
    # The two presets only: basic trains (1 stable trial), enhanced's lr 1.0 diverges.
    assert run_cli(search.main, [*space, "--trials", "2", "--command", f"{command} --diverge-above 0.3"]) == 0
    summary = capsys.readouterr().err
    assert "importance for val loss: needs at least 4 trials, has 1 (rests on 1 trial: thin" in summary
    assert run_cli(search.main, [*space, "--report"]) == 0
    html = (runs / "toy" / "report.html").read_text(encoding="utf-8")
    assert "rests on 1 stable trial: thin, run more trials (--trials 20)" in html  # the rediscovery
    assert (
        "The table rests on 2 judged trials: thin" in html
    )  # the lr boundary: basic survived, enhanced diverged
