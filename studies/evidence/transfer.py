"""Does the short trial predict the long run? K trials of a study, re-run long, against their short ranking.

A study ranks its trials after a few hundred steps; short trials favour fast learners, and what the
user wants is a recipe that still trains, and speaks, thousands of steps later. So K finished trials
spread over the study's ranking (always ``basic``, ``enhanced`` and the best; some diverged ones; the
rest from the top, middle and bottom) run again for a long horizon, and the answer is three numbers:
Spearman's rank correlation between the short ranking and the long run's decode ratio, how many
trials that diverged short diverge long (and where), and how many "stable" short trials speak long.
The result is the study user attribute ``transfer``; each long run is in the telemetry.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import optuna
from rich.console import Console

from studies.evidence.pool import WorkerSpec, run_jobs
from studies.evidence.validate import judge, run_one
from studies.objective import TrialSetup
from studies.record import STABLE, TrialRecord, best_feasible, load_records, preset_trials
from studies.registry import StudyDef, guard_config
from trainer.evaluate import EvalMetrics
from tts_model.errors import UserError

ATTR = "transfer"
MIN_TRIALS = 3
HORIZON_FACTOR = 10  # a long run is at least 10x the trial horizon


def default_steps(study_def: StudyDef) -> int:
    return HORIZON_FACTOR * study_def.horizon


def check(study_def: StudyDef, k: int, steps: int | None) -> None:
    """Fail before anything runs: too few trials asked for, or runs no longer than a trial."""
    if k < MIN_TRIALS:
        raise UserError(f"--transfer-check {k}: needs at least {MIN_TRIALS} trials to rank")
    least = default_steps(study_def)
    if steps is not None and steps < least:
        raise UserError(
            f"--steps {steps}: a transfer check's long run is at least {HORIZON_FACTOR}x the trial horizon "
            f"({least} steps for {study_def.name})"
        )


def ranking(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The study's own order, best first: feasible by val mel, then the rest by their summed violation
    (as TPE ranks infeasible trials), diverged ones last."""

    def key(r: TrialRecord) -> tuple[int, float, float]:
        violation = sum(max(v, 0.0) for v in r.constraints.values())
        value = r.last_value if r.last_value is not None and math.isfinite(r.last_value) else math.inf
        group = 0 if r.feasible else (2 if r.diverged else 1)
        return (group, violation if group else value, value)

    return sorted((r for r in records if r.finished), key=key)


