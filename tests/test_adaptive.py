from __future__ import annotations

import math
import pickle

import pytest

from trainer.adaptive import FACTOR_MIN, AdaptiveState, factor_for, update


def test_first_step_starts_the_mean_at_the_loss_and_sits_at_the_floor():
    state, factor = update(AdaptiveState(), 4.0, 0.99)
    assert state.mean == 4.0
    assert factor == FACTOR_MIN  # tanh(0) = 0 -> 0.5, clipped up to 0.7


def test_mean_is_an_ema_with_momentum():
    state, _ = update(AdaptiveState(2.0), 4.0, 0.9)
    assert state.mean == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)


def test_factor_never_exceeds_one_as_defined_by_the_seed():
    ratios = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 10.0, 1e6]
    factors = [factor_for(r, 1.0) for r in ratios]
    assert all(FACTOR_MIN <= f <= 1.0 for f in factors)  # the 1.3 clip is never reached
    assert factor_for(10.0, 1.0) < 1.0  # reaches 1.0 only where float tanh rounds to 1 (ratio ~20)
    assert factor_for(1.0, 1.0) == FACTOR_MIN
    assert factor_for(2.0, 1.0) == pytest.approx(0.5 + 0.5 * math.tanh(1.0))


def test_steady_loss_keeps_the_weight_at_seven_tenths():
    state = AdaptiveState()
    for _ in range(200):
        state, factor = update(state, 3.0, 0.99)
    assert factor == FACTOR_MIN


def test_non_finite_loss_leaves_the_state_alone():
    state = AdaptiveState(2.0)
    for bad in (float("nan"), float("inf")):
        assert update(state, bad, 0.99) == (state, 1.0)


def test_state_pickles_and_is_a_float():
    state, _ = update(AdaptiveState(), 2.5, 0.99)
    assert pickle.loads(pickle.dumps(state)) == state
    assert AdaptiveState(state.mean) == state and isinstance(state.mean, float)


def test_loop_alias():
    from trainer.adaptive import update_adaptive

    assert update_adaptive is update
