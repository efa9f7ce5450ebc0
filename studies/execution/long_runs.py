"""The evidence commands' runs: the lr probe, multi-seed validation and the transfer check's long runs.

Each trains through ``runs.run_config`` (the study's telemetry, its sample, the one judge) and stores a
typed result that the evidence room defines and reads (``studies.evidence.lr_probe``, ``.validate``,
``.transfer``). The transfer check's runs go to worker processes with ``--workers`` (``pool``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from rich.console import Console

from common.errors import UserError
from studies import ranking
from studies.binding import recipe_config, trial_config
from studies.evidence import lr_probe, transfer, validate
from studies.evidence.diagnoses import measured_edge
from studies.execution.pool import run_jobs
from studies.execution.runs import RunSetup, SetupSpec, run_config
from studies.paths import probe_run, transfer_run, validation_run
from studies.record import load_records
from trainer.config import apply_overrides, config_to_dict
from trainer.loop import RunPlan
from trainer.presets import preset
from trainer.telemetry import step_series


def run_probe(
    study: optuna.Study, setup: RunSetup, *, steps: int | None, console: Console
) -> lr_probe.ProbeResult:
    """Run the range test, record its result in the study, and return it."""
    steps = steps or lr_probe.default_steps(setup.study)
    if steps < 2:
        raise UserError(f"--steps must be >= 2 for --lr-probe, got {steps}")
    space = setup.study.space
    params = space.preset_params(config_to_dict(preset("basic")))
    cfg = trial_config(setup.study, space.to_overrides(params), seed=setup.seed, where="lr probe")
    # The probe's lr comes from probe_lr; cfg's own schedule is switched off so nothing else moves it.
    # One eval at the very end only: evals cost time and say nothing about where the loss blows up.
    overrides = {"max_steps": steps, "warmup_steps": 0, "scheduler": "constant", "eval_every": steps}
    cfg = apply_overrides(cfg, overrides, where="lr probe")
    start, end = lr_probe.START_LR, lr_probe.END_LR
    console.print(f"lr probe: lr from {start:g} to {end:g} over {steps} steps, until a guard fires")
    t0 = time.perf_counter()
    run_id = probe_run(setup.study.name)
    plan = RunPlan(lr_schedule=lambda step: lr_probe.probe_lr(step, steps))
    run = run_config(setup, cfg, run_id, plan=plan, with_diagnosis=True)
    lrs = [lr for _, lr in step_series(setup.paths.telemetry, run_id, "lr")]
    losses = [loss for _, loss in step_series(setup.paths.telemetry, run_id, "loss")]
    v = run.verdict.divergence
    probe = lr_probe.ProbeResult(
        steps=steps,
        steps_run=run.verdict.steps,
        start_lr=start,
        end_lr=end,
        diverged=v is not None,
        verdict=v.kind if v is not None else None,
        divergence_step=v.step if v is not None else None,
        divergence_lr=lr_probe.probe_lr(v.step, steps) if v is not None else None,
        detail=v.detail if v is not None else None,
        min_loss_lr=lr_probe.min_loss_lr(lrs, losses),
        grad_clip=cfg.grad_clip,
        mel_weight=cfg.mel_weight,
        kl_weight=cfg.kl_weight,
        date=_now(),
        diagnosis=run.verdict.diagnosis,
    )
    lr_probe.store(study, probe)
    took = time.perf_counter() - t0
    if v is not None:
        console.print(
            f"lr probe: diverged ({v.kind}) at step {v.step}, lr {probe.divergence_lr:.3g}; "
            f"lowest smoothed loss at lr {probe.min_loss_lr:.3g} ({took:.0f} s)"
        )
        if probe.diagnosis is not None:
            console.print(f"lr probe: why: {probe.diagnosis.line()}", soft_wrap=True)
    else:
        console.print(f"lr probe: no guard fired up to lr {lrs[-1] if lrs else end:.3g} ({took:.0f} s)")
    return probe


def run_validation(
    study: optuna.Study,
    setup: RunSetup,
    names: Sequence[str],
    *,
    seeds: int,
    steps: int | None,
    base_seed: int,
    console: Console,
) -> dict[str, validate.Validation]:
    """Run every name with seeds base_seed .. base_seed+K-1; record and return each one's result."""
    study_def = setup.study
    steps = steps or validate.default_steps(study_def)
    resolved = {name: validate.resolve(study, study_def, name) for name in dict.fromkeys(names)}  # all first
    results: dict[str, validate.Validation] = {}
    edge = measured_edge(study)  # a diverged seed's lr against the study's edge
    for name, (params, trial) in resolved.items():
        runs = []
        for seed in range(base_seed, base_seed + seeds):
            run_id = validation_run(study_def.name, name, seed)
            t0 = time.perf_counter()
            cfg = recipe_config(study_def, params, seed=seed, steps=steps, where=run_id)
            run = run_config(setup, cfg, run_id, with_diagnosis=True, edge=edge)
            row = validate.ValidationRun.of(seed, run_id, run.verdict)
            runs.append(row)
            mel = "" if row.val_mel is None else f", val mel {row.val_mel:.4f}"
            why = "" if row.diagnosis is None else f"; {row.diagnosis.line()}"
            console.print(
                f"validate {name} seed {seed}: {row.verdict}{mel} "
                f"({row.steps_run} of {steps} steps, {time.perf_counter() - t0:.0f} s){why}",
                soft_wrap=True,
            )
        results[name] = validate.summarize(name, runs, steps=steps, trial=trial, params=params)
        validate.store(study, results[name])
    return results


