from __future__ import annotations

import math

import pytest

from trainer.config import TrainConfig, with_overrides
from trainer.schedules import COSINE_FLOOR, forward_sum_share, lr_at, lr_factor, prior_strength


def test_noam_reaches_peak_at_end_of_warmup_then_inverse_sqrt():
    cfg = TrainConfig(lr=1e-3, warmup_steps=1000, scheduler="noam")
    assert lr_at(1, cfg) == pytest.approx(1e-6)
    assert lr_at(500, cfg) == pytest.approx(5e-4)
    assert lr_at(1000, cfg) == pytest.approx(1e-3)
    assert lr_at(4000, cfg) == pytest.approx(1e-3 * math.sqrt(1000 / 4000))
    peak_step = max(range(1, 5000), key=lambda s: lr_at(s, cfg))
    assert peak_step == 1000


def test_noam_is_continuous_around_the_peak():
    before = lr_factor(999, warmup=1000, scheduler="noam")
    after = lr_factor(1001, warmup=1000, scheduler="noam")
    assert before == pytest.approx(after, rel=2e-3)


def test_noam_without_warmup_peaks_at_step_one_and_decays():
    assert lr_factor(1, warmup=0, scheduler="noam") == 1.0
    assert lr_factor(100, warmup=0, scheduler="noam") == pytest.approx(0.1)
    assert lr_factor(100, warmup=0, scheduler="noam") == lr_factor(100, warmup=1, scheduler="noam")


def test_constant_warms_up_then_stays_flat():
    assert lr_factor(1, warmup=4, scheduler="constant") == 0.25
    assert [lr_factor(s, warmup=4, scheduler="constant") for s in (4, 5, 10_000)] == [1.0, 1.0, 1.0]
    assert lr_factor(1, warmup=0, scheduler="constant") == 1.0


def test_cosine_warms_up_then_decays_to_the_floor():
    kw = {"warmup": 100, "scheduler": "cosine", "total_steps": 1100}
    assert lr_factor(50, **kw) == 0.5
    assert lr_factor(100, **kw) == 1.0
    assert lr_factor(600, **kw) == pytest.approx(COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5)
    assert lr_factor(1100, **kw) == pytest.approx(COSINE_FLOOR)
    assert lr_factor(5000, **kw) == pytest.approx(COSINE_FLOOR)
    values = [lr_factor(s, **kw) for s in range(100, 1101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_cosine_takes_total_steps_from_max_steps():
    cfg = TrainConfig(lr=1.0, warmup_steps=0, scheduler="cosine", max_steps=200)
    assert lr_at(200, cfg) == pytest.approx(COSINE_FLOOR)
    assert lr_at(200, cfg, total_steps=400) == pytest.approx(COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5)
    with pytest.raises(ValueError, match="total_steps"):
        lr_at(10, TrainConfig(scheduler="cosine"))


def test_bad_inputs():
    with pytest.raises(ValueError, match="from 1"):
        lr_factor(0, warmup=10, scheduler="noam")
    with pytest.raises(ValueError, match="unknown scheduler"):
        lr_factor(20, warmup=10, scheduler="step")


@pytest.mark.parametrize("scheduler", ["noam", "cosine", "constant"])
def test_all_schedules_are_positive_and_never_exceed_the_peak(scheduler):
    for warmup in (0, 1, 7, 300):
        for step in (1, 2, 7, 299, 300, 301, 1000, 10**6):
            f = lr_factor(step, warmup=warmup, scheduler=scheduler, total_steps=1000)
            assert 0.0 < f <= 1.0


def test_prior_strength_is_whole_then_fades_then_gone():
    cfg = TrainConfig(alignment_loss="prior", prior_anneal_start=100, prior_anneal_end=300)
    strengths = [prior_strength(s, cfg) for s in (1, 100, 150, 200, 299, 300, 10_000)]
    assert strengths == pytest.approx([1.0, 1.0, 0.75, 0.5, 0.005, 0.0, 0.0])
    # Start == end: whole, then gone at once; the other forms never have it.
    assert [prior_strength(s, with_overrides(cfg, prior_anneal_start=300)) for s in (299, 300)] == [1.0, 0.0]
    assert prior_strength(1, with_overrides(cfg, alignment_loss="kl")) == 0.0
    assert prior_strength(1, with_overrides(cfg, prior_anneal_start=0, prior_anneal_end=100)) == 0.99


def test_the_forward_sum_loss_fades_with_the_prior_to_its_final_share():
    cfg = TrainConfig(
        alignment_loss="prior", prior_anneal_start=100, prior_anneal_end=300, forward_sum_final_share=0.2
    )
    shares = [forward_sum_share(s, cfg) for s in (1, 100, 200, 300, 10_000)]
    assert shares == pytest.approx([1.0, 1.0, 0.6, 0.2, 0.2])
    # 1.0, the default: the weight holds for the whole run, as before the knob
    assert {
        forward_sum_share(s, with_overrides(cfg, forward_sum_final_share=1.0)) for s in (1, 200, 10_000)
    } == {1.0}
