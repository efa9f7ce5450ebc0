from __future__ import annotations

import dataclasses
import math
import random

import pytest

from trainer.config import GuardConfig
from trainer.guards import (
    StepHistory,
    Verdict,
    check_ceiling,
    check_eval,
    check_explosion,
    check_nonfinite,
    check_spike,
    check_step,
)

NAN, INF = float("nan"), float("inf")
CFG = GuardConfig()


def first_verdict(rows, cfg=CFG, warmup_steps=0):
    """Feed (loss, mel, grad_norm[, skipped]) rows as steps 1.. and return the first verdict."""
    history = StepHistory(cfg)
    for step, row in enumerate(rows, start=1):
        loss, mel, norm, *rest = row
        history.append(step=step, loss=loss, mel=mel, grad_norm=norm, skipped=bool(rest and rest[0]))
        verdict = check_step(history, cfg, warmup_steps=warmup_steps)
        if verdict is not None:
            return verdict
    return None


def healthy(n, *, mel_weight=1.0, norm=1.0, seed=0, start=3.0, end=1.0):
    """A noisy, falling mel loss (10% noise) and noisy norms (x0.5-2 around `norm`), early norms high."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        mel = (start + (end - start) * i / n) * rng.uniform(0.9, 1.1)
        early = 10.0 if i < 20 else 1.0
        rows.append((mel_weight * mel + 0.6, mel, norm * early * rng.uniform(0.5, 2.0)))
    return rows


def test_healthy_noisy_run_never_fires():
    assert first_verdict(healthy(3000)) is None


def test_heavy_weighted_healthy_run_does_not_fire():
    # mel weight 25: pre-clip norms ~25 and a total near 100 are healthy; only the unweighted mel counts.
    assert first_verdict(healthy(3000, mel_weight=25.0, norm=25.0, start=4.0, end=3.5)) is None


@pytest.mark.parametrize(
    ("row", "what"),
    [
        ((NAN, 2.0, 1.0), "loss is nan"),
        ((3.0, INF, 1.0), "unweighted mel loss is inf"),
        ((3.0, 2.0, NAN), "norm"),
    ],
)
def test_nonfinite_fires_at_its_step(row, what):
    verdict = first_verdict(healthy(10) + [row] + healthy(10))
    assert (
        verdict is not None and (verdict.kind, verdict.step) == ("nonfinite", 11) and what in verdict.detail
    )


def test_gradscaler_skips_are_counted_until_they_repeat():
    cfg = GuardConfig(max_consecutive_skips=3)
    skip = (3.0, 2.0, INF, True)
    rows = healthy(150) + [skip] * 3 + healthy(20) + [skip] * 3 + healthy(20)
    assert first_verdict(rows, cfg) is None  # bursts of 3 with recovery in between: counted, not divergence
    verdict = first_verdict(healthy(150) + [skip] * 4, cfg)
    assert verdict is not None and (verdict.kind, verdict.step) == ("nonfinite", 154)
    assert "4 steps in a row" in verdict.detail


def test_nan_loss_diverges_at_its_step_even_when_the_scaler_skipped_it():
    """Under fp16 a non-finite loss is a forward overflow (the seed's NaN): no loss scale cures it, so it
    is a divergence at once, not the first of 17 skips."""
    verdict = first_verdict(healthy(150) + [(NAN, NAN, NAN, True)] + healthy(10))
    assert verdict is not None and (verdict.kind, verdict.step) == ("nonfinite", 151)
    assert verdict.detail == "loss is nan at step 151"


def test_fp16_names_the_forward_overflow():
    history = StepHistory(CFG)
    history.append(step=1, loss=INF, mel=2.0, grad_norm=INF, skipped=False)
    verdict = check_step(history, CFG, fp16=True)
    assert verdict is not None and verdict.detail == "loss is inf at step 1 (forward overflow under fp16)"


def test_a_finite_loss_with_overflowing_gradients_is_a_skip_until_the_limit():
    skip = (3.0, 2.0, INF, True)
    assert first_verdict(healthy(150) + [skip] * CFG.max_consecutive_skips + healthy(10)) is None
    verdict = first_verdict(healthy(150) + [skip] * (CFG.max_consecutive_skips + 1))
    assert verdict is not None and (verdict.kind, verdict.step) == ("nonfinite", 150 + 17)
    assert "GradScaler skipped 17 steps in a row" in verdict.detail


def test_explosion_fires_relative_to_the_runs_own_median():
    rows = healthy(300) + [(2.0, 1.3, 30.0)]
    verdict = first_verdict(rows)
    assert verdict is not None and (verdict.kind, verdict.step) == ("explosion", 301)
    assert "median" in verdict.detail
    assert first_verdict(healthy(300) + [(2.0, 1.3, 10.0)]) is None  # ~10x: a big step, not an explosion


def test_heavy_weighted_norms_do_not_look_like_explosions_but_their_jumps_do():
    heavy = healthy(300, norm=25.0)
    assert first_verdict(heavy + [(40.0, 1.3, 200.0)]) is None
    assert first_verdict(heavy + [(40.0, 1.3, 1000.0)]).kind == "explosion"


def test_explosion_waits_for_min_steps():
    assert first_verdict(healthy(50) + [(2.0, 2.5, 1e4)]) is None


def test_explosion_window_is_bounded():
    cfg = GuardConfig(explosion_window=50)
    history = StepHistory(cfg)
    for step, (loss, mel, norm) in enumerate(healthy(5000), start=1):
        history.append(step=step, loss=loss, mel=mel, grad_norm=norm)
    assert len(history.prev_norms) == 50 and len(history.records) == 51 and history.n_norms == 4999


def test_spike_fires_on_the_unweighted_mel():
    rows = healthy(500) + [(30.0, 8.0, 1.0)]
    verdict = first_verdict(rows)
    assert (
        verdict is not None and (verdict.kind, verdict.step) == ("spike", 501) and "sigma" in verdict.detail
    )


def test_scaled_losses_do_not_fire_spike_and_scaled_spikes_still_do():
    # The spike test is scale-free: the same curve x25 behaves the same (ceiling lifted to isolate it).
    cfg = GuardConfig(mel_ceiling=1e9)
    for scale in (1.0, 25.0):
        rows = [(scale * mel, scale * mel, norm) for _, mel, norm in healthy(500)]
        assert first_verdict(rows, cfg) is None
        assert first_verdict(rows + [(scale * 8.0, scale * 8.0, 1.0)], cfg).kind == "spike"


def test_spike_needs_a_relative_jump_too():
    # A near-constant loss has a tiny variance: +20% is many sigma but not a spike.
    rows = [(1.0, 1.0 + 1e-4 * (i % 3), 1.0) for i in range(300)] + [(1.2, 1.2, 1.0)]
    assert first_verdict(rows) is None
    assert check_spike(10, 5.0, mean=1.0, var=0.01, n_seen=300, cfg=CFG).kind == "spike"
    assert check_spike(10, 5.0, mean=1.0, var=0.01, n_seen=99, cfg=CFG) is None
    assert check_spike(10, NAN, mean=1.0, var=0.01, n_seen=300, cfg=CFG) is None


def test_ceiling_fires_after_warmup_on_the_unweighted_mel():
    rows = [(12.0 * 3, 12.0, 1.0)] * 400
    assert first_verdict(rows, warmup_steps=1000) is None
    verdict = first_verdict(rows, warmup_steps=200)
    assert verdict is not None and (verdict.kind, verdict.step) == ("ceiling", 201)
    assert first_verdict(rows[:100], warmup_steps=0) is None  # ceiling_min_steps
    assert check_ceiling(500, 4.0, warmup_steps=0, cfg=CFG) is None  # total ~100 at weight 25 is fine


def test_check_step_order_nonfinite_first():
    rows = healthy(300) + [(NAN, 50.0, 1e6)]
    assert first_verdict(rows).kind == "nonfinite"


def test_pure_checks_handle_missing_and_nonfinite_norms():
    assert check_explosion(500, None, [1.0] * 200, n_seen=500, cfg=CFG) is None
    assert check_explosion(500, INF, [1.0] * 200, n_seen=500, cfg=CFG) is None
    assert check_explosion(500, 5.0, [0.0] * 200, n_seen=500, cfg=CFG) is None
    kw = {"skipped": False, "consecutive_skips": 0, "cfg": CFG}
    assert check_nonfinite(3, loss=1.0, mel=1.0, grad_norm=None, **kw) is None
    assert check_nonfinite(3, loss=-INF, mel=1.0, grad_norm=None, **kw).kind == "nonfinite"


# (step, val_mel, diagonality)
PLATEAU = [(500, 2.0, 0.10), (1000, 1.98, 0.12), (1500, 1.97, 0.12), (2000, 1.97, 0.11)]


def test_collapse_high_plateau_without_alignment():
    verdict = check_eval(PLATEAU, CFG)
    assert verdict is not None and (verdict.kind, verdict.step) == ("collapse", 2000)
    assert "diagonality 0.11" in verdict.detail


def test_no_collapse_when_aligned_or_too_early():
    aligned = [(s, v, 0.8) for s, v, _ in PLATEAU]
    assert check_eval(aligned, CFG) is None
    assert check_eval(PLATEAU[:3], CFG) is None  # before collapse_min_steps
    assert check_eval([], CFG) is None and check_eval(PLATEAU[-1:], CFG) is None


def test_no_collapse_while_still_learning():
    learning = [(500, 2.0, 0.1), (1000, 1.7, 0.15), (1500, 1.5, 0.2), (2000, 1.35, 0.3), (2500, 1.2, 0.4)]
    assert check_eval(learning, CFG) is None


def test_a_run_that_never_left_the_untrained_level_is_slow_not_collapsed():
    # Measured: lr 1e-6..4e-5 in a quick trial stays within a few % of the untrained model's ~4.0.
    stalled = [(50, 3.97, 0.19), (100, 3.96, 0.19), (150, 3.955, 0.19)]
    cfg = CFG.__class__(collapse_min_steps=150)
    assert check_eval(stalled, cfg).kind == "collapse"  # without a baseline it looks like a plateau
    assert check_eval(stalled, cfg, baseline=4.0) is None
    collapsed = [(50, 3.08, 0.19), (100, 3.06, 0.19), (150, 3.05, 0.19)]  # fitted the mean, then flat
    assert check_eval(collapsed, cfg, baseline=4.0).kind == "collapse"


def test_slow_but_steadily_improving_run_is_not_collapse():
    # Measured on the tiny model: basic's lr 1e-5 in a 150-step quick trial falls 6% in 100 steps.
    slow = [(50, 3.967, 0.19), (100, 3.901, 0.19), (150, 3.715, 0.19)]
    assert check_eval(slow, CFG.__class__(collapse_min_steps=150)) is None
    flat = [(50, 3.08, 0.19), (100, 3.06, 0.19), (150, 3.05, 0.19)]  # lr 3e-2: uniform attention, flat
    assert check_eval(flat, CFG.__class__(collapse_min_steps=150)).kind == "collapse"


def test_a_plateau_whose_attention_is_still_aligning_is_slow_not_collapsed():
    # Measured: basic (lr 1e-5) re-run for 3,000 steps in the quick study's transfer check; a rule on
    # the val mel alone called it collapsed at step 850. Trial 8 (lr 3e-2) is the real thing.
    basic = [(700, 3.239, 0.220), (750, 3.227, 0.227), (800, 3.217, 0.236)]
    basic += [(850, 3.207, 0.247)]
    cfg = CFG.__class__(collapse_min_steps=150)
    assert check_eval(basic, cfg, baseline=3.984) is None
    blind = CFG.__class__(collapse_min_steps=150, collapse_diagonality_rise=0.05)  # the knob decides
    assert check_eval(basic, blind, baseline=3.984).kind == "collapse"
    trial_8 = [(50, 3.068, 0.190), (100, 2.904, 0.190), (150, 2.926, 0.190)]
    assert check_eval(trial_8, cfg, baseline=3.984).kind == "collapse"


def test_collapse_when_learning_stalls_unaligned():
    stalled = [(500, 2.0, 0.1), (1000, 1.5, 0.1), (1500, 1.4, 0.1), (2000, 1.399, 0.1), (2500, 1.398, 0.1)]
    stalled += [(3000, 1.397, 0.1)]
    verdict = check_eval(stalled, CFG)
    assert verdict is not None and verdict.kind == "collapse" and "last 3 evals" in verdict.detail


def test_nonfinite_eval():
    assert check_eval([(500, 2.0, 0.1), (1000, NAN, 0.1)], CFG).kind == "nonfinite"


def test_verdict_is_frozen_and_checked():
    verdict = Verdict(kind="spike", step=3, detail="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.step = 4  # type: ignore[misc]
    with pytest.raises(ValueError, match="unknown verdict kind"):
        Verdict(kind="boom", step=1, detail="")  # type: ignore[arg-type]


def test_guard_defaults_are_sane():
    assert CFG.explosion_factor == 20.0 and CFG.spike_z == 6.0 and CFG.mel_ceiling == 10.0
    assert math.isfinite(CFG.spike_alpha)


def test_check_eval_accepts_objects_and_waits_for_warmup():
    @dataclasses.dataclass
    class Ev:
        step: int
        val_mel: float
        diagonality: float

    objects = [Ev(*e) for e in PLATEAU]
    assert check_eval(objects, CFG).kind == "collapse"
    assert check_eval(PLATEAU, CFG, warmup_steps=3000) is None  # still warming up: slow, not collapsed


def test_default_history_and_warmup_for_ceiling():
    history = StepHistory()
    for step in range(1, 301):
        history.append(step=step, loss=36.0, mel=12.0, grad_norm=1.0)
    assert check_step(history, CFG, warmup_steps=1000) is None
    assert check_step(history, CFG).kind == "ceiling"
