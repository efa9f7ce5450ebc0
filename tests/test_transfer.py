"""The transfer check's pure parts: the study's ranking, which trials it picks, Spearman, the counts;
and its bad input. The end-to-end run (real long runs, the report's section) is in test_report.py."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import search
from common.cli import run_cli
from studies import ranking
from studies.evidence.transfer import (
    LongOutcome,
    TransferCheck,
    TransferRun,
    lines,
    pick,
    rho_all,
    rho_finished,
    rho_val_mel,
    spearman,
    summarize,
)
from studies.record import Divergence, TrialRecord
from studies.record_keys import C_DIVERGED, C_NO_STOP, C_UNALIGNED
from trainer.judge import Outcome

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
