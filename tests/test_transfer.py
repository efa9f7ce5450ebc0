"""The transfer check's pure parts: the study's ranking, which trials it picks, Spearman, the counts,
where each long run comes from; its bad input; and a real check on a study with a speech rung that
reuses a long rung and resumes a screen. The end-to-end run from scratch in worker processes (the
report's section) is in test_report.py."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from rich.console import Console

import search
from common.cli import run_cli
from studies import ranking
from studies.evidence import transfer
from studies.evidence.transfer import (
    LongOutcome,
    Source,
    TransferCheck,
    TransferRun,
    rho_all,
    rho_finished,
    rho_val_mel,
    spearman,
    summarize,
)
from studies.evidence.transfer_plan import pick, short_ranked, source
from studies.evidence.transfer_text import lines
from studies.execution.long_runs import LongRun, run_transfer, steps_to_train
from studies.execution.objective import make_objective
from studies.execution.runner import run_trial
from studies.execution.runs import RunSetup
from studies.execution.storage import default_storage_url
from studies.paths import StudyPaths, transfer_run
from studies.presets_seed import enqueue_presets
from studies.record import DecodeFacts, Divergence, TrialRecord, load_records
from studies.record_keys import C_DIVERGED, C_NO_STOP, C_UNALIGNED, CONTINUES
from studies.registry import ScoringSpec, SpeechRung, get_study
from studies.rung_facts import RungFacts
from tests.corpus_fixture import cache_env, corpus_paths, subset, train_data  # noqa: F401  (fixtures)
from trainer.checkpoints import checkpoint_name
from trainer.data import TrainData
from trainer.judge import Outcome
from trainer.telemetry import eval_series, read_run, step_series

FEASIBLE = {C_DIVERGED: -1.0, C_UNALIGNED: -0.1, C_NO_STOP: -0.2}


def rec(
    n: int, *, value: float | None, constraints: dict, preset: str | None = None, verdict: Outcome
) -> TrialRecord:
    return TrialRecord(
        number=n,
        state=TrialState.COMPLETE if value is not None else TrialState.PRUNED,
        value=value,
        constraints=constraints,
        preset=preset,
        verdict=verdict,
        divergence=Divergence(kind=verdict.kind, step=40) if verdict.diverged else None,
    )


DIVERGED = {C_DIVERGED: 10.0, C_UNALIGNED: 0.0, C_NO_STOP: 0.0}


def study_records() -> list[TrialRecord]:
    return [
        rec(
            0,
            value=3.3,
            constraints={**FEASIBLE, C_UNALIGNED: 0.05},
            preset="basic",
            verdict=Outcome.UNALIGNED,
        ),
        rec(
            1, value=2.9, constraints={**FEASIBLE, C_NO_STOP: 0.8}, preset="enhanced", verdict=Outcome.NO_STOP
        ),
        rec(2, value=None, constraints=DIVERGED, verdict=Outcome.EXPLOSION),
        rec(3, value=1.7, constraints=FEASIBLE, verdict=Outcome.STABLE),
        rec(4, value=2.0, constraints=FEASIBLE, verdict=Outcome.STABLE),
        rec(5, value=2.5, constraints={**FEASIBLE, C_NO_STOP: 0.3}, verdict=Outcome.NO_STOP),
        rec(6, value=None, constraints=DIVERGED, verdict=Outcome.SPIKE),
        rec(7, value=2.2, constraints={**FEASIBLE, C_NO_STOP: 1.1}, verdict=Outcome.NO_STOP),
    ]


def test_the_transfer_check_ranks_by_the_studys_one_ranking() -> None:
    order = [r.number for r in ranking.ranked(study_records())]
    assert order[:2] == [3, 4]  # feasible, by val mel
    assert order[2:5] == [7, 5, 1]  # aligned (no-stop), by val mel
    assert order[5] == 0  # unaligned
    assert set(order[-2:]) == {2, 6}  # diverged last
    assert ranking.best(study_records()).number == order[0]


def test_pick_keeps_presets_best_and_a_diverged_one_and_spreads_the_rest() -> None:
    ranked = ranking.ranked(study_records())
    chosen = [r.number for r in pick(ranked, 5)]
    assert {0, 1, 3} <= set(chosen) and len(chosen) == 5
    assert any(n in (2, 6) for n in chosen)
    assert [r.number for r in pick(ranked, 20)] == [r.number for r in ranked]  # all when K >= n


def test_spearman() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [0.5, math.inf, 0.7]) == pytest.approx(0.5)  # inf ranks last
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 2, 3], [1, 1, 1]) is None


def long(word: str, ratio: float | None, *, speaks: bool = False, step: int | None = None) -> LongOutcome:
    verdict = Outcome(word)
    return LongOutcome(
        verdict=verdict,
        diverged=verdict.diverged,
        divergence_step=step,
        val_mel=None if verdict.diverged else 2.0,
        decode_ratio=ratio,
        speaks=speaks,
        steps_run=300,
        seconds=1.0,
    )


def trun(number: int, rank: int, short: str, lo: LongOutcome) -> TransferRun:
    return TransferRun(
        number=number,
        preset=None,
        short_outcome=Outcome(short),
        short_rank=rank,
        short_diverged=Outcome(short).diverged,
        long=lo,
    )


def test_summary_counts() -> None:
    runs = [
        trun(3, 1, "stable", long("stable", 0.4, speaks=True)),
        trun(0, 2, "unaligned", long("no-stop", 0.9)),
        trun(2, 3, "diverged:explosion", long("diverged:explosion", None, step=41)),
    ]
    s = summarize(runs, steps=3000)
    assert s.rho_all == pytest.approx(1.0)
    assert s.rho_finished is None  # two finished long runs: too few to rank
    assert "over the 2 that did not diverge long: not computable" in lines(s)[0]
    assert (s.diverged_short, s.diverged_short_and_long, s.long_divergence_steps) == (1, 1, {"2": 41})
    assert (s.stable_short, s.stable_short_speak_long) == (1, 1)
    stored = s.to_attr()  # the study attribute keeps the answers and the runs, and reads back
    assert stored["spearman_rank_vs_decode_ratio"] == pytest.approx(1.0) and stored["trials"] == [3, 0, 2]
    assert TransferCheck.from_attr(stored) == s


def test_finished_only_rank_correlation_leaves_the_diverged_out() -> None:
    # The quick study's transfer check (2026-12-01): the short ranking put the diverged runs last, as
    # they were long, but among the 5 long runs that finished, its best had the worst decode ratio.
    # Its teacher-forced val mel, the study's objective, did carry over.
    def run(rank: int, ratio: float | None, mel: float | None) -> TransferRun:
        lo = long("diverged:explosion" if ratio is None else "no-stop", ratio)
        return trun(rank, rank, "stable", dataclasses.replace(lo, val_mel=mel))

    runs = [run(1, 1.17, 1.037), run(2, 0.808, 0.955), run(4, 0.847, 2.047), run(8, 0.916, 1.304)]
    runs += [run(13, None, None), run(14, 0.722, 2.513), run(19, None, None), run(20, None, None)]
    assert rho_all(runs) == pytest.approx(0.44, abs=0.01)
    assert rho_finished(runs) == pytest.approx(-0.6)
    assert rho_val_mel(runs) == pytest.approx(0.8)


def _study(tmp_path: Path, n: int) -> Path:
    runs = tmp_path / "runs"
    (runs / "stability-smoke").mkdir(parents=True)
    study = optuna.create_study(
        study_name="stability-smoke", storage=f"sqlite:///{runs / 'stability-smoke' / 'study.db'}"
    )
    for i in range(n):
        study.add_trial(optuna.trial.create_trial(value=2.0 + i, constraints=FEASIBLE))
    return runs


@pytest.mark.parametrize(
    ("trials", "flags", "words"),
    [
        (None, ["--transfer-check", "8"], "run the search first"),
        (2, ["--transfer-check", "8"], "fewer than 3 finished trials"),
        (5, ["--transfer-check", "2"], "at least 3"),
        (5, ["--transfer-check", "8", "--steps", "100"], "10x the trial horizon"),
    ],
)
def test_bad_transfer_checks_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], trials: int | None, flags: list[str], words: str
) -> None:
    runs = _study(tmp_path, trials) if trials is not None else tmp_path / "runs"
    code = run_cli(
        search.main, ["--study", "stability-smoke", "--runs-dir", str(runs), "--device", "cpu", *flags]
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0], lines


# where each long run comes from (a study with a speech rung)

END = 2490  # the long rung's end of a trial with warmup 90: 90 + 2,400


def screen_facts(val: float = 1.9, verdict: Outcome = Outcome.STABLE) -> RungFacts:
    return RungFacts(step=390, val_mel=val, verdict=verdict, decode_ratio=0.9)


def long_rung_record(n: int, *, diverged: bool = False) -> TrialRecord:
    """A screen promoted to the long rung, folded with the continuation that ran it to its end."""
    return TrialRecord(
        number=n,
        state=TrialState.PRUNED if diverged else TrialState.COMPLETE,
        value=None if diverged else 1.1,
        constraints=DIVERGED if diverged else FEASIBLE,
        verdict=Outcome.EXPLOSION if diverged else Outcome.STABLE,
        divergence=Divergence(kind="explosion", step=1200) if diverged else None,
        decode=None
        if diverged
        else DecodeFacts(stop_rate=1.0, length_ratio=1.1, dtw=3.0, ratio=0.4, speaks=True),
        max_steps=END,
        steps_run=1200 if diverged else END,
        screen=screen_facts(),
        promoted=True,
        rung=1,
        resumed_from=390,
        continued_as=10 + n,
    )


def screen_record(n: int, val: float = 2.0) -> TrialRecord:
    """A screen that ended at its screen's step and was not promoted."""
    return TrialRecord(
        number=n,
        state=TrialState.COMPLETE,
        value=val,
        constraints=FEASIBLE,
        verdict=Outcome.STABLE,
        max_steps=390,
        steps_run=390,
        screen=screen_facts(val),
        promoted=False,
        rung=0,
    )