def pick(
    ranked: Sequence[TrialRecord], k: int, presets: Sequence[str] = ("basic", "enhanced")
) -> list[TrialRecord]:
    """K trials spread over the ranking: the presets and the best, up to a third diverged, then evenly
    spaced ranks of the rest (top, middle, bottom)."""
    chosen: dict[int, TrialRecord] = {}
    for r in [*preset_trials(ranked, presets).values(), best_feasible(ranked)]:
        if r is not None and len(chosen) < k:
            chosen.setdefault(r.number, r)
    diverged = [r for r in ranked if r.diverged and r.number not in chosen]
    for r in diverged[: max(1, (k - len(chosen)) // 3)]:
        if len(chosen) < k:
            chosen[r.number] = r
    rest = [r for r in ranked if r.number not in chosen]
    room = k - len(chosen)
    if room > 0 and rest:
        for i in sorted({round(x) for x in np.linspace(0, len(rest) - 1, min(room, len(rest)))}):
            chosen[rest[i].number] = rest[i]
    order = {r.number: i for i, r in enumerate(ranked)}
    return sorted(chosen.values(), key=lambda r: order[r.number])


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rho with average ranks for ties (inf ranks last); None with < 3 pairs or no spread."""
    if len(xs) != len(ys) or len(xs) < MIN_TRIALS:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    order = np.argsort(arr, kind="stable")
    ranks = np.empty(len(arr))
    i = 0
    while i < len(arr):
        j = i
        while j + 1 < len(arr) and arr[order[j + 1]] == arr[order[i]]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def decode_ratio(final: EvalMetrics | None) -> float | None:
    """The long run's median decode ratio at its last eval (0 = another rendering of the same words,
    1 = no closer than a constant frame); None where no decode ran."""
    decode = final.decode if final is not None else None
    if decode is None or not math.isfinite(decode.ratio):
        return None
    return float(decode.ratio)


def speaks(final: EvalMetrics | None) -> bool:
    decode = final.decode if final is not None else None
    return decode is not None and decode.speaks


def rho_all(runs: Sequence[dict]) -> float | None:
    """Short rank vs long decode ratio over every placed run: a long run that diverged ranks worst, one
    without a decode cannot be placed. Diverged runs tie last, so this mixes "does the ranking predict
    divergence" with "does it predict speech"; `rho_finished` asks the second question alone."""
    placed = [r for r in runs if r["long_diverged"] or r["decode_ratio"] is not None]
    return spearman(
        [r["short_rank"] for r in placed],
        [math.inf if r["long_diverged"] else r["decode_ratio"] for r in placed],
    )


def rho_finished(runs: Sequence[dict]) -> float | None:
    """Short rank vs long decode ratio over the long runs that finished without diverging."""
    done = [r for r in runs if not r["long_diverged"] and r["decode_ratio"] is not None]
    return spearman([r["short_rank"] for r in done], [r["decode_ratio"] for r in done])


def rho_val_mel(runs: Sequence[dict]) -> float | None:
    """Short rank vs the long run's teacher-forced val mel (the study's own objective), over the long
    runs that did not diverge: does the ranking carry over in what it measured, if not in speech?"""
    done = [r for r in runs if not r["long_diverged"] and r.get("val_mel") is not None]
    return spearman([r["short_rank"] for r in done], [r["val_mel"] for r in done])


def summarize(runs: list[dict], *, steps: int) -> dict:
    """The three answers over the long runs, and the runs themselves."""
    rho = rho_all(runs)
    short_div = [r for r in runs if r["short_diverged"]]
    stable_short = [r for r in runs if r["short_outcome"] == STABLE]
    return {
        "steps": steps,
        "trials": [r["number"] for r in runs],
        "spearman_rank_vs_decode_ratio": rho,
        "spearman_finished_only": rho_finished(runs),
        "spearman_rank_vs_long_val_mel": rho_val_mel(runs),
        "diverged_short": len(short_div),
        "diverged_short_and_long": sum(r["long_diverged"] for r in short_div),
        "long_divergence_steps": {
            str(r["number"]): r["long_divergence_step"] for r in runs if r["long_diverged"]
        },
        "stable_short": len(stable_short),
        "stable_short_speak_long": sum(r["speaks"] for r in stable_short),
        "runs": runs,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True, slots=True)
class LongRun:
    """One trial's long re-run, as a worker process receives it."""

    number: int
    params: dict
    steps: int
    run_id: str


def long_run(setup: TrialSetup, job: LongRun) -> dict:
    """Train one trial's params for the long horizon; what the summary needs of it (plain data: it
    crosses a process boundary)."""
    t0 = time.perf_counter()
    result = run_one(setup, dict(job.params), seed=setup.seed, steps=job.steps, run_id=job.run_id)
    row = judge(result, guard_config(setup.study))
    final = result.final_eval
    return {
        "long_verdict": row["verdict"],
        "long_diverged": result.verdict is not None,
        "long_divergence_step": row["divergence_step"],
        "val_mel": row["val_mel"],
        "decode_ratio": decode_ratio(final),
        "speaks": speaks(final) and result.verdict is None,
        "steps_run": result.steps,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def run_transfer(
    study: optuna.Study,
    setup: TrialSetup,
    *,
    k: int,
    steps: int | None,
    console: Console,
    workers: int = 1,
    spec: WorkerSpec | None = None,
) -> dict:
    """Run the check (``workers`` long runs at a time), record it in the study, and return it."""
    study_def = setup.study
    steps = steps or default_steps(study_def)
    ranked = ranking(load_records(study))
    if len(ranked) < MIN_TRIALS:
        raise UserError(
            f"--transfer-check: study {study.study_name!r} has {len(ranked)} finished trials; "
            f"needs at least {MIN_TRIALS} (run more trials first)"
        )
    chosen = pick(ranked, k, study_def.presets)
    position = {r.number: i + 1 for i, r in enumerate(ranked)}
    at_once = f", {workers} at a time" if workers > 1 else ""
    console.print(f"transfer check: {len(chosen)} trials of {len(ranked)}, {steps} steps each{at_once}")
    jobs = [
        LongRun(r.number, dict(r.params), steps, f"{study_def.name}/transfer-trial-{r.number}")
        for r in chosen
    ]
    done: dict[int, dict] = {}
    for i, long in run_jobs(long_run, jobs, setup=setup, workers=workers, spec=spec):
        r = chosen[i]
        done[i] = {
            "number": r.number,
            "preset": r.preset,
            "short_outcome": r.outcome,
            "short_rank": position[r.number],
            "short_diverged": r.diverged,
            **long,
        }
        ratio = long["decode_ratio"]
        console.print(
            f"transfer trial {r.number} (rank {position[r.number]}, short {r.outcome}): long {long['long_verdict']}, "
            f"decode ratio {'-' if ratio is None else f'{ratio:.2f}'}"
            f"{', speaks' if long['speaks'] else ''} ({long['seconds']:.0f} s; {len(done)} of {len(jobs)} done)"
        )
    runs = [done[i] for i in range(len(jobs))]
    summary = summarize(runs, steps=steps)
    study.set_user_attr(ATTR, summary)
    return summary


def stored(study: optuna.Study) -> dict | None:
    found = study.user_attrs.get(ATTR)
    return found if isinstance(found, dict) else None


def _signed(rho: float | None) -> str:
    return "not computable" if rho is None else f"{rho:+.2f}"


def lines(summary: dict) -> list[str]:
    """The answer in three sentences, for the terminal and the report alike."""
    rho = summary["spearman_rank_vs_decode_ratio"]
    finished = rho_finished(summary["runs"])  # from the runs: checks stored before it was kept say it too
    n_finished = sum(not r["long_diverged"] and r["decode_ratio"] is not None for r in summary["runs"])
    return [
        f"Spearman rank correlation, short ranking vs long-run decode ratio: "
        f"{'not computable' if rho is None else f'{rho:+.2f}'} over {len(summary['runs'])} trials of "
        f"{summary['steps']} steps, diverged long runs ranked last (positive: the short ranking predicts the "
        f"long one); over the {n_finished} that did not diverge long: "
        f"{'not computable' if finished is None else f'{finished:+.2f}'}; short ranking vs long-run val mel "
        f"(teacher forced) over those: {_signed(rho_val_mel(summary['runs']))}",
        f"diverged short and long: {summary['diverged_short_and_long']} of {summary['diverged_short']} "
        f"that diverged short",
        f"stable short trials that speak long: {summary['stable_short_speak_long']} of {summary['stable_short']}",
    ]
