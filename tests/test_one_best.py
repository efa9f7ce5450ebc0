"""One "best": the summary, the report's first row and the export name the same trial.

Two studies: a small real one (the bring-your-own-trainer example's command line, its report and its
export), and a quick study with a speech rung whose trials are hand-recorded (a CPU trial is too short
to speak) so that the lowest val mel, a deeper rung and speech all pull different ways.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import optuna
import pytest

import search
from common.cli import run_cli
from studies import ranking
from studies.record import load_records
from studies.record_keys import C_DIVERGED, C_NO_STOP, C_UNALIGNED
from tests.test_export import STUDY as QUICK
from tests.test_export import record

ROOT = Path(__file__).resolve().parents[1]
FEASIBLE = {C_DIVERGED: -1.0, C_UNALIGNED: -0.1, C_NO_STOP: -0.1}


def first_row(html: str, table_id: str) -> str:
    table = re.search(rf'<table id="{table_id}">.*?<tbody><tr><td>([^<]*)</td>', html, flags=re.S)
    assert table is not None, f"no {table_id} with a row"
    return table.group(1)


def summary_top(out: str) -> str:
    """The trial number in the first row of the summary's "top feasible trials" table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "top feasible trials" in line)
    row = next(line for line in lines[start + 1 :] if re.match(r"^\s*[│|]\s*\d+\s*[│|]", line))
    return re.match(r"^\s*[│|]\s*(\d+)", row).group(1)


def test_a_real_study_names_one_best_in_its_summary_report_and_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("COLUMNS", "200")  # the summary's tables on one line a row
    runs = tmp_path / "runs"
    space = ["--study", "toy", "--space", "tests/byot_space.toml", "--runs-dir", str(runs)]
    command = f"{sys.executable} tests/byot_trainer.py --lr {{lr}} --grad-clip {{grad_clip}} --warmup {{warmup_steps}}"
    assert run_cli(search.main, [*space, "--trials", "6", "--command", command]) == 0
    summary = capsys.readouterr().err  # the summary goes to the console beside the progress
    assert run_cli(search.main, [*space, "--report"]) == 0
    html = (runs / "toy" / "report.html").read_text(encoding="utf-8")
    assert run_cli(search.main, [*space, "--export-preset", str(tmp_path / "best.sh")]) == 0

    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{runs / 'toy' / 'study.db'}")
    best = ranking.best(load_records(study))
    assert best is not None
    assert summary_top(summary) == first_row(html, "top-table") == str(best.number)
    script = (tmp_path / "best.sh").read_text()
    assert f"--lr {best.params['lr']}" in script  # the export trains the same trial's params


def test_with_a_speech_rung_the_best_speaks_at_the_deepest_rung_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    (runs / QUICK).mkdir(parents=True)
    study = optuna.create_study(study_name=QUICK, storage=f"sqlite:///{runs / QUICK / 'study.db'}")
    from space.stability import preset_params
    from studies.registry import get_study
    from trainer.presets import PRESETS

    base = preset_params(dict(PRESETS["basic"]), get_study(QUICK).space)
    record(study, {**base, "lr": 1e-3}, 1.6, FEASIBLE)  # speaks at the long rung
    record(study, {**base, "lr": 2e-3}, 1.3, FEASIBLE)  # speaks there too, lower mel: the best
    record(study, {**base, "lr": 3e-3}, 1.0, FEASIBLE, speaks=False)  # lowest mel, silent
    record(study, {**base, "lr": 4e-3}, 0.9, {**FEASIBLE, C_NO_STOP: 0.4})  # lower still, infeasible

    flags = ["--study", QUICK, "--runs-dir", str(runs)]
    out = tmp_path / "best.json"
    assert run_cli(search.main, [*flags, "--export-preset", str(out)]) == 0
    assert run_cli(search.main, [*flags, "--report"]) == 0
    html = (runs / QUICK / "report.html").read_text(encoding="utf-8")
    assert json.loads(out.read_text())["provenance"]["trial"] == 1
    assert first_row(html, "top-table") == "1"
    from rich.console import Console

    from studies.evidence.summary import print_summary

    console = Console(width=240, record=True)
    print_summary(study, get_study(QUICK), console)
    assert summary_top(console.export_text()) == "1"


def test_a_report_on_your_trainer_speaks_your_studys_language(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    runs = tmp_path / "runs"
    space = ["--study", "toy", "--space", "tests/byot_space.toml", "--runs-dir", str(runs)]
    command = f"{sys.executable} tests/byot_trainer.py --lr {{lr}} --grad-clip {{grad_clip}} --warmup {{warmup_steps}}"
    assert run_cli(search.main, [*space, "--trials", "4", "--command", command]) == 0
    assert run_cli(search.main, [*space, "--report"]) == 0
    html = (runs / "toy" / "report.html").read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>|data:[^\"]+", " ", html)  # the words a person reads, not the markup or images
    for word in ("seed", "mel", "fp16", "warmup and loss weights", "speech"):
        assert word not in text.lower(), (word, text[max(0, text.lower().find(word) - 200) :][:400])
    assert "val loss" in text  # the study's own metric names the legend and the tables
    assert "python search.py" not in text  # no command suggested: every one it could suggest is refused