def test_each_long_run_comes_from_its_long_rung_its_screen_or_scratch() -> None:
    done, fell = long_rung_record(0), long_rung_record(1, diverged=True)
    screened = screen_record(2)
    pruned = rec(3, value=None, constraints=FEASIBLE, verdict=Outcome.PRUNED)  # before its screen's end
    diverged = rec(4, value=None, constraints=DIVERGED, verdict=Outcome.SPIKE)
    assert source(done, rung_end=END, saved=False) is Source.RUNG  # nothing to train
    assert source(fell, rung_end=END, saved=False) is Source.RUNG  # a long rung that diverged is a result
    assert source(screened, rung_end=END, saved=True) is Source.RESUMED
    assert source(screened, rung_end=END, saved=False) is Source.SCRATCH  # its state has gone
    for r in (pruned, diverged):
        assert source(r, rung_end=END, saved=True) is Source.SCRATCH  # no screen, no state
    # No speech rung, or --steps N: every long run from scratch, as before.
    for r in (done, screened, pruned):
        assert source(r, rung_end=None, saved=True) is Source.SCRATCH
    # A long rung of another length (the rung changed since) is not this check's long run.
    assert source(done, rung_end=END + 100, saved=False) is Source.SCRATCH


def test_a_long_rung_is_read_as_the_long_run_and_counts_its_steps_as_saved() -> None:
    lo = LongOutcome.of_rung(long_rung_record(0))
    assert (lo.verdict, lo.diverged, lo.val_mel, lo.decode_ratio, lo.speaks) == (
        Outcome.STABLE,
        False,
        1.1,
        0.4,
        True,
    )
    assert (lo.steps_run, lo.seconds, lo.steps_saved, lo.where) == (END, 0.0, END, "its long rung")
    fell = LongOutcome.of_rung(long_rung_record(1, diverged=True))
    assert fell.diverged and fell.divergence_step == 1200 and fell.val_mel is None and not fell.speaks
    resumed = dataclasses.replace(long("stable", 0.6), source=Source.RESUMED, resumed_from=390, steps_run=END)
    assert resumed.steps_saved == 390 and resumed.where == "resumed from its screen at step 390"
    scratch = long("stable", 0.6)
    assert scratch.steps_saved == 0 and scratch.where == "from scratch"
    check = summarize(
        [trun(0, 1, "stable", lo), trun(2, 2, "stable", resumed), trun(4, 3, "diverged:spike", scratch)],
        steps=2400,
        to_rung=True,
    )
    assert (check.steps_saved, check.steps_trained) == (END + 390, END - 390 + 300)
    assert "of the speech rung (2400 steps past each trial's warmup)" in lines(check)[0]
    assert lines(check)[-1] == (
        "long runs: trial 0 its long rung, trial 2 resumed from its screen at step 390, trial 4 from "
        f"scratch; {END + 390:,} of their {2 * END + 300:,} steps came from the study "
        f"({END - 390 + 300:,} trained by this check)"
    )
    stored = check.to_attr()
    assert [r["long_run_from"] for r in stored["runs"]] == ["its long rung", resumed.where, "from scratch"]
    assert TransferCheck.from_attr(stored) == check
    # A check stored before long runs had a source: every one of them ran from scratch.
    old = {k: v for k, v in stored["runs"][0].items() if k not in ("long_source", "resumed_from")}
    assert TransferRun.from_attr(old).long.source is Source.SCRATCH


