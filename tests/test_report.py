"""`--report` end to end: a small real study, the lr probe, a validation, the page opened in Chromium.

The study is real (the tiny model, the smoke study's 20-40-step trials, a corpus of short utterances
so the end-of-trial decode is cheap); only its size is small. The page is opened in headless
Chromium, screenshotted, and its DOM read back: a blank page or a plot that does not decode fails.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from rich.console import Console

import search
from common.cli import run_cli
from studies.evidence import conclusions, lr_probe, margin, transfer, validate
from studies.evidence.conclusions import Point
from studies.evidence.plots import importance_plot
from studies.execution.long_runs import LongRun, long_run
from studies.execution.runs import RunSetup, load_data
from studies.paths import StudyPaths
from studies.record import load_records
from studies.registry import get_study
from tests.corpus_fixture import cache_env  # noqa: F401  (session fixture)
from trainer.judge import Outcome
from tts_model.corpus import CorpusPaths, CorpusSpec, ensure_corpus

STUDY = "stability-smoke"
# Short utterances: trials stay short and a decode that never stops is capped at ~2x 1.6 s.
SHORT_SPEC = CorpusSpec(train_utterances=16, eval_utterances=4, seed=0, min_seconds=0.5, max_seconds=1.6)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
PLOTS = (
    "stability_map.png",
    "lr_boundary.png",
    "lr_probe.png",
    "val_mel_curves.png",
    "grad_norm_curves.png",
    "slices.png",
    "validation.png",
    "best_sample.png",
    "transfer.png",
    "margin.png",
    "fp16_headroom.png",
)


def short_corpus(root: Path) -> CorpusPaths:
    return ensure_corpus(SHORT_SPEC, root / "short_corpus", console=Console(quiet=True))


def data_flags(paths: CorpusPaths) -> list[str]:
    # One thread: more busy threads than free cores makes torch's CPU kernels spin (the CI box has 2).
    return [
        "--train-data",
        str(paths.train),
        "--val-data",
        str(paths.eval),
        "--device",
        "cpu",
        "--threads",
        "1",
    ]


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory, cache_env: Path) -> Path:  # noqa: F811
    """A 3-trial smoke study, its lr probe, a 2-seed validation and the margin of basic, and the report: the
    study folder."""
    paths = short_corpus(tmp_path_factory.getbasetemp())
    runs = tmp_path_factory.mktemp("report_runs")
    base = ["--study", STUDY, "--runs-dir", str(runs), *data_flags(paths)]
    assert run_cli(search.main, [*base, "--trials", "3"]) == 0
    assert run_cli(search.main, [*base, "--lr-probe", "--steps", "20"]) == 0
    # The smoke study's horizon is 20 steps: a long run is at least 10x that.
    # Two worker processes: test_transfer_runs_in_workers_match_this_process checks what they ran.
    assert run_cli(search.main, [*base, "--transfer-check", "3", "--steps", "200", "--workers", "2"]) == 0
    # basic's margin capped at x2: two 6-step rungs, enough for the table, the plot and the seed's answer.
    margin = ["--margin", "basic", "--margin-max", "2"]
    assert (
        run_cli(
            search.main, [*base, "--validate", "basic", "--seeds", "2", "--steps", "6", *margin, "--report"]
        )
        == 0
    )
    return runs / STUDY


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browse(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    exe = chromium()
    assert exe is not None
    profile = tmp / "profile"
    profile.mkdir(exist_ok=True)
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_report_holds_every_part(reported: Path) -> None:
    html = (reported / "report.html").read_text(encoding="utf-8")
    for anchor in (
        "seed",
        "margin",
        "fp16",
        "presets",
        "rediscovery",
        "map",
        "boundary",
        "why",
        "probe",
        "curves",
        "importance",
        "validation",
        "transfer",
    ):
        assert f'id="{anchor}"' in html
    for table_id in ("presets-table", "boundary-table", "validation-table", "transfer-table", "margin-table"):
        assert f'id="{table_id}"' in html
    for name in PLOTS:
        assert f'data-file="{name}"' in html, name
        assert (reported / "report" / name).stat().st_size > 1000
    assert 'id="best-wav"' in html and (reported / "report" / "best.wav").exists()
    # The seed's question comes first: basic's line names its study verdict, its margin and its headroom.
    assert html.index('id="seed"') < html.index('id="presets"')
    assert "basic: " in html and "survived up to 2x its lr" in html and "fp16 headroom at the end" in html
    # The comparison table exactly when some trial finished stable; otherwise the sentence saying why not.
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{reported / 'study.db'}")
    any_stable = any(r.outcome == Outcome.STABLE for r in load_records(study))
    assert ('id="rediscovery-table"' in html) is any_stable
    assert ("Cannot say yet" in html) is not any_stable
    # Every diverged trial, validation seed, margin rung and lr probe carries its diagnosis, and the table
    # lists them.
    diverged = [r for r in load_records(study) if r.outcome.diverged]
    seeds = [run for v in validate.stored_results(study).values() for run in v.runs if run.diverged]
    rungs = [r for m in margin.stored(study).values() for r in m.rungs if r.diverged]
    probe = lr_probe.stored(study)
    assert probe is not None and (probe.diagnosis is not None) is probe.diverged
    assert all(r.diagnosis is not None for r in diverged) and all(s.diagnosis is not None for s in seeds)
    assert all(r.diagnosis is not None for r in rungs)
    assert ('id="why-table"' in html) is bool(diverged or seeds or rungs or probe.diverged)


def test_report_renders_in_headless_chromium(reported: Path, tmp_path: Path) -> None:
    if chromium() is None:
        if os.environ.get("CI"):  # .ci/run installs it: a missing browser there is a failure, not a skip
            pytest.fail("Debian's chromium is not installed")
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    shot = tmp_path / "report.png"
    done = browse(reported / "report.html", tmp_path, f"--screenshot={shot}", "--window-size=1400,10000")
    assert shot.exists(), done.stderr[-2000:]
    from PIL import Image

    image = Image.open(shot).convert("L")
    pixels = list(image.resize((140, 700)).tobytes())
    inked = sum(p < 200 for p in pixels) / len(pixels)
    assert inked > 0.03, f"the page looks blank: {inked:.1%} of it is not white"
    assert len(set(pixels)) > 50

    dom = browse(reported / "report.html", tmp_path, "--dump-dom", "--virtual-time-budget=10000").stdout
    assert 'id="presets-table"' in dom and "basic" in dom
    total = dom.count('class="plot"')
    assert total == len(PLOTS)
    assert f'data-images-loaded="{total}"' in dom and f'data-images-total="{total}"' in dom


def test_report_records_probe_and_validation_in_the_study(reported: Path) -> None:
    storage = f"sqlite:///{reported / 'study.db'}"
    study = optuna.load_study(study_name=STUDY, storage=storage)
    probe = study.user_attrs["lr_probe"]
    assert probe["steps"] == 20 and 1 <= probe["steps_run"] <= 20
    assert probe["diverged"] == (probe["divergence_lr"] is not None)
    validation = study.user_attrs["validation:basic"]
    assert validation["seeds"] == [0, 1] and validation["steps"] == 6 and len(validation["runs"]) == 2


def test_the_optuna_cli_reads_the_study_untouched(reported: Path) -> None:
    optuna_cli = Path(sys.executable).with_name("optuna")
    storage = f"sqlite:///{reported / 'study.db'}"
    out = subprocess.run(
        [str(optuna_cli), "trials", "--storage", storage, "--study-name", STUDY, "-f", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    trials = json.loads(out.stdout)
    assert len(trials) >= 3 and {"number", "params", "state"} <= set(trials[0])


def test_transfer_runs_in_workers_match_this_process(
    reported: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """The fixture's transfer check ran its long runs in two spawned workers; the first one again, here in
    this process, trains to the same numbers (one thread each, same seed): the pool changes nothing."""
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{reported / 'study.db'}")
    check = transfer.stored(study)
    assert check is not None and len(check.runs) == 3
    first = check.runs[0]
    paths = short_corpus(tmp_path_factory.getbasetemp())
    data = load_data(paths.train, paths.eval)
    setup = RunSetup(get_study(STUDY), data, torch.device("cpu"), StudyPaths(tmp_path, STUDY), 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        job = LongRun(first.number, study.trials[first.number].params, check.steps, f"{STUDY}/again")
        again = long_run(setup, job)
    finally:
        torch.set_num_threads(threads)
    for name in ("verdict", "divergence_step", "steps_run", "val_mel", "decode_ratio", "speaks"):
        assert getattr(again, name) == getattr(first.long, name), name


def test_report_without_a_finished_trial_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / STUDY / 'study.db'}"
    (tmp_path / STUDY).mkdir()
    optuna.create_study(study_name=STUDY, storage=url)
    assert run_cli(search.main, ["--study", STUDY, "--runs-dir", str(tmp_path), "--report"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no finished trial" in err and err.count("\n") == 1
    assert not (tmp_path / STUDY / "report.html").exists()


# evidence: the boundary and the rediscovery sentence on hand-made points


def _p(n: int, outcome: str, val: float | None, **params: float) -> Point:
    return Point(number=n, params=params, outcome=Outcome(outcome), val_mel=val)


def test_lr_boundary_per_clip_bucket() -> None:
    pts = [
        _p(0, "stable", 3.0, lr=1e-4, grad_clip=0.5),
        _p(1, "pruned", 3.5, lr=1e-3, grad_clip=0.5),
        _p(2, "diverged:nonfinite", None, lr=1e-2, grad_clip=0.5),
        # Pruned before the collapse guard could look: not stable, whatever its lr (issue 11).
        _p(4, "unjudged", 3.0, lr=3.7e-2, grad_clip=0.5),
        _p(3, "diverged:spike", None, lr=3e-3, grad_clip=4.0),
    ]
    buckets = conclusions.lr_boundary(pts, get_study(STUDY).space.range_of("grad_clip"))
    assert len(buckets) == 4 and math.isclose(buckets[0].clip_low, 0.1)
    mid = next(b for b in buckets if b.clip_low <= 0.5 < b.clip_high)
    assert mid.max_survived_lr == 1e-3 and mid.min_diverged_lr == 1e-2 and mid.trials == 4
    assert (mid.survived, mid.diverged, mid.unjudged) == (2, 1, 1)
    top = buckets[-1]
    assert top.max_survived_lr is None and top.min_diverged_lr == 3e-3


def test_rediscovery_states_each_knob_either_way() -> None:
    basic = dict(lr=1e-5, mel_weight=1.0, kl_weight=0.5, grad_clip=0.5, weight_decay=1e-7, warmup_steps=150)
    basic.update(adaptive_loss_weights=False, label_smoothing=False, huber_loss=False)
    enhanced = dict(
        lr=5e-5, mel_weight=2.5, kl_weight=1.0, grad_clip=1.0, weight_decay=1e-6, warmup_steps=100
    )
    enhanced.update(adaptive_loss_weights=True, label_smoothing=True, huber_loss=True)
    optimum = {**basic, "lr": 3e-3, "huber_loss": True}  # higher lr than enhanced: not the seed's way
    pts = [_p(0, "stable", 2.0, **optimum), _p(1, "diverged:nonfinite", None, **enhanced)]
    space = get_study(STUDY).space
    r = conclusions.rediscovery(pts, basic, enhanced, space)
    by_knob = {row.knob: row for row in r.rows}
    assert by_knob["lr"].agrees is False and by_knob["lr"].where == "above enhanced"
    assert by_knob["lr"].seed_move == "lower"
    assert by_knob["grad_clip"].agrees is True and by_knob["grad_clip"].seed_move == "tighter"
    assert by_knob["warmup_steps"].seed_move == "longer" and by_knob["warmup_steps"].where == "at basic"
    assert by_knob["huber_loss"].agrees is False and by_knob["label_smoothing"].agrees is True
    assert (r.agree, r.total) == (7, 9)
    assert conclusions.rediscovery([pts[1]], basic, enhanced, space).rows == ()


def test_importance_plot_draws_both_targets(tmp_path: Path) -> None:
    path = importance_plot(
        {"val mel": {"lr": 0.7, "grad_clip": 0.3}, "divergence": {"lr": 1.0}}, tmp_path / "i.png"
    )
    assert path.stat().st_size > 1000
