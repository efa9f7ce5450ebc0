"""The objective: one Optuna trial = one short, guarded run of the real trainer.

The trainer knows nothing of Optuna; this module adapts its callbacks to `trial.report` /
`trial.should_prune`, and writes the run's ``TrialRecord`` (judged by ``studies.scoring``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from studies.record import TrialRecord, record_eval, record_start, run_id, write_record
from studies.registry import StudyDef, base_config, guard_config, trial_steps
from studies.scoring import score
from trainer.config import TrainConfig, apply_overrides
from trainer.data import TrainData
from trainer.evaluate import EvalMetrics
from trainer.loop import StepMetrics, TrainResult, train
from trainer.telemetry import Telemetry
from tts_model.cache import atomic_write

SAMPLE_FIELDS = ("target", "predicted", "attention", "decoded")  # EvalSample's tensors, saved per trial


class TrialOutOfMemory(Exception):
    """The device ran out of memory in this trial: the runner tells it FAIL and goes on (no retry:
    the same recipe on the same card would run out again)."""


@dataclass(frozen=True, slots=True)
class TrialSetup:
    study: StudyDef
    data: TrainData
    device: torch.device
    telemetry_path: Path
    seed: int


def trial_config(setup: TrialSetup, overrides: dict, *, where: str) -> TrainConfig:
    """The TrainConfig a trial runs: base level + the study's shared settings + the trial's knobs."""
    steps = trial_steps(setup.study, int(overrides[setup.study.space.warmup_param]))
    changes = {**overrides, "max_steps": steps, "seed": setup.seed}
    return apply_overrides(base_config(setup.study), changes, where=where)


def make_objective(
    setup: TrialSetup, on_step: Callable[[int, int, StepMetrics], None] | None = None
) -> Callable[[optuna.Trial], float]:
    guards = guard_config(setup.study)

    def objective(trial: optuna.Trial) -> float:
        cfg = trial_config(setup, setup.study.space.suggest(trial), where=f"trial {trial.number}")
        record_start(trial, cfg.max_steps)

        def on_eval(ev: EvalMetrics, _sample) -> bool:
            trial.report(ev.val_mel, ev.step)
            record_eval(trial, ev.step, ev.stop_end_margin)  # read by the pruner
            return trial.should_prune()

        step_cb = (lambda m: on_step(trial.number, cfg.max_steps, m)) if on_step is not None else None
        with Telemetry(setup.telemetry_path) as telemetry:
            result = train(
                cfg,
                setup.data,
                device=setup.device,
                mode="trial",
                on_step=step_cb,
                on_eval=on_eval,
                telemetry=telemetry,
                run_id=run_id(setup.study.name, trial.number),
                decode_sentences=setup.study.scoring.decode_sentences,
            )
        save_sample(sample_path(setup.telemetry_path.parent, trial.number), result)
        record = score(result, guards, warmup_steps=cfg.warmup_steps)
        write_record(trial, record)
        if record.oom_step is not None:
            raise TrialOutOfMemory(f"out of memory at step {record.oom_step}: {record.oom_detail}")
        if record.value is None:
            raise optuna.TrialPruned(_pruned_reason(record, result.steps))
        return record.value

    return objective


def _pruned_reason(record: TrialRecord, steps: int) -> str:
    d = record.divergence
    if d is not None:
        return f"diverged: {d.kind} at step {d.step}: {d.detail}"
    return f"pruned on val mel at step {steps}"


def sample_path(study_dir: Path, number: int) -> Path:
    return study_dir / "samples" / f"trial-{number}.pt"


def save_sample(path: Path, result: TrainResult) -> None:
    """Keep the last eval's sample (a few small tensors) so the report can show the best trial's mel,
    attention and voice without training it again."""
    sample, final = result.last_sample, result.final_eval
    if sample is None or final is None:
        return
    state = {"step": final.step, "val_mel": final.val_mel, **{k: getattr(sample, k) for k in SAMPLE_FIELDS}}
    atomic_write(path, lambda tmp: torch.save(state, tmp))
