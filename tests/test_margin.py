"""`--margin`: the ladder's stepping on recipes with a known edge, LR sensitivity, the stored record, the
seed's answer on hand-made facts, bad flags (exit 2, nothing written), and one real ladder end to end."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import optuna
import pytest

import search
from common.cli import run_cli
from space.stability import preset_params
from studies.evidence import edge_hint, lr_probe, margin, seed_answer
from studies.evidence.fp16 import HeadroomCurve
from studies.evidence.margin import Margin, Rung, climb, lr_sensitivity
from studies.execution.storage import default_storage_url
from studies.record import Divergence, TrialRecord
from studies.record_keys import C_DIVERGED, C_NO_STOP, C_UNALIGNED
from studies.registry import get_study
from tests.corpus_fixture import cache_env  # noqa: F401  (session fixture)
from tests.test_export import STUDY as QUICK
from tests.test_export import record
from tests.test_report import STUDY, data_flags, short_corpus
from tests.test_validate import empty_study
from trainer.headroom import Crossing
from trainer.judge import Outcome
from trainer.presets import PRESETS
from trainer.telemetry import read_run, step_series

BASIC_LR = 1e-5


def edge_at(edge: float, *, kind: str = "explosion") -> tuple[list[float], object]:
    """A synthetic recipe: every multiplier below ``edge`` trains (val mel rising towards the edge),
    the rest diverge; returns the multipliers asked for and the run function."""
    asked: list[float] = []

    def run(m: float) -> Rung:
        asked.append(m)
        if m >= edge:
            return Rung(
                multiplier=m,
                lr=BASIC_LR * m,
                outcome=Outcome.diverged_by(kind),
                steps_run=40,
                divergence_kind=kind,
                divergence_step=40,
                baseline_mel=4.0,
            )
        return Rung(
            multiplier=m,
            lr=BASIC_LR * m,
            outcome=Outcome("no-stop"),
            steps_run=300,
            val_mel=2.0 + m / edge,
            baseline_mel=4.0,
        )

    return asked, run


def test_the_ladder_doubles_until_the_known_edge_and_reports_it() -> None:
    asked, run = edge_at(100.0)
    rungs = climb(run, base_lr=BASIC_LR)
    assert asked == [1, 2, 4, 8, 16, 32, 64, 128]
    m = Margin(name="basic", trial=None, base_lr=BASIC_LR, steps=300, rungs=rungs)
    assert m.largest_survived.multiplier == 64 and m.first_diverged.multiplier == 128
    assert m.first_diverged.divergence_kind == "explosion" and m.edge_found
    assert m.summary().startswith("survived up to 64x (lr 0.00064); diverged at 128x (explosion, step 40)")
    assert m.provenance() == "survived up to 64x this lr in 300-step runs"


def test_the_ladder_halves_when_x1_already_diverges() -> None:
    asked, run = edge_at(0.3, kind="nonfinite")
    rungs = climb(run, base_lr=BASIC_LR)
    assert asked == [1, 0.5, 0.25]
    m = Margin(name="enhanced", trial=None, base_lr=BASIC_LR, steps=300, rungs=rungs)
    assert [r.multiplier for r in m.rungs] == [0.25, 0.5, 1]  # lowest first
    assert m.largest_survived.multiplier == 0.25 and m.first_diverged.multiplier == 0.5
    assert "survived up to 1/4x" in m.summary()
    everything, run_all = edge_at(0.0)
    m = Margin(name="x", trial=None, base_lr=BASIC_LR, steps=300, rungs=climb(run_all, base_lr=BASIC_LR))
    assert everything == [1, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625]  # down to 1/64, then it gives up
    assert m.largest_survived is None and m.provenance().startswith("diverged at this lr")


def test_the_ladder_stops_at_its_cap_and_at_lr_1() -> None:
    asked, run = edge_at(math.inf)
    m = Margin(
        name="basic",
        trial=None,
        base_lr=BASIC_LR,
        steps=300,
        rungs=climb(run, base_lr=BASIC_LR, max_multiplier=8),
    )
    assert asked == [1, 2, 4, 8] and not m.edge_found
    assert "no guard fired up to 8x" in m.summary() and "no higher multiplier diverged" in m.provenance()
    asked, run = edge_at(math.inf)
    climb(run, base_lr=0.3)  # 0.3 x 4 = 1.2: past TrainConfig's lr <= 1
    assert asked == [1, 2]


@pytest.mark.parametrize("edge", [0.004, 0.3, 1.5, 3.0, 100.0, 1000.0, 3000.0, 5000.0])
@pytest.mark.parametrize(
    ("start", "stride"), [(1.0, 8.0), (1.0, 2.0), (64.0, 2.0), (1024.0, 2.0), (0.25, 8.0)]
)
def test_the_bracket_gives_the_ladders_answer_from_any_start(
    edge: float, start: float, stride: float
) -> None:
    """Wherever the search starts and however far it strides, the rung that survived next to the one
    that diverged is the full ladder's (the ladder assumes what the bisection does: the edge is one lr)."""
    _, run = edge_at(edge)
    ladder = Margin(name="x", trial=None, base_lr=BASIC_LR, steps=300, rungs=climb(run, base_lr=BASIC_LR))
    asked, run = edge_at(edge)
    rungs = margin.bracket(run, base_lr=BASIC_LR, start=start, stride=stride)
    found = Margin(name="x", trial=None, base_lr=BASIC_LR, steps=300, rungs=rungs)
    assert len(asked) == len(set(asked)) == len(rungs)  # no rung runs twice
    assert [r.multiplier for r in rungs] == sorted(asked)
    for m in (ladder, found):
        assert (m.largest_survived is None) == (ladder.largest_survived is None)
    if ladder.largest_survived is not None and ladder.first_diverged is not None:
        assert found.largest_survived.multiplier == ladder.largest_survived.multiplier
        assert found.first_diverged.multiplier == ladder.first_diverged.multiplier
    assert found.edge_found == ladder.edge_found


