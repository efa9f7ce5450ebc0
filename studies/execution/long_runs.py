"""The evidence commands' runs: the lr probe, multi-seed validation and the transfer check's long runs.

Each trains through ``runs.run_config`` (the study's telemetry, its sample, the one judge) and stores a
typed result that the evidence room defines and reads (``studies.evidence.lr_probe``, ``.validate``,
``.transfer``). The transfer check's runs go to worker processes with ``--workers`` (``pool``); in a
study with a speech rung they are its rung, and reuse what the study already ran (``run_transfer``).
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from rich.console import Console

from common.errors import UserError
from studies.binding import recipe_config, rung_lr, trial_config
from studies.evidence import lr_probe, transfer, transfer_plan, validate
from studies.evidence.diagnoses import measured_edge
from studies.execution import continuation
from studies.execution.pool import run_jobs
from studies.execution.runs import RunSetup, SetupSpec, run_config
from studies.paths import probe_run, transfer_run, validation_run
from studies.record import TrialRecord, load_records
from studies.registry import StudyDef
from trainer.checkpoints import copy_checkpoint
from trainer.config import apply_overrides, config_to_dict
from trainer.loop import TRIAL, RunPlan
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
    # The checkpoint its screen left: resumed there (a copy: the screen's own state stays as it was,
    # for a later promotion). None: from scratch.
    screen_state: Path | None = None
    to_rung: bool = False  # the study's long rung: planned and decoded as its continuation trials are


def long_run(setup: RunSetup, job: LongRun) -> transfer.LongOutcome:
    """Train one trial's params for the long horizon, from its screen's state or from scratch, and
    judge it (a typed record: it crosses a process boundary)."""
    t0 = time.perf_counter()
    cfg = recipe_config(setup.study, dict(job.params), seed=setup.seed, steps=job.steps, where=job.run_id)
    rung = setup.study.speech_rung if job.to_rung else None
    decode = rung.decode_sentences if rung is not None else setup.study.scoring.decode_sentences
    lr = rung_lr(setup.study, cfg, job.params) if job.to_rung else None  # as the study's rung trains
    if job.screen_state is None:
        plan = RunPlan(decode_sentences=decode, lr_schedule=lr) if job.to_rung else TRIAL
        run = run_config(setup, cfg, job.run_id, plan=plan)
        return transfer.LongOutcome.of(run.verdict, time.perf_counter() - t0)
    setup.paths.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=setup.paths.dir, prefix=".transfer-") as tmp:
        plan = continuation.resume_plan(decode, Path(tmp), lr)  # the continuation trial's resume, to the rung
        assert plan.ckpt_dir is not None
        copy_checkpoint(job.screen_state, plan.ckpt_dir)
        run = run_config(setup, cfg, job.run_id, plan=plan)
    resumed = continuation.resumed_at(run.result)
    return transfer.LongOutcome.of(run.verdict, time.perf_counter() - t0, resumed_from=resumed)


def _warmup(study_def: StudyDef, params: dict[str, Any]) -> int:
    return int(study_def.space.to_overrides(dict(params))[study_def.space.warmup_param])


def plan_long_run(
    r: TrialRecord, setup: RunSetup, *, steps: int, to_rung: bool
) -> tuple[transfer.Source, LongRun]:
    """Where trial ``r``'s long run comes from (``transfer_plan.source``), and the run to train when it is
    not its long rung: to the study's speech rung (``to_rung``: ``steps`` past its warmup), resumed
    from its screen's state when the screen left one, else from scratch."""
    study_def = setup.study
    rung = study_def.speech_rung if to_rung else None
    end = steps if rung is None else continuation.rung_end(rung, _warmup(study_def, r.params))
    state = (
        continuation.screen_state(setup.paths.trial_dir(r.number), r.screen.step)
        if r.screen is not None
        else None
    )
    saved = state is not None and state.exists()
    source = transfer_plan.source(r, rung_end=None if rung is None else end, saved=saved)
    job = LongRun(
        r.number,
        dict(r.params),
        end,
        transfer_run(study_def.name, r.number),
        screen_state=state if source is transfer.Source.RESUMED else None,
        to_rung=to_rung,
    )
    return source, job