def test_the_longest_long_runs_go_first() -> None:
    # With --workers, the runs are started longest first: a resumed screen trains past its screen only,
    # a trial that diverged short is expected to stop about where it did (step 40 here).
    scratch = LongRun(3, {}, END, "t3")
    resumed = LongRun(2, {}, END, "t2", screen_state=Path("step_00000390.pt"), to_rung=True)
    assert steps_to_train(screen_record(3), scratch) == END
    assert steps_to_train(screen_record(2), resumed) == END - 390
    diverged = rec(4, value=None, constraints=DIVERGED, verdict=Outcome.SPIKE)
    assert steps_to_train(diverged, LongRun(4, {}, END, "t4")) == 40


def test_the_short_ranking_is_each_trial_at_its_screens_end() -> None:
    # Trial 0's long rung speaks, so the study ranks it first; at its screen's end (val mel 1.9) it
    # stood behind trial 2 (1.5). The check compares the long run with the short ranking, not itself.
    promoted, better_screen = long_rung_record(0), screen_record(2, val=1.5)
    diverged = rec(4, value=None, constraints=DIVERGED, verdict=Outcome.SPIKE)
    records = [promoted, better_screen, diverged]
    assert [r.number for r in ranking.ranked(records)] == [0, 2, 4]
    assert [r.number for r in short_ranked(records)] == [2, 0, 4]
    assert transfer.short_outcome(promoted) is Outcome.STABLE and not transfer.short_diverged(promoted)
    # Without screens (a study with no speech rung) it is the study's one ranking.
    assert short_ranked(study_records()) == ranking.ranked(study_records())


