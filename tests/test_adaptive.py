from __future__ import annotations

import math
import random

import pytest
import torch

from trainer.adaptive import FACTOR_MAX, FACTOR_MIN, factor_for, initial_mean, stored_mean, update

CPU = torch.device("cpu")


def t(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def seed_rule(mean: float | None, loss: float, momentum: float) -> tuple[float | None, float]:
    """The seed's rule in Python floats, as written: the reference the device version must equal."""
    if not math.isfinite(loss):
        return mean, 1.0
    mean = loss if mean is None else momentum * mean + (1.0 - momentum) * loss
    ratio = loss / mean if mean > 0.0 else 1.0
    return mean, min(max(0.5 + 0.5 * math.tanh(ratio - 1.0), FACTOR_MIN), FACTOR_MAX)


def test_first_step_starts_the_mean_at_the_loss_and_sits_at_the_floor():
    mean, factor = update(initial_mean(None, CPU), t(4.0), 0.99)
    assert float(mean) == 4.0
    assert float(factor) == FACTOR_MIN  # tanh(0) = 0 -> 0.5, clipped up to 0.7


def test_mean_is_an_ema_with_momentum():
    mean, _ = update(initial_mean(2.0, CPU), t(4.0), 0.9)
    assert float(mean) == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)


def test_factor_never_exceeds_one_as_defined_by_the_seed():
    ratios = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 10.0, 1e6]
    one = torch.tensor(1.0, dtype=torch.float64)
    factors = [float(factor_for(torch.tensor(r, dtype=torch.float64), one)) for r in ratios]
    assert all(FACTOR_MIN <= f <= 1.0 for f in factors)  # the 1.3 clip is never reached
    assert factors[ratios.index(10.0)] < 1.0  # reaches 1.0 only where float tanh rounds to 1 (ratio ~20)
    assert factors[ratios.index(1.0)] == FACTOR_MIN
    assert factors[ratios.index(2.0)] == pytest.approx(0.5 + 0.5 * math.tanh(1.0))


def test_steady_loss_keeps_the_weight_at_seven_tenths():
    mean = initial_mean(None, CPU)
    for _ in range(200):
        mean, factor = update(mean, t(3.0), 0.99)
    assert float(factor) == FACTOR_MIN


def test_non_finite_loss_leaves_the_mean_alone():
    for start in (2.0, None):
        mean = initial_mean(start, CPU)
        for bad in (float("nan"), float("inf")):
            new_mean, factor = update(mean, t(bad), 0.99)
            assert stored_mean(float(new_mean)) == start and float(factor) == 1.0


def test_device_rule_is_the_seeds_float_rule():
    """The loop computes the weight on the device; the loss curve must be the one the Python rule gives:
    the mean bit for bit, the float32 weight that multiplies the loss bit for bit. Only torch's tanh may
    round the last bit of a double differently from the C library's, so the float64 factor is compared
    to 1e-15 (it reaches the loss rounded to float32)."""
    rng = random.Random(0)
    losses = [rng.uniform(0.5, 4.0) for _ in range(300)] + [20.0, 80.0, float("nan"), 3.0, 60.0]
    base_weight = 2.5
    mean_t, mean_f = initial_mean(None, CPU), None
    unclipped = 0
    for loss in losses:
        loss32 = t(loss)
        mean_t, factor_t = update(mean_t, loss32, 0.99)
        mean_f, factor_f = seed_rule(mean_f, float(loss32), 0.99)
        assert stored_mean(float(mean_t)) == mean_f
        assert float(factor_t) == pytest.approx(factor_f, rel=1e-15, abs=0.0)
        # The loop multiplies the float32 loss by (base * factor).float(); a Python float is rounded the same way.
        assert float((base_weight * factor_t).float()) == float(t(base_weight * factor_f))
        unclipped += FACTOR_MIN < factor_f < 1.0
    assert unclipped >= 3  # the jumps left the floor: the tanh branch was compared too


def test_mean_round_trips_through_a_checkpoint_float():
    mean, _ = update(initial_mean(None, CPU), t(2.5), 0.99)
    stored = stored_mean(float(mean))
    assert isinstance(stored, float) and float(initial_mean(stored, CPU)) == stored
    assert stored_mean(float(initial_mean(None, CPU))) is None
