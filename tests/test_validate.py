"""`--validate`: presets re-run over seeds, recorded in the study and the telemetry; bad input exits 2.

The study needs no trials to validate a preset, so these tests open an empty smoke study instead of
running a search: the runs themselves are real (tiny model, a few steps, short utterances).
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

import search
from common.cli import run_cli
from studies.evidence.validate import ValidationRun, known_names, summarize
from studies.execution.storage import default_storage_url
from tests.corpus_fixture import cache_env  # noqa: F401  (session fixture)
from tests.test_report import STUDY, data_flags, short_corpus
from trainer.judge import Outcome
from trainer.telemetry import read_run


def empty_study(runs: Path) -> optuna.Study:
    (runs / STUDY).mkdir(parents=True, exist_ok=True)
    return optuna.create_study(study_name=STUDY, storage=default_storage_url(STUDY, runs))


def test_validate_records_each_seed_in_the_study_and_telemetry(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    cache_env: Path,  # noqa: F811
    capsys: pytest.CaptureFixture,
) -> None:
    paths = short_corpus(tmp_path_factory.getbasetemp())
    empty_study(tmp_path)
    argv = ["--study", STUDY, "--runs-dir", str(tmp_path), *data_flags(paths)]
    assert (
        run_cli(search.main, [*argv, "--validate", "basic", "--seeds", "2", "--steps", "4", "--seed", "5"])
        == 0
    )
    out = capsys.readouterr().out
    assert "validation" in out and "basic" in out and "of 2" in out

    study = optuna.load_study(study_name=STUDY, storage=default_storage_url(STUDY, tmp_path))
    v = study.user_attrs["validation:basic"]
    assert v["seeds"] == [5, 6] and v["steps"] == 4 and v["trial"] is None
    assert v["params"]["lr"] == 1e-5 and v["params"]["warmup_steps"] == 15  # basic, warmup scaled
    assert 0.0 <= v["divergence_rate"] <= 1.0 and len(v["divergence_steps"]) == v["diverged"]
    for run in v["runs"]:
        assert run["steps_run"] <= 4 and run["verdict"]
        record = read_run(tmp_path / STUDY / "telemetry.db", run["run_id"])
        assert record is not None and record["config"]["seed"] == run["seed"]
        assert record["config"]["max_steps"] == 4
    assert v["val_mel_mean"] is None or v["val_mel_std"] >= 0.0


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--validate", "basic", "nope"], ["'nope'", "basic", "enhanced", "best"]),
        (["--validate", "basic", "--seeds", "0"], ["--seeds"]),
        (["--validate", "best"], ["no feasible trial"]),
        (["--report"], ["no finished trial"]),
    ],
)
def test_bad_input_says_what_and_exits_2(
    flags: list[str], words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    study = empty_study(tmp_path)
    assert run_cli(search.main, ["--study", STUDY, "--runs-dir", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    for word in words:
        assert word in err
    assert study.user_attrs == {} and not (tmp_path / STUDY / "telemetry.db").exists()


def test_validate_on_a_missing_study_names_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run_cli(search.main, ["--study", STUDY, "--runs-dir", str(tmp_path), "--validate", "basic"]) == 2
    assert "no study 'stability-smoke'" in capsys.readouterr().err


def test_summary_counts_divergence_and_mel() -> None:
    runs = [
        ValidationRun(seed=0, run_id="a", verdict=Outcome("stable"), steps_run=100, val_mel=2.0),
        ValidationRun(
            seed=1, run_id="b", verdict=Outcome("diverged:nonfinite"), steps_run=37, divergence_step=37
        ),
        ValidationRun(seed=2, run_id="c", verdict=Outcome("no-stop"), steps_run=100, val_mel=3.0),
    ]
    s = summarize("basic", runs, steps=100, trial=None, params={})
    assert s.diverged == 1 and s.divergence_steps == [37] and s.stable == 1
    assert s.val_mel_mean == 2.5 and abs(s.val_mel_std - 0.7071) < 1e-3
    assert known_names()[-1] == "best" and "basic" in known_names()
    stored = s.to_attr()  # the study attribute, and back
    assert stored["diverged"] == 1 and stored["runs"][1]["divergence_step"] == 37
    assert type(s).from_attr(stored) == s


def test_judge_words_a_run_as_the_study_words_its_trials() -> None:
    from tests.test_record import NEVER_STOPS, SPEAKS, ev, result
    from trainer.config import GuardConfig
    from trainer.guards import Verdict
    from trainer.judge import judge

    guards = GuardConfig()

    def row(run) -> ValidationRun:
        return ValidationRun.of(0, "r", judge(run, guards))

    assert row(result((ev(50), ev(120, decode=SPEAKS)))).verdict == "stable"
    assert row(result((ev(120, decode=NEVER_STOPS),))).verdict == "no-stop"
    assert row(result((ev(120, diagonality=0.1, over_prior=-0.5, decode=SPEAKS),))).verdict == "unaligned"
    r = row(result((ev(0),), verdict=Verdict(kind="spike", step=9, detail="z 7")))
    assert (r.verdict, r.divergence_step, r.val_mel) == ("diverged:spike", 9, None)
