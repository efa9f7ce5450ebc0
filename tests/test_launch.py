"""A search run in this process says what it measured (the step rate and what it means for the study),
in whole lines when its output is not a terminal."""

from __future__ import annotations

from pathlib import Path

import pytest

import search
from common.cli import run_cli
from tests.corpus_fixture import cache_env  # noqa: F401  (session fixture)
from tests.test_report import STUDY, data_flags, short_corpus


def test_the_search_forecasts_its_time_after_the_first_steps(
    tmp_path: Path,
    cache_env: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    paths = short_corpus(tmp_path)
    argv = ["--study", STUDY, "--runs-dir", str(tmp_path / "runs"), "--trials", "1", *data_flags(paths)]
    assert run_cli(search.main, argv) == 0
    captured = capsys.readouterr()
    err = captured.err
    # Not a terminal (a file, a pipe, a CI log): whole lines and tables rich did not cut at 80 columns.
    assert "…" not in err + captured.out
    header = next(x for x in err.splitlines() if x.startswith(f"study {STUDY} in "))
    assert " on cpu (" in header and header.endswith("0 of 1 trials finished; seeded presets basic, enhanced")
    line = next((x for x in err.splitlines() if x.startswith("measured ")), None)
    assert line is not None, err
    assert (
        "steps/s on cpu" in line
        and "this trial (" in line
        and "the other 0 trials of ~" in line
        and "before pruning" in line
    )