def test_a_check_on_a_rung_study_reuses_a_long_rung_resumes_a_screen_and_runs_the_rest(
    tmp_path: Path,
    train_data: TrainData,  # noqa: F811
) -> None:
    """A smoke study with a speech rung 30 steps past the warmup: trial 0 (``basic``) a real screen that
    left its state, trial 1 a screen whose long rung is done (hand-made), trial 2 diverged before its
    screen's end. The check trains trial 1 not at all, trial 0 only past its screen (from a copy: its
    screen's state stays for a promotion) and trial 2 from scratch. Then trial 0 is promoted for real:
    its continuation resumes the same state and ends exactly where the check's long run did."""
    smoke = get_study("stability-smoke")
    study_def = dataclasses.replace(
        smoke,
        name="transfer-rung",
        presets=("basic",),
        speech_rung=SpeechRung(horizon=30, eta=2, min_peers=2, decode_sentences=2),
        scoring=ScoringSpec(decode_sentences=1, guard_overrides=smoke.scoring.guard_overrides),
    )
    runs = tmp_path / "runs"
    (runs / study_def.name).mkdir(parents=True)
    study = optuna.create_study(
        study_name=study_def.name, storage=default_storage_url(study_def.name, runs), direction="minimize"
    )
    paths = StudyPaths(runs, study_def.name)
    setup = RunSetup(study_def, subset(train_data, 8), torch.device("cpu"), paths, 0)
    objective = make_objective(setup)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        enqueue_presets(study, study_def.preset_values(), study_def.space)
        run_trial(study, objective, 1)  # trial 0: basic's screen, to warmup + 20 steps
        basic = dict(study.trials[0].params)
        warmup = int(basic["warmup_steps"])
        screen_end, rung_end = warmup + study_def.horizon, warmup + 30
        dists = study_def.space.distributions()
        done = dataclasses.replace(long_rung_record(1), max_steps=rung_end, steps_run=rung_end)
        fell = rec(2, value=None, constraints=DIVERGED, verdict=Outcome.EXPLOSION)
        for r, lr in ((done, 2e-5), (fell, 1e-2)):
            study.add_trial(
                optuna.trial.create_trial(
                    params={**basic, "lr": lr},
                    distributions=dists,
                    value=r.value,
                    state=r.state,
                    user_attrs=r.to_attrs(),
                    constraints=dict(r.constraints),
                )
            )
        state = paths.trial_dir(0) / "checkpoints" / checkpoint_name(screen_end)
        before = state.read_bytes()
        check = run_transfer(study, setup, k=3, steps=None, console=Console(quiet=True))
        by = {r.number: r.long for r in check.runs}
        assert check.to_rung and check.steps == 30 and set(by) == {0, 1, 2}
        assert [by[n].source for n in (0, 1, 2)] == [Source.RESUMED, Source.RUNG, Source.SCRATCH]
        # Its long rung: read, not trained.
        assert by[1] == LongOutcome.of_rung(load_records(study)[1])
        assert read_run(paths.telemetry, transfer_run(study_def.name, 1)) is None
        # Its screen resumed to the rung's end: only the steps past the screen trained, the state untouched.
        assert by[0].resumed_from == screen_end and by[0].steps_run == rung_end
        trained = [s for s, _ in step_series(paths.telemetry, transfer_run(study_def.name, 0), "loss")]
        assert trained == list(range(screen_end + 1, rung_end + 1))
        assert state.read_bytes() == before and not list(paths.dir.glob(".transfer-*"))
        # No state: from step 1.
        scratch = [s for s, _ in step_series(paths.telemetry, transfer_run(study_def.name, 2), "loss")]
        assert scratch[0] == 1 and by[2].resumed_from is None
        # Both judged at the rung's end as the rung judges: on its 2 sentences, not a screen's 1.
        for n in (0, 2):
            decoded = eval_series(paths.telemetry, transfer_run(study_def.name, n), "decode_sentences")
            assert decoded[-1] == (rung_end, 2.0), (n, decoded)
        assert check.steps_saved == screen_end + rung_end
        assert transfer.stored(study) == check

        # Trial 0 promoted: its continuation runs the long rung from the same state, to the same end.
        study.enqueue_trial(basic, user_attrs={CONTINUES: 0})
        run_trial(study, objective, 1, trial=study.ask())
    finally:
        torch.set_num_threads(threads)
    promoted = load_records(study)[0]
    assert promoted.promoted and promoted.rung == 1 and promoted.resumed_from == screen_end
    rung = LongOutcome.of_rung(promoted)
    for name in ("verdict", "diverged", "divergence_step", "val_mel", "speaks", "steps_run"):
        assert getattr(rung, name) == getattr(by[0], name), name
    assert rung.decode_ratio == pytest.approx(by[0].decode_ratio, abs=1e-3)  # (capped at 1 this early)
