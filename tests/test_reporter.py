"""The reporter: a foreign trainer's numbers through the same guards, the same judge, the same record.

Hand-written streams, as the guards' own tests feed them: each guard fires on its signal and is off
(said once, kept in the record) without it; a finished foreign run without a decode or an alignment is
stable, never no-stop or unaligned; a diverged one is PRUNED and infeasible.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from optuna.trial import TrialState

from studies.record_keys import C_DIVERGED, C_NO_STOP, C_UNALIGNED
from studies.scoring import DIVERGED_VIOLATION, record_of
from trainer.config import GuardConfig
from trainer.judge import Outcome, judge
from trainer.reporter import Diverged, Pruned, Reporter, ReportError, diagonality_of

GUARDS = GuardConfig(explosion_min_steps=10, spike_min_steps=10, ceiling_min_steps=10, collapse_min_steps=40)


def run(reporter: Reporter, steps: int, *, eval_every: int = 10, **per_step) -> None:
    """Report `steps` healthy steps (loss falling from 3, grad norm ~1) and an eval every `eval_every`;
    `per_step` values override (a callable of the step, or a constant)."""
    for s in range(1, steps + 1):
        values = {"loss": 3.0 - 0.01 * s + 0.01 * (s % 3)}
        values |= {k: v(s) if callable(v) else v for k, v in per_step.items()}
        evals = {k[5:]: values.pop(k) for k in list(values) if k.startswith("eval_")}
        reporter.step(**values)
        if s % eval_every == 0:
            reporter.eval(metric=2.0 - 0.001 * s, **evals)


def test_a_finished_foreign_run_without_decode_or_alignment_is_stable_and_feasible() -> None:
    notes: list[str] = []
    r = Reporter(GUARDS, note=notes.append)
    run(r, 50, grad_norm=1.0)
    verdict = judge(r.result(), GUARDS)
    assert (
        verdict.outcome == Outcome.STABLE and verdict.outcome != Outcome.NO_STOP
    )  # the project's trainer would be no-stop
    assert verdict.guards_off == ("ceiling", "collapse", "aligned", "decode")
    assert math.isnan(verdict.unaligned) and math.isnan(verdict.no_stop)
    record = record_of(verdict, r.result().summary)
    assert record.state == TrialState.COMPLETE and record.feasible and record.value == pytest.approx(1.95)
    assert record.constraints == {C_DIVERGED: -1.0}  # no constraint for a check that was off
    assert record.guards_off == verdict.guards_off and record.diagonality is None
    assert len(notes) == 2 and "ceiling (no mel; the spike guard watches the loss)" in notes[0]
    assert "collapse and the aligned check" in notes[1]


def test_a_diverged_run_raises_once_for_good_and_is_pruned_and_infeasible() -> None:
    r = Reporter(GUARDS, note=lambda _: None)
    with pytest.raises(Diverged) as info:
        run(r, 50, grad_norm=lambda s: 500.0 if s == 33 else 1.0)
    assert info.value.verdict.kind == "explosion" and info.value.verdict.step == 33
    with pytest.raises(Diverged):  # a loop that swallowed it is stopped again at its next report
        r.step(loss=1.0, grad_norm=1.0)
    verdict = judge(r.result(), GUARDS)
    record = record_of(verdict, r.result().summary)
    assert verdict.outcome == "diverged:explosion" and r.result().steps == 33
    assert record.state == TrialState.PRUNED and not record.feasible
    assert record.constraints == {C_DIVERGED: DIVERGED_VIOLATION}
    assert record.divergence is not None and record.divergence.step == 33


def test_without_grad_norm_there_is_no_explosion_guard_and_the_run_is_judged_earlier() -> None:
    r = Reporter(GUARDS, note=lambda _: None)
    run(r, 30)  # no grad norm at all
    assert "explosion" in r.guards_off
    late = GuardConfig(explosion_min_steps=500, spike_min_steps=10, ceiling_min_steps=10)
    pruned = Reporter(late, note=lambda _: None, on_eval=lambda ev: ev.step >= 20)
    with pytest.raises(Pruned):
        run(pruned, 30)
    # The explosion guard's 500 steps are not waited for: it is off, so the run is judged by step 20.
    assert judge(pruned.result(), late).outcome == "pruned"
    with_norm = Reporter(late, note=lambda _: None, on_eval=lambda ev: ev.step >= 20)
    with pytest.raises(Pruned):
        run(with_norm, 30, grad_norm=1.0)
    assert judge(with_norm.result(), late).outcome == Outcome.UNJUDGED


def test_mel_feeds_spike_and_ceiling_and_without_it_the_spike_guard_watches_the_loss() -> None:
    r = Reporter(GUARDS, note=lambda _: None)
    with pytest.raises(Diverged) as info:
        run(r, 50, mel=lambda s: 12.0 if s >= 20 else 2.0 - 0.01 * s)
    assert info.value.verdict.kind == "spike" and info.value.verdict.step == 20
    r = Reporter(GUARDS, note=lambda _: None)
    with pytest.raises(Diverged) as info:
        run(r, 50, mel=lambda s: 12.0 if s >= 20 else 11.0)  # high but flat: only the ceiling sees it
    assert info.value.verdict.kind == "ceiling" and info.value.verdict.step == 11
    r = Reporter(GUARDS, note=lambda _: None)
    run(r, 50, loss=11.0)  # no mel: a flat loss of 11 breaks no ceiling (off) ...
    assert "ceiling" in r.guards_off
    r = Reporter(GUARDS, note=lambda _: None)
    with pytest.raises(Diverged) as info:
        run(r, 50, loss=lambda s: 30.0 if s == 25 else 3.0 + 0.01 * (s % 3))  # ... but a jump is a spike
    assert info.value.verdict.kind == "spike" and info.value.verdict.step == 25


def test_a_loss_scale_that_drops_marks_a_skip_not_a_divergence() -> None:
    r = Reporter(GUARDS, note=lambda _: None)
    run(
        r,
        30,
        grad_norm=lambda s: math.inf if s == 15 else 1.0,
        loss_scale=lambda s: 2.0**15 if s >= 15 else 2.0**16,
    )
    assert r.result().verdict is None and r.result().summary.scaler_skips == 1
    r = Reporter(GUARDS, note=lambda _: None)  # without a loss scale an inf norm is a divergence
    with pytest.raises(Diverged) as info:
        run(r, 30, grad_norm=lambda s: math.inf if s == 15 else 1.0)
    assert info.value.verdict.kind == "nonfinite" and info.value.verdict.step == 15


def test_an_overflow_on_the_first_step_is_a_skip_too() -> None:
    # No scale before step 1 to see a drop against: a finite loss with overflowed gradients is what the
    # scaler skips (it starts at 2^16); a non-finite loss there is still the seed's NaN.
    r = Reporter(GUARDS, note=lambda _: None)
    run(r, 30, grad_norm=lambda s: math.inf if s == 1 else 1.0, loss_scale=lambda s: 2.0**15)
    assert r.result().verdict is None and r.result().summary.scaler_skips == 1
    r = Reporter(GUARDS, note=lambda _: None)
    with pytest.raises(Diverged) as info:
        r.step(loss=math.nan, grad_norm=math.inf, loss_scale=2.0**15)
    assert info.value.verdict.kind == "nonfinite" and info.value.verdict.step == 1


def test_alignment_turns_on_collapse_and_the_aligned_check() -> None:
    r = Reporter(GUARDS, note=lambda _: None)
    run(r, 30, grad_norm=1.0, alignment=0.1)
    verdict = judge(r.result(), GUARDS)
    assert verdict.outcome == Outcome.UNALIGNED and verdict.unaligned == pytest.approx(0.2)
    assert "aligned" not in verdict.guards_off
    assert record_of(verdict, r.result().summary).constraints[C_UNALIGNED] == pytest.approx(0.2)
    assert C_NO_STOP not in record_of(verdict, r.result().summary).constraints
    flat = Reporter(GUARDS, note=lambda _: None)
    with pytest.raises(Diverged) as info:
        for s in range(1, 61):
            flat.step(loss=2.0, grad_norm=1.0)
            if s % 10 == 0:
                flat.eval(metric=3.0 if s == 10 else 2.5, alignment=0.19)
    assert info.value.verdict.kind == "collapse" and info.value.verdict.step == 50  # flat over 3 evals


def test_an_attention_matrix_is_scored_like_the_projects() -> None:
    diagonal = np.eye(20)
    uniform = np.full((20, 20), 1 / 20)
    assert diagonality_of(diagonal) == pytest.approx(1.0)
    assert diagonality_of(uniform[None]) == pytest.approx(0.2, abs=0.02)
    r = Reporter(GUARDS, note=lambda _: None)
    r.step(loss=1.0)
    r.eval(metric=1.0, attention=diagonal)
    assert r.result().evals[-1].diagonality == pytest.approx(1.0)


def test_a_signal_that_comes_and_goes_is_the_users_bug_in_one_line() -> None:
    r = Reporter(GUARDS, note=lambda _: None)
    r.step(loss=1.0, mel=2.0)
    with pytest.raises(ReportError, match="step 2 lacks mel, which step 1 reported"):
        r.step(loss=1.0)
    r = Reporter(GUARDS, note=lambda _: None)
    r.step(loss=1.0, step=5)
    with pytest.raises(ReportError, match="must be integers that go up"):
        r.step(loss=1.0, step=5)
    with pytest.raises(ReportError, match="loss must be a number"):
        r.step(loss="nan?")
