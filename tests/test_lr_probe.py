"""The lr range test: its schedule, its smoothed-loss marker, and the trainer hook that drives the lr.

The full probe (`search.py --lr-probe`) runs in tests/test_report.py; here the pieces are pinned.
"""

from __future__ import annotations

import math

import pytest
import torch

from studies.evidence.lr_probe import END_LR, START_LR, min_loss_lr, probe_lr
from tests.corpus_fixture import cache_env, corpus_paths, subset, train_data  # noqa: F401  (fixtures)
from trainer.config import apply_overrides
from trainer.data import TrainData
from trainer.hooks import RunHooks
from trainer.loop import RunPlan, StepMetrics, train
from trainer.presets import preset


def test_probe_lr_rises_geometrically_from_start_to_end() -> None:
    steps = 81
    lrs = [probe_lr(s, steps) for s in range(1, steps + 1)]
    assert lrs[0] == pytest.approx(START_LR) and lrs[-1] == pytest.approx(END_LR)
    ratios = {round(b / a, 9) for a, b in zip(lrs, lrs[1:], strict=False)}
    assert len(ratios) == 1 and ratios.pop() == pytest.approx(10 ** (8 / 80))


def test_min_loss_lr_stops_at_the_first_nonfinite_loss() -> None:
    lrs = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    losses = [5.0, 4.0, 2.0, 1.0, 3.0, math.nan]
    assert min_loss_lr(lrs, losses) in (1e-3, 1e-2)  # smoothing lags the minimum by a step at most
    assert min_loss_lr([1e-6, 1e-5], [math.nan, 1.0]) is None
    assert min_loss_lr([], []) is None


def test_train_follows_an_external_lr_schedule_until_a_guard_fires(train_data: TrainData) -> None:  # noqa: F811
    """The hook replaces the config's schedule; trial mode still stops at the divergence verdict."""
    data = subset(train_data, 8)
    cfg = apply_overrides(
        preset("basic"),
        {"model_size": "tiny", "max_steps": 40, "eval_every": 40, "warmup_steps": 0, "scheduler": "constant"},
        where="test",
    )
    seen: list[StepMetrics] = []
    torch.manual_seed(0)
    result = train(
        cfg,
        data,
        device=torch.device("cpu"),
        plan=RunPlan(lr_schedule=lambda step: 10.0**step),  # absurd on purpose: it must blow up soon
        hooks=RunHooks(on_step=seen.append),
    )
    assert [m.lr for m in seen] == [10.0**m.step for m in seen]
    assert result.verdict is not None and result.steps < 40 and not result.evals
