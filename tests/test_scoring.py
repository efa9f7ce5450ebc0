"""How a finished trial's free-running decode is scored (the `decode_*` guard knobs change it)."""

from __future__ import annotations

from studies.scoring import shaped_no_stop
from trainer.config import GuardConfig
from trainer.evaluate import DecodeMetrics
from trainer.judge import decode_violation


def violation(d: DecodeMetrics | None, max_ratio: float, max_bad_fraction: float) -> float:
    guards = GuardConfig(decode_length_ratio=max_ratio, decode_max_bad_fraction=max_bad_fraction)
    return decode_violation(d, guards)


def decode(stop_rate: float, ratio: float) -> DecodeMetrics:
    return DecodeMetrics(sentences=3, stop_rate=stop_rate, length_ratio=ratio, dtw=1.0)


def test_all_stopping_at_a_sane_length_is_feasible() -> None:
    assert violation(decode(1.0, 1.1), 2.0, 0.5) <= 0


def test_a_model_that_never_stops_is_infeasible_and_further_off_than_one_that_mostly_stops() -> None:
    never = violation(decode(0.0, 2.2), 2.0, 0.0)
    mostly = violation(decode(2 / 3, 1.5), 2.0, 0.0)
    assert never > mostly > 0


def test_max_bad_fraction_tolerates_a_minority_of_failed_decodes() -> None:
    assert violation(decode(2 / 3, 1.5), 2.0, 0.5) <= 0
    assert violation(decode(1 / 3, 1.5), 2.0, 0.5) > 0


def test_length_ratio_bound_applies_both_ways() -> None:
    assert violation(decode(1.0, 0.3), 2.0, 0.5) > 0
    assert violation(decode(1.0, 0.3), 4.0, 0.5) <= 0
    # Nothing stopped: the length is only the cap, so a pruned trial (no decode) scores the same.
    assert violation(None, 2.0, 0.5) == 0.5
    assert violation(decode(0.0, 2.2), 2.0, 0.5) == 0.5


def test_shaping_ranks_a_stop_head_closer_to_firing_first_and_keeps_feasibility() -> None:
    never = violation(decode(0.0, 2.2), 2.0, 0.5)
    assert (
        shaped_no_stop(never, 0.4) < shaped_no_stop(never, 0.05) < shaped_no_stop(never, float("nan")) + 1e-9
    )
    assert shaped_no_stop(never, 1.0) == never  # a head that fires at the end adds nothing
    feasible = violation(decode(1.0, 1.1), 2.0, 0.5)
    assert shaped_no_stop(feasible, 0.0) == feasible <= 0
    # One stopped sentence of three still ranks above any decode that never stopped, whatever the head says.
    one_of_three = violation(decode(1 / 3, 2.2), 2.0, 0.0)
    assert shaped_no_stop(one_of_three, 0.0) < shaped_no_stop(violation(decode(0.0, 2.2), 2.0, 0.0), 1.0)


def test_half_stopped_still_needs_a_sane_median_length() -> None:
    two = DecodeMetrics(sentences=2, stop_rate=0.5, length_ratio=2.2, dtw=1.0)
    assert violation(two, 2.0, 0.5) > 0