def test_started_next_to_the_edge_two_rungs_answer_where_the_ladder_ran_twelve() -> None:
    asked, run = edge_at(1500.0)  # basic's edge in the quick study: survived 1024x, diverged 2048x
    climb(run, base_lr=BASIC_LR)
    assert len(asked) == 12
    asked, run = edge_at(1500.0)
    rungs = margin.bracket(run, base_lr=BASIC_LR, start=1024.0)
    assert asked == [1024, 2048] and [r.multiplier for r in rungs] == [1024, 2048]
    asked, run = edge_at(1500.0)
    margin.bracket(run, base_lr=BASIC_LR, stride=edge_hint.COARSE_STRIDE)  # no hint: x8 strides, then bisect
    assert asked == [1, 8, 64, 512, 4096, 1024, 2048]
    # the search near the edge has no x1 rung: no LR sensitivity (it is a mean over lrs from the recipe's own)
    found = Margin(name="basic", trial=None, base_lr=BASIC_LR, steps=390, rungs=rungs)
    assert found.sensitivity is None and "LR sensitivity -" in found.summary()


def test_the_edge_hint_reads_margins_then_trials_then_the_probe() -> None:
    trials = [
        (1e-4, Outcome("stable")),
        (2e-2, Outcome.diverged_by("collapse")),
        (5e-2, Outcome.diverged_by("explosion")),
        (1e-2, Outcome("unjudged")),  # neither side
    ]
    hint = edge_hint.from_trials(trials)
    assert hint.lr == 2e-2 and "the lowest lr that diverged: 0.02" in hint.source
    assert hint.start(BASIC_LR) == 1024.0  # 2e-2 / 1e-5 = 2000: the largest 2^k strictly below
    assert edge_hint.EdgeHint(lr=2.048e-2, source="").start(BASIC_LR) == 1024.0  # 2048x diverged: not it
    assert edge_hint.from_trials([(5e-2, Outcome("stable"))]) is None  # nothing diverged: no edge seen
    margins = {"basic": _margin("basic", 1000.0), "enhanced": _margin("enhanced", 200.0)}
    both = edge_hint.edge_hint(margins, trials, None)
    # basic first diverged at 1024x (lr 1.024e-2), enhanced at 256x (2.56e-3): the median of the two
    assert both.lr == pytest.approx((1.024e-2 + 2.56e-3) / 2)
    assert both.source == "the margins already measured (basic, enhanced)"
    probe = lr_probe.ProbeResult(
        steps=400, steps_run=345, start_lr=1e-7, end_lr=10.0, diverged=True, verdict="ceiling",
        divergence_step=345, divergence_lr=0.79, detail=None, min_loss_lr=9.4e-3, grad_clip=1.0,
        mel_weight=1.0, kl_weight=1.0,
    )  # fmt: skip
    assert edge_hint.edge_hint({}, [], probe).lr == pytest.approx(1.88e-2)
    assert edge_hint.edge_hint({}, [(1e-3, Outcome("stable"))], None) is None