@dataclass(frozen=True, slots=True)
class LongRun:
    """One trial's long re-run, as a worker process receives it."""

    number: int
    params: dict[str, Any]
    steps: int
    run_id: str


def long_run(setup: RunSetup, job: LongRun) -> transfer.LongOutcome:
    """Train one trial's params for the long horizon and judge it (a typed record: it crosses a process
    boundary)."""
    t0 = time.perf_counter()
    cfg = recipe_config(setup.study, dict(job.params), seed=setup.seed, steps=job.steps, where=job.run_id)
    run = run_config(setup, cfg, job.run_id)
    return transfer.LongOutcome.of(run.verdict, time.perf_counter() - t0)


def run_transfer(
    study: optuna.Study,
    setup: RunSetup,
    *,
    k: int,
    steps: int | None,
    console: Console,
    workers: int = 1,
    spec: SetupSpec | None = None,
    threads_each: int = 1,
) -> transfer.TransferCheck:
    """Run the check (``workers`` long runs at a time), record it in the study, and return it."""
    study_def = setup.study
    steps = steps or transfer.default_steps(study_def)
    ranked = ranking.ranked(load_records(study))
    if len(ranked) < transfer.MIN_TRIALS:
        raise UserError(
            f"--transfer-check: study {study.study_name!r} has {len(ranked)} finished trials; "
            f"needs at least {transfer.MIN_TRIALS} (run more trials first)"
        )
    chosen = transfer.pick(ranked, k, study_def.presets)
    position = {r.number: i + 1 for i, r in enumerate(ranked)}
    at_once = f", {workers} at a time" if workers > 1 else ""
    console.print(f"transfer check: {len(chosen)} trials of {len(ranked)}, {steps} steps each{at_once}")
    jobs = [LongRun(r.number, dict(r.params), steps, transfer_run(study_def.name, r.number)) for r in chosen]
    done: dict[int, transfer.TransferRun] = {}
    outcomes = run_jobs(long_run, jobs, setup=setup, workers=workers, spec=spec, threads_each=threads_each)
    for i, long in outcomes:
        r = chosen[i]
        done[i] = transfer.TransferRun(
            number=r.number,
            preset=r.preset,
            short_outcome=r.outcome,
            short_rank=position[r.number],
            short_diverged=r.diverged,
            long=long,
        )
        ratio = long.decode_ratio
        console.print(
            f"transfer trial {r.number} (rank {position[r.number]}, short {r.outcome}): long {long.verdict}, "
            f"decode ratio {'-' if ratio is None else f'{ratio:.2f}'}"
            f"{', speaks' if long.speaks else ''} ({long.seconds:.0f} s; {len(done)} of {len(jobs)} done)"
        )
    check = transfer.summarize([done[i] for i in range(len(jobs))], steps=steps)
    transfer.store(study, check)
    return check


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