def steps_to_train(r: TrialRecord, job: LongRun) -> int:
    """The steps a long run is expected to train: past its screen when resumed; about as many as its
    short run when that diverged (same recipe, same seed, same warmup)."""
    if job.screen_state is not None and r.screen is not None:
        return job.steps - r.screen.step
    if transfer.short_diverged(r) and r.divergence is not None and r.divergence.step is not None:
        return r.divergence.step
    return job.steps


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
    """Run the check (``workers`` long runs at a time), record it in the study, and return it.

    Without ``steps``, a study with a speech rung runs each trial to its rung, and trains only what the
    study has not: a trial promoted to the rung has its long run already, a screen's saved state goes on
    from its screen's end. Otherwise every long run is ``steps`` from scratch."""
    study_def = setup.study
    to_rung = steps is None and study_def.speech_rung is not None
    if to_rung:
        assert study_def.speech_rung is not None
        steps = study_def.speech_rung.horizon
    steps = steps or transfer_plan.default_steps(study_def)
    ranked = transfer_plan.short_ranked(load_records(study))
    if len(ranked) < transfer_plan.MIN_TRIALS:
        raise UserError(
            f"--transfer-check: study {study.study_name!r} has {len(ranked)} finished trials; "
            f"needs at least {transfer_plan.MIN_TRIALS} (run more trials first)"
        )
    chosen = transfer_plan.pick(ranked, k, study_def.presets)
    position = {r.number: i + 1 for i, r in enumerate(ranked)}
    done: dict[int, transfer.TransferRun] = {}

    def record(i: int, long: transfer.LongOutcome) -> None:
        r, short = chosen[i], transfer.short_outcome(chosen[i])
        done[i] = transfer.TransferRun(
            number=r.number,
            preset=r.preset,
            short_outcome=short,
            short_rank=position[r.number],
            short_diverged=transfer.short_diverged(r),
            long=long,
        )
        ratio = long.decode_ratio
        console.print(
            f"transfer trial {r.number} (rank {position[r.number]}, short {short}): long {long.verdict}, "
            f"decode ratio {'-' if ratio is None else f'{ratio:.2f}'}"
            f"{', speaks' if long.speaks else ''}; {long.where} ({long.seconds:.0f} s; "
            f"{len(done)} of {len(chosen)} done)"
        )

    planned = [plan_long_run(r, setup, steps=steps, to_rung=to_rung) for r in chosen]
    at = [i for i, (source, _) in enumerate(planned) if source is not transfer.Source.RUNG]
    # Longest first, so with --workers no long run starts last and holds the check up alone.
    at.sort(key=lambda i: -steps_to_train(chosen[i], planned[i][1]))
    jobs = [planned[i][1] for i in at]
    horizon = f"to the speech rung ({steps} steps past each warmup)" if to_rung else f"{steps} steps each"
    at_once = f", {workers} at a time" if workers > 1 else ""
    console.print(
        f"transfer check: {len(chosen)} trials of {len(ranked)}, {horizon}; "
        f"{len(chosen) - len(jobs)} have their long rung already, {len(jobs)} to train{at_once}"
    )
    for i, (source, _) in enumerate(planned):
        if source is transfer.Source.RUNG:
            record(i, transfer.LongOutcome.of_rung(chosen[i]))
    outcomes = run_jobs(long_run, jobs, setup=setup, workers=workers, spec=spec, threads_each=threads_each)
    for j, long in outcomes:
        record(at[j], long)
    check = transfer.summarize([done[i] for i in range(len(chosen))], steps=steps, to_rung=to_rung)
    transfer.store(study, check)  # its lines (the caller prints them) say where each long run came from
    return check


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