def test_lr_sensitivity_is_wortsmans_mean_gap_to_the_best_rung() -> None:
    _, run = edge_at(4.0)
    rungs = climb(run, base_lr=BASIC_LR)  # x1: 2.25, x2: 2.5, x4 diverged (counts as the baseline 4.0)
    assert [r.val_mel for r in rungs] == [2.25, 2.5, None]
    assert lr_sensitivity(rungs) == pytest.approx(((2.25 - 2.25) + (2.5 - 2.25) + (4.0 - 2.25)) / 3)
    worse = [Rung(multiplier=1, lr=1, outcome=Outcome("stable"), steps_run=9, val_mel=5.0, baseline_mel=4.0)]
    assert lr_sensitivity(worse) == 0.0  # min(L, L0) - best: a rung worse than untrained counts as untrained
    assert (
        lr_sensitivity([Rung(multiplier=1, lr=1, outcome=Outcome("stable"), steps_run=9, val_mel=2.0)])
        is None
    )


def test_the_record_round_trips_through_the_study(tmp_path: Path) -> None:
    _, run = edge_at(3.0)
    rungs = list(climb(run, base_lr=BASIC_LR))
    rungs[0] = dataclasses.replace(rungs[0], peaks={"attn_logit_max": 130.0, "activation_max": math.nan})
    m = margin.summarize("best", rungs, trial=16, base_lr=BASIC_LR, steps=390)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    margin.store(study, m)
    raw = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}").user_attrs[
        "margin:best"
    ]
    json.dumps(raw, allow_nan=False)  # plain JSON: a NaN peak is stored as null
    assert raw["largest_survived"] == 2 and raw["first_diverged"] == 4 and raw["trial"] == 16
    back = margin.stored(optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}"))["best"]
    assert back.rungs[0].peaks["attn_logit_max"] == 130.0 and math.isnan(
        back.rungs[0].peaks["activation_max"]
    )
    assert back.rungs[0].headroom["attn_logit_max"] == pytest.approx(math.log2(65504 / 130))
    assert back.summary() == m.summary() and back.sensitivity == pytest.approx(m.sensitivity)
    assert [r.multiplier for r in back.rungs] == [1, 2, 4]


def _curve(name: str, peak: float, crossing: Crossing | None = None) -> HeadroomCurve:
    peaks = {"attn_logit_max": (peak / 2, peak), "activation_max": (1.0, 2.0)}
    return HeadroomCurve(
        name=name, source="trial 0", steps=(1, 2), peaks=peaks, horizon=300, crossing=crossing
    )


def _margin(name: str, edge: float) -> Margin:
    _, run = edge_at(edge)
    return Margin(name=name, trial=None, base_lr=BASIC_LR, steps=390, rungs=climb(run, base_lr=BASIC_LR))


