"""`--margin NAME...`: each recipe's lr edge, one recipe per worker process, stored in the study.

Every recipe starts next to the edge the study's runs suggest (``edge_hint``), the same guess for all,
so with ``--workers 2`` two recipes search at once (``pool.run_jobs``). A recipe's rungs run one after
another (each rung decides the next: ``margin.bracket``).
Every rung trains through ``runs.run_config`` (the study's telemetry, the one judge) under its own run id
(``paths.margin_run``), so its steps and fp16 peaks stay in the telemetry beside the trials'. A rung that
diverged is replayed for its diagnosis (``trainer.diagnosis_replay``), as a trial is; its lr is compared
with the edge the study measured *outside* this recipe's ladder (the lr probe, other recipes' margins),
since the ladder is what measures its own edge. A rung that did not diverge pays nothing for it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console

from common.console import make_console
from studies.binding import recipe_config, trial_steps
from studies.evidence import edge_hint, lr_probe, margin, validate
from studies.evidence.diagnoses import measured_edge
from studies.execution.pool import run_jobs
from studies.execution.runs import RunSetup, SetupSpec, run_config
from studies.paths import margin_run
from studies.record import load_records
from trainer.diagnosis import Edge
from trainer.headroom import TENSORS
from trainer.telemetry import step_series


@dataclass(frozen=True, slots=True)
class MarginJob:
    """One recipe's ladder, as a worker process receives it."""

    name: str
    params: dict[str, Any]
    trial: int | None
    steps: int
    max_multiplier: float = margin.MAX_MULTIPLIER
    start: float = 1.0  # the first multiplier tried (edge_hint's guess), and the stride away from it
    stride: float = edge_hint.COARSE_STRIDE
    edge: Edge | None = None  # the study's measured edge besides this recipe's ladder: for the diagnosis


def ladder(setup: RunSetup, job: MarginJob) -> margin.Margin:
    """Climb one recipe's ladder (each rung a real short run) and return its typed margin."""
    console = make_console(stderr=True)
    base_lr = float(job.params["lr"])
    rungs = margin.bracket(
        lambda m: run_rung(setup, job, m, console),
        base_lr=base_lr,
        start=job.start,
        stride=job.stride,
        max_multiplier=job.max_multiplier,
    )
    return margin.summarize(job.name, rungs, trial=job.trial, base_lr=base_lr, steps=job.steps)


def run_rung(setup: RunSetup, job: MarginJob, multiplier: float, console: Console) -> margin.Rung:
    """One rung: the recipe at ``multiplier`` x its lr for ``job.steps`` steps, judged, and diagnosed
    when it diverged; one line on ``console`` (two for a diverged rung: the second says why)."""
    t0 = time.perf_counter()
    params = {**job.params, "lr": float(job.params["lr"]) * multiplier}
    run_id = margin_run(setup.study.name, job.name, multiplier)
    cfg = recipe_config(setup.study, params, seed=setup.seed, steps=job.steps, where=run_id)
    run = run_config(setup, cfg, run_id, with_diagnosis=True, edge=job.edge)
    verdict, d = run.verdict, run.verdict.divergence
    val_mel = verdict.val_mel
    out = margin.Rung(
        multiplier=multiplier,
        lr=cfg.lr,
        outcome=verdict.outcome,
        steps_run=verdict.steps,
        run_id=run_id,
        divergence_kind=None if d is None else d.kind,
        divergence_step=None if d is None else d.step,
        val_mel=val_mel if val_mel is not None and math.isfinite(val_mel) else None,
        baseline_mel=run.result.baseline_mel,
        peaks=last_peaks(setup, run_id),
        diagnosis=verdict.diagnosis,
    )
    mel = "-" if out.val_mel is None else f"{out.val_mel:.4f}"
    how = f"{d.kind} at step {d.step}" if d is not None else f"val mel {mel}"
    console.print(
        f"margin {job.name} x{multiplier:g} (lr {cfg.lr:.3g}): {verdict.outcome}, {how} "
        f"({verdict.steps} of {job.steps} steps, {time.perf_counter() - t0:.0f} s)"
    )
    if out.diagnosis is not None:
        replay = out.diagnosis.replay_s
        cost = "" if math.isnan(replay) else f" (replay {replay:.0f} s)"
        console.print(f"margin {job.name} x{multiplier:g}: why: {out.diagnosis.line()}{cost}", soft_wrap=True)
    return out


def study_hint(study: optuna.Study) -> edge_hint.EdgeHint | None:
    """Where the study's own runs say the edge lies (``edge_hint``), before any margin rung runs."""
    trials = [
        (float(r.params["lr"]), r.verdict)
        for r in load_records(study, [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL])
        if r.verdict is not None and "lr" in r.params
    ]
    return edge_hint.edge_hint(margin.stored(study), trials, lr_probe.stored(study))


def last_peaks(setup: RunSetup, run_id: str) -> dict[str, float]:
    """Each watched tensor's max |value| at the run's last step with a finite one (the telemetry's)."""
    found = {}
    for metric in TENSORS:
        values = [v for _, v in step_series(setup.paths.telemetry, run_id, metric) if math.isfinite(v)]
        if values:
            found[metric] = values[-1]
    return found


def run_margin(
    study: optuna.Study,
    setup: RunSetup,
    names: Sequence[str],
    *,
    steps: int | None,
    console: Console,
    max_multiplier: float = margin.MAX_MULTIPLIER,
    workers: int = 1,
    spec: SetupSpec | None = None,
    threads_each: int = 1,
) -> dict[str, margin.Margin]:
    """Every named recipe's margin (``workers`` recipes at a time), each stored in the study as it ends."""
    study_def = setup.study
    hint = study_hint(study)
    jobs = []
    for name in dict.fromkeys(names):
        params, trial = validate.resolve(study, study_def, name)
        n = steps or trial_steps(study_def, int(params[study_def.space.warmup_param]))
        lr = float(params["lr"])
        start, stride = (1.0, edge_hint.COARSE_STRIDE) if hint is None else (hint.start(lr), margin.FACTOR)
        edge = measured_edge(study, besides=name)
        jobs.append(MarginJob(name, dict(params), trial, n, max_multiplier, start, stride, edge))
    at_once = f", {workers} at a time" if workers > 1 else ""
    where = (
        f"from x1 by x{edge_hint.COARSE_STRIDE:g} (no run of the study has diverged yet)"
        if hint is None
        else f"from just below lr {hint.lr:.2g}, where {hint.source} put the edge"
    )
    console.print(
        f"margin: {', '.join(j.name for j in jobs)}: the lr x 2^k that survived next to the one that "
        f"diverged, {where}, at most x{max_multiplier:g} "
        f"({', '.join(f'{j.name} {j.steps}' for j in jobs)} steps a run{at_once})"
    )
    t0 = time.perf_counter()
    found: dict[str, margin.Margin] = {}
    for i, result in run_jobs(
        ladder, jobs, setup=setup, workers=workers, spec=spec, threads_each=threads_each
    ):
        margin.store(study, result)
        found[jobs[i].name] = result
        console.print(f"margin {result.label}: {result.summary()} ({time.perf_counter() - t0:.0f} s)")
    return {j.name: found[j.name] for j in jobs}
