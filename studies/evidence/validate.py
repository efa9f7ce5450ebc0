"""Multi-seed validation: run a preset (or the study's best) K times, longer than a trial, and count.

A study judges each point once, on one seed, over a short horizon that favours fast learners. The
mission asks whether `basic` is *reliably* stable and whether the search's best is too, so each
named recipe runs again with K seeds for a longer horizon, and the answer is a table of numbers:
divergence rate, where the diverged runs broke, and val mel mean +- std of the runs that did not.
Results go into the study (user attribute ``validation:<name>``) and each run into the telemetry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import optuna
from rich.console import Console

from studies.objective import TrialSetup, save_sample, trial_config
from studies.record import STABLE, best_feasible, diverged_outcome, is_diverged_outcome, load_records
from studies.registry import StudyDef, guard_config
from studies.scoring import finished_verdict, finished_violations
from trainer.config import GuardConfig, apply_overrides, config_to_dict
from trainer.loop import TrainResult, train
from trainer.presets import PRESETS, preset
from trainer.telemetry import Telemetry
from tts_model.errors import UserError

ATTR_PREFIX = "validation:"
BEST = "best"


def known_names() -> tuple[str, ...]:
    return (*sorted(PRESETS), BEST)


def check_names(names: Sequence[str], seeds: int, steps: int | None) -> None:
    """Fail before anything runs: unknown names, a bad seed count or step count."""
    for name in names:
        if name not in known_names():
            raise UserError(f"--validate {name!r}: unknown preset; known: {', '.join(known_names())}")
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    if steps is not None and steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")


def default_steps(study_def: StudyDef) -> int:
    """Twice the longest trial of the study: long enough to see what a trial's horizon could not."""
    return 2 * (study_def.space.warmup_max + study_def.horizon)


def resolve(study: optuna.Study, study_def: StudyDef, name: str) -> tuple[dict, int | None]:
    """The Optuna params of a preset (warmup scaled to the study) or of the best feasible trial."""
    if name == BEST:
        best = best_feasible(load_records(study))
        if best is None:
            raise UserError(
                f"--validate best: study {study.study_name!r} has no feasible trial yet (none finished aligned "
                "with a decode that stops); run more trials, or validate the presets only"
            )
        return dict(best.params), best.number
    return study_def.space.preset_params(config_to_dict(preset(name))), None


def run_one(setup: TrialSetup, params: dict, *, seed: int, steps: int, run_id: str) -> TrainResult:
    seeded = dataclasses.replace(setup, seed=seed)
    cfg = trial_config(seeded, setup.study.space.to_overrides(params), where=run_id)
    cfg = apply_overrides(cfg, {"max_steps": steps}, where=run_id)
    with Telemetry(setup.telemetry_path) as telemetry:
        return train(cfg, setup.data, device=setup.device, mode="trial", telemetry=telemetry, run_id=run_id)


def judge(result: TrainResult, guards: GuardConfig) -> dict:
    """One run's record, with the verdict words the study uses for its trials."""
    final = result.final_eval
    row: dict = {"steps_run": result.steps, "val_mel": None, "diagonality": None, "divergence_step": None}
    if result.verdict is not None:
        row.update(verdict=diverged_outcome(result.verdict.kind), divergence_step=result.verdict.step)
        row["detail"] = result.verdict.detail
        if final is not None and math.isfinite(final.val_mel):
            row["last_val_mel"] = final.val_mel
        return row
    if final is None:
        row["verdict"] = "no-eval"
        return row
    row.update(val_mel=final.val_mel, diagonality=round(final.diagonality, 4))
    row["verdict"] = finished_verdict(*finished_violations(final, guards))
    return row


def summarize(name: str, runs: list[dict], *, steps: int, trial: int | None, params: dict) -> dict:
    diverged = [r for r in runs if is_diverged_outcome(r["verdict"])]
    mels = [r["val_mel"] for r in runs if r.get("val_mel") is not None and math.isfinite(r["val_mel"])]
    return {
        "name": name,
        "trial": trial,
        "params": params,
        "steps": steps,
        "seeds": [r["seed"] for r in runs],
        "runs": runs,
        "diverged": len(diverged),
        "divergence_rate": len(diverged) / len(runs),
        "divergence_steps": [r["divergence_step"] for r in diverged],
        "stable": sum(r["verdict"] == STABLE for r in runs),
        "val_mel_mean": statistics.fmean(mels) if mels else None,
        "val_mel_std": statistics.stdev(mels) if len(mels) > 1 else (0.0 if mels else None),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def validate(
    study: optuna.Study,
    setup: TrialSetup,
    names: Sequence[str],
    *,
    seeds: int,
    steps: int | None,
    base_seed: int,
    console: Console,
) -> dict[str, dict]:
    """Run every name with seeds base_seed .. base_seed+K-1; record and return each one's summary."""
    study_def = setup.study
    steps = steps or default_steps(study_def)
    resolved = {name: resolve(study, study_def, name) for name in dict.fromkeys(names)}  # all checked first
    guards = guard_config(study_def)
    results: dict[str, dict] = {}
    for name, (params, trial) in resolved.items():
        runs = []
        for seed in range(base_seed, base_seed + seeds):
            run_id = f"{study_def.name}/validate-{name}-seed{seed}"
            t0 = time.perf_counter()
            result = run_one(setup, params, seed=seed, steps=steps, run_id=run_id)
            save_sample(setup.telemetry_path.parent / "samples" / f"validate-{name}-seed{seed}.pt", result)
            row = {"seed": seed, "run_id": run_id, **judge(result, guards)}
            runs.append(row)
            mel = "" if row["val_mel"] is None else f", val mel {row['val_mel']:.4f}"
            console.print(
                f"validate {name} seed {seed}: {row['verdict']}{mel} "
                f"({row['steps_run']} of {steps} steps, {time.perf_counter() - t0:.0f} s)"
            )
        results[name] = summarize(name, runs, steps=steps, trial=trial, params=params)
        study.set_user_attr(ATTR_PREFIX + name, results[name])
    return results


def stored_results(study: optuna.Study) -> dict[str, dict]:
    """Validation summaries recorded in the study, basic / enhanced / best first."""
    found = {k[len(ATTR_PREFIX) :]: v for k, v in study.user_attrs.items() if k.startswith(ATTR_PREFIX)}
    order = {n: i for i, n in enumerate(("basic", "enhanced", BEST))}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], 9), kv[0])))


def sample_files(study_dir: Path, name: str) -> list[Path]:
    return sorted((study_dir / "samples").glob(f"validate-{name}-seed*.pt"))
