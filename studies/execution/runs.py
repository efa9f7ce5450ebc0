"""One run of a study's recipe in this process: the trainer called with the study's telemetry, its
sample kept, its verdict from the one judge.

Trials, validation seeds, a transfer check's long runs and the lr probe all train through
``run_config``, so each writes its steps and evals under its run id (``studies.paths``) in the
study's telemetry, and keeps its last eval's sample beside them, the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from studies.paths import StudyPaths
from studies.registry import StudyDef
from trainer.artifacts import save_sample
from trainer.config import TrainConfig
from trainer.data import TrainData, load_train_data
from trainer.diagnosis import Edge
from trainer.diagnosis_replay import ReplayPlan, diagnose
from trainer.evaluate import EvalMetrics, EvalSample
from trainer.hooks import RunHooks
from trainer.judge import Judgement, judge
from trainer.loop import TRIAL, RunPlan, train
from trainer.results import StepMetrics, TrainResult
from tts_model.dataset import DataConfig


@dataclass(frozen=True, slots=True)
class RunSetup:
    """What every run of a study needs in this process: the study, its data, where to train and write."""

    study: StudyDef
    data: TrainData
    device: torch.device
    paths: StudyPaths
    seed: int  # the training seed of a trial (validation seeds count up from it)


@dataclass(frozen=True, slots=True)
class StudyRun:
    """A finished run: what the trainer recorded and what the judge made of it."""

    result: TrainResult
    verdict: Judgement


@dataclass(frozen=True, kw_only=True, slots=True)
class SetupSpec:
    """How another process builds the same ``RunSetup``: it loads the data itself (from the feature
    cache, seconds) instead of receiving it pickled."""

    study: StudyDef
    train_data: Path | None
    val_data: Path | None
    device: torch.device
    paths: StudyPaths
    seed: int

    def build(self) -> RunSetup:
        data = load_data(self.train_data, self.val_data)
        return RunSetup(self.study, data, self.device, self.paths, self.seed)


def load_data(train: Path | None, val: Path | None, console=None) -> TrainData:
    """The data set the study trains on: ``--train-data/--val-data`` folders, or the embedded corpus."""
    return load_train_data(train, val, DataConfig(), console=console)


def run_config(
    setup: RunSetup,
    cfg: TrainConfig,
    run_id: str,
    *,
    plan: RunPlan = TRIAL,
    on_step: Callable[[StepMetrics], None] | None = None,
    on_eval: Callable[[EvalMetrics, EvalSample], bool] | None = None,
    on_rung: Callable[[EvalMetrics], bool] | None = None,
    with_diagnosis: bool = False,
    edge: Edge | None = None,
) -> StudyRun:
    """Train ``cfg`` as run ``run_id`` of the study, keep its sample, and judge it (by ``cfg.guards``:
    the study's, as ``studies.binding`` builds every config). ``with_diagnosis``: a run that diverged is
    replayed for its diagnosis (``trainer.diagnosis_replay``; ``edge``: the lr at which the study
    measured training to break, when it has), which the verdict carries; a healthy run pays nothing for
    it. Trials, validation seeds, margin rungs and the lr probe ask for it; off for the transfer check's
    long runs, whose record has no place for it yet, so they do not pay for a replay nobody reads."""
    hooks = RunHooks(
        on_step=on_step, on_eval=on_eval, on_rung=on_rung, telemetry=setup.paths.telemetry, run_id=run_id
    )
    result = train(cfg, setup.data, device=setup.device, plan=plan, hooks=hooks)
    save_sample(setup.paths.sample(run_id), result)
    verdict = judge(result, cfg.guards, warmup_steps=cfg.warmup_steps)
    if with_diagnosis and verdict.divergence is not None and not plan.heals:
        replay = ReplayPlan(lr_schedule=plan.lr_schedule, edge=edge)
        found = diagnose(cfg, setup.data, verdict.divergence, device=setup.device, plan=replay)
        verdict = dataclasses.replace(verdict, diagnosis=found)
    return StudyRun(result, verdict)