def test_the_seeds_question_is_answered_from_the_measurements() -> None:
    trials = {
        "basic": TrialRecord(number=0, verdict=Outcome("unaligned"), state=optuna.trial.TrialState.COMPLETE),
        "enhanced": TrialRecord(number=1, verdict=Outcome("no-stop"), state=optuna.trial.TrialState.COMPLETE),
    }
    margins = {"basic": _margin("basic", 1000.0), "enhanced": _margin("enhanced", 200.0)}
    roomy = {"basic": _curve("basic", 256.0), "enhanced": _curve("enhanced", 512.0)}
    lines = seed_answer.lines(seed_answer.facts(trials, margins, roomy))
    assert lines[0].startswith("basic: no guard fired in the study (trial 0: unaligned); survived up to 512x")
    assert "diverged at 1024x (explosion at step 40)" in lines[0] and "fp16 headroom" in lines[0]
    assert lines[1].startswith("enhanced: ") and "survived up to 128x" in lines[1]
    assert lines[2].startswith("Enhanced, the recipe that went NaN for the seed, trains here")
    assert "the lr was not what diverged" in lines[2] and "at least 7.0 doublings" in lines[2]
    # fp16 short of headroom: the sentence says fp16 is the likelier cause
    tight = {**roomy, "enhanced": _curve("enhanced", 30000.0, Crossing("attn_logit_max", 250, True, 390))}
    said = seed_answer.implication(seed_answer.facts(trials, margins, tight))
    assert "enhanced runs short of fp16 headroom" in said
    # enhanced near its edge, basic far: the fix moved it away from the edge
    near = {**margins, "enhanced": _margin("enhanced", 2.0)}
    assert "lowering the lr moved the recipe away from the edge" in seed_answer.implication(
        seed_answer.facts(trials, near, roomy)
    )
    diverged = {
        **trials,
        "enhanced": TrialRecord(
            number=1, divergence=Divergence("nonfinite", 12), state=optuna.trial.TrialState.PRUNED
        ),
    }
    found = seed_answer.facts(diverged, margins, roomy)
    assert "diverged in the study (nonfinite at step 12, trial 1)" in found[1].line()
    assert "--margin basic enhanced" in seed_answer.implication(seed_answer.facts(trials, {}, roomy))


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--margin", "basic", "nope"], ["--margin 'nope'", "basic", "enhanced", "best"]),
        (["--margin", "basic", "--steps", "0"], ["--steps"]),
        (["--margin", "basic", "--margin-max", "0.5"], ["--margin-max", ">= 1"]),
        (["--margin-max", "8"], ["--margin-max", "--margin NAME"]),
        (["--margin", "best"], ["no feasible trial"]),
        (["--margin", "basic", "--export-preset", "x.json"], ["--margin", "--export-preset"]),
    ],
)
def test_bad_margin_flags_say_what_and_exit_2(
    flags: list[str], words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    study = empty_study(tmp_path)
    assert run_cli(search.main, ["--study", STUDY, "--runs-dir", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err
    assert study.user_attrs == {} and not (tmp_path / STUDY / "telemetry.db").exists()


def test_margin_runs_real_rungs_and_stores_them(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    cache_env: Path,  # noqa: F811
    capsys: pytest.CaptureFixture,
) -> None:
    """basic and enhanced on the smoke study, 6-step rungs capped at x2, in two worker processes: four
    real runs, their telemetry (fp16 peaks included) and the typed records in the study; the table and
    the seed's answer on stdout."""
    paths = short_corpus(tmp_path_factory.getbasetemp())
    empty_study(tmp_path)
    argv = ["--study", STUDY, "--runs-dir", str(tmp_path), *data_flags(paths)]
    flags = ["--margin", "basic", "enhanced", "--steps", "6", "--margin-max", "2", "--workers", "2"]
    assert run_cli(search.main, [*argv, *flags]) == 0
    out = capsys.readouterr().out
    assert "margin" in out and "basic: not in the study; survived up to 2x its lr" in out  # the seed's answer
    study = optuna.load_study(study_name=STUDY, storage=default_storage_url(STUDY, tmp_path))
    found = margin.stored(study)
    assert list(found) == ["basic", "enhanced"]
    tele = tmp_path / STUDY / "telemetry.db"
    for m, lr in ((found["basic"], BASIC_LR), (found["enhanced"], 5e-5)):
        assert m.steps == 6 and [r.multiplier for r in m.rungs] == [1, 2] and m.base_lr == lr
        assert [r.lr for r in m.rungs] == [lr, 2 * lr]
        for r in m.rungs:
            assert (
                r.outcome.survived
                and r.steps_run == 6
                and r.baseline_mel is not None
                and r.val_mel is not None
            )
            record = read_run(tele, r.run_id)
            assert (
                record is not None and record["config"]["lr"] == r.lr and record["config"]["max_steps"] == 6
            )
            peaks = step_series(tele, r.run_id, "attn_logit_max")
            assert len(peaks) == 6 and r.peaks["attn_logit_max"] == peaks[-1][1]
        assert not m.edge_found and "no guard fired up to 2x" in m.summary()
        assert m.sensitivity is not None and m.sensitivity >= 0.0


def test_the_exported_preset_carries_the_best_trials_margin(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    (runs / QUICK).mkdir(parents=True)
    study = optuna.create_study(study_name=QUICK, storage=f"sqlite:///{runs / QUICK / 'study.db'}")
    good = {**preset_params(dict(PRESETS["basic"]), get_study(QUICK).space), "lr": 2e-3, "warmup_steps": 100}
    record(study, good, 1.5, {C_DIVERGED: -1.0, C_UNALIGNED: -0.1, C_NO_STOP: 0.0})
    out = tmp_path / "best.json"
    export = ["--study", QUICK, "--runs-dir", str(runs), "--export-preset", str(out)]
    assert run_cli(search.main, export) == 0
    assert "margin" not in json.loads(out.read_text())["provenance"]  # not measured: not claimed
    _, run = edge_at(16.0)
    margin.store(study, margin.summarize("best", climb(run, base_lr=2e-3), trial=7, base_lr=2e-3, steps=400))
    assert run_cli(search.main, export) == 0
    assert "margin" not in json.loads(out.read_text())["provenance"]  # another trial's margin: not this one's
    margin.store(study, margin.summarize("best", climb(run, base_lr=2e-3), trial=0, base_lr=2e-3, steps=400))
    assert run_cli(search.main, export) == 0
    assert json.loads(out.read_text())["provenance"]["margin"] == "survived up to 8x this lr in 400-step runs"
