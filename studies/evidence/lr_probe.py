"""The edge of stability in one run: an lr range test (fastai's lr_find) that stops on divergence.

One run of the study's model with `basic`'s other knobs, whose lr rises exponentially from 1e-7 each
step, until a divergence guard fires (the same guards that judge trials) or the lr passes 10. The lr
at which it diverged is a cheap first estimate of the boundary a whole study maps, and the report
draws it on the stability map next to the boundary the study found. The loss curve is kept in the
telemetry under ``<study>/lr-probe``; the summary is the study's user attribute ``lr_probe``.
"""

from __future__ import annotations

import datetime as dt
import math
import time

import optuna
from rich.console import Console

from studies.objective import TrialSetup, trial_config
from trainer.config import apply_overrides, config_to_dict
from trainer.loop import train
from trainer.presets import preset
from trainer.telemetry import Telemetry, read_steps
from tts_model.errors import UserError

ATTR = "lr_probe"
START_LR, END_LR = 1e-7, 10.0
MAX_DEFAULT_STEPS = 1000
SMOOTHING = 0.05  # fastai's beta 0.98 is for hundreds of steps; a short probe needs less memory


def default_steps(setup: TrialSetup) -> int:
    """As long as the study's longest trial (capped): the guards' minimum steps fit inside it."""
    return min(setup.study.space.warmup_max + setup.study.horizon, MAX_DEFAULT_STEPS)


def probe_lr(step: int, steps: int) -> float:
    """START_LR at step 1, END_LR at step `steps`, geometric in between."""
    return START_LR * (END_LR / START_LR) ** ((step - 1) / max(steps - 1, 1))


def run_id(setup: TrialSetup) -> str:
    return f"{setup.study.name}/lr-probe"


def run_probe(study: optuna.Study, setup: TrialSetup, *, steps: int | None, console: Console) -> dict:
    """Run the range test, record its summary in the study, and return it."""
    steps = steps or default_steps(setup)
    if steps < 2:
        raise UserError(f"--steps must be >= 2 for --lr-probe, got {steps}")
    space = setup.study.space
    params = space.preset_params(config_to_dict(preset("basic")))
    cfg = trial_config(setup, space.to_overrides(params), where="lr probe")
    # The probe's lr comes from probe_lr; cfg's own schedule is switched off so nothing else moves it.
    # One eval at the very end only: evals cost time and say nothing about where the loss blows up.
    overrides = {"max_steps": steps, "warmup_steps": 0, "scheduler": "constant", "eval_every": steps}
    cfg = apply_overrides(cfg, overrides, where="lr probe")
    console.print(f"lr probe: lr from {START_LR:g} to {END_LR:g} over {steps} steps, until a guard fires")
    t0 = time.perf_counter()
    with Telemetry(setup.telemetry_path) as telemetry:
        result = train(
            cfg,
            setup.data,
            device=setup.device,
            mode="trial",
            telemetry=telemetry,
            run_id=run_id(setup),
            lr_schedule=lambda step: probe_lr(step, steps),
        )
    rows = read_steps(setup.telemetry_path, run_id(setup))
    lrs = [float(r["lr"]) for r in rows]
    losses = [float(r["loss"]) if r["loss"] is not None else math.nan for r in rows]
    v = result.verdict
    summary = {
        "steps": steps,
        "steps_run": result.steps,
        "start_lr": START_LR,
        "end_lr": END_LR,
        "diverged": v is not None,
        "verdict": v.kind if v is not None else None,
        "divergence_step": v.step if v is not None else None,
        "divergence_lr": probe_lr(v.step, steps) if v is not None else None,
        "detail": v.detail if v is not None else None,
        "min_loss_lr": min_loss_lr(lrs, losses),
        "grad_clip": cfg.grad_clip,
        "mel_weight": cfg.mel_weight,
        "kl_weight": cfg.kl_weight,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    study.set_user_attr(ATTR, summary)
    took = time.perf_counter() - t0
    if v is not None:
        console.print(
            f"lr probe: diverged ({v.kind}) at step {v.step}, lr {summary['divergence_lr']:.3g}; "
            f"lowest smoothed loss at lr {summary['min_loss_lr']:.3g} ({took:.0f} s)"
        )
    else:
        console.print(f"lr probe: no guard fired up to lr {lrs[-1] if lrs else END_LR:.3g} ({took:.0f} s)")
    return summary


def min_loss_lr(lrs: list[float], losses: list[float]) -> float | None:
    """The lr at the lowest exponentially smoothed (bias-corrected) loss, fastai's classic marker;
    a good peak lr is usually several times below it, and the divergence lr above it."""
    best: tuple[float, float] | None = None
    avg = 0.0
    n = 0
    for lr, loss in zip(lrs, losses, strict=True):
        if not math.isfinite(loss):
            break
        n += 1
        avg = (1 - SMOOTHING) * avg + SMOOTHING * loss
        smooth = avg / (1 - (1 - SMOOTHING) ** n)
        if best is None or smooth < best[0]:
            best = (smooth, lr)
    return best[1] if best is not None else None
