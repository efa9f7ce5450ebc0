"""fp16 headroom: the pure trend and warning on hand-made series, the meter's hooks on a real model, and
the two per-step figures in the telemetry of a real (tiny) run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from corpus_fixture import cache_env, corpus_paths, train_data  # noqa: F401  (pytest fixtures)

from trainer.config import TrainConfig
from trainer.data import TrainData
from trainer.headroom import FP16_MAX, Crossing, first_crossing, headroom, run_crossing, trend_crossing
from trainer.hooks import RunHooks
from trainer.loop import build_model, train
from trainer.peaks import PeakMeter
from trainer.results import StepMetrics
from trainer.telemetry import STEP_METRICS, step_series
from tts_model.config import model_config
from tts_model.model import TransformerTTS


def test_headroom_is_doublings_left_below_fp16s_largest() -> None:
    assert headroom(FP16_MAX) == 0.0
    assert headroom(FP16_MAX / 8) == pytest.approx(3.0)
    assert headroom(2 * FP16_MAX) == pytest.approx(-1.0)
    assert headroom(0.0) == math.inf
    assert math.isnan(headroom(math.inf)) and math.isnan(headroom(math.nan))


def _growing(steps: int, *, start: float, per_step: float) -> list[float]:
    """A max growing by a factor per step: headroom falls in a straight line."""
    return [start * 2 ** (per_step * s) for s in range(1, steps + 1)]


def test_a_trend_that_reaches_zero_inside_the_horizon_names_its_step() -> None:
    # headroom log2(65504 / 64) = 10 at step 0, falling 0.05 a step: 0 at step 200.
    peaks = _growing(100, start=64.0, per_step=0.05)
    steps = list(range(1, 101))
    assert trend_crossing(steps, peaks, horizon=300) == (200, True)
    assert trend_crossing(steps, peaks, horizon=199) is None  # past the run's end: no warning
    flat = [64.0] * 100
    assert trend_crossing(steps, flat, horizon=10**6) is None
    shrinking = list(reversed(peaks))
    assert trend_crossing(steps, shrinking, horizon=10**6) is None


def test_the_trend_reads_the_second_half_only() -> None:
    """Early steps grow fast (the model calibrating) and then settle: a fit through all of them would
    warn about a run that has stopped growing."""
    steps = list(range(1, 201))
    peaks = _growing(100, start=16.0, per_step=0.08) + [16.0 * 2**8] * 100
    assert trend_crossing(steps, peaks, horizon=10**6) is None
    assert trend_crossing(steps[:100], peaks[:100], horizon=10**6) is not None


def test_the_trend_ignores_the_warmup_where_the_lr_still_rises() -> None:
    """A max that grows fast while the lr ramps up and slowly at peak lr: the ramp's pace would warn of
    a crossing at step ~180; at peak lr the line reaches 0 only past step 1,000."""
    steps = list(range(1, 161))
    peaks = _growing(100, start=64.0, per_step=0.05) + [64.0 * 2**5 * 2 ** (0.004 * s) for s in range(1, 61)]
    assert trend_crossing(steps, peaks, horizon=1000) is not None  # the ramp's pace in the fitted half
    assert trend_crossing(steps, peaks, horizon=1000, after=100) is None
    assert trend_crossing(steps, peaks, horizon=10**4, after=100)[0] > 1000
    found = first_crossing(steps, {"attn_logit_max": peaks}, horizon=1000, after=100)
    assert found is None


def test_a_recorded_overflow_is_a_measured_crossing() -> None:
    steps = list(range(1, 21))
    peaks = [100.0] * 15 + [70000.0] + [100.0] * 4
    assert trend_crossing(steps, peaks, horizon=20) == (16, False)
    assert trend_crossing(steps[:5], peaks[:5], horizon=20) is None  # too few points for a trend


def test_the_warning_names_the_tensor_and_the_step() -> None:
    steps = list(range(1, 101))
    series = {
        "attn_logit_max": _growing(100, start=64.0, per_step=0.05),  # 0 at step 200
        "activation_max": _growing(100, start=64.0, per_step=0.08),  # 0 at step 125
    }
    found = first_crossing(steps, series, horizon=400)
    assert found == Crossing(metric="activation_max", step=125, projected=True, horizon=400)
    line = found.line()
    assert "Linear / Conv1d outputs" in line and "step 125 of 400" in line and "on course" in line
    metrics = [
        StepMetrics(s, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1e-3, 1.0, False, 0.1, 1.0, a, b)
        for s, a, b in zip(steps, series["attn_logit_max"], series["activation_max"], strict=True)
    ]
    assert run_crossing(metrics, horizon=400) == found
    assert run_crossing(metrics, horizon=120) is None


def _model() -> TransformerTTS:
    torch.manual_seed(0)
    return TransformerTTS(model_config("tiny", prenet_dropout=0.0, dropout=0.0), n_symbols=40).eval()


def _batch() -> tuple[torch.Tensor, ...]:
    text = torch.randint(1, 40, (2, 11))
    mel = torch.randn(2, 30, 80)
    return text, torch.tensor([11, 7]), mel, torch.tensor([30, 21])


def test_the_meter_sees_the_cross_attention_scores_and_every_linear_output() -> None:
    model, batch = _model(), _batch()
    outputs: list[float] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, out: outputs.append(float(out.detach().abs().max())))
        for m in model.modules()
        if isinstance(m, torch.nn.Linear | torch.nn.Conv1d)
    ]
    meter = PeakMeter(model)
    nan = torch.tensor(math.nan)
    with meter.watch():
        model(*batch)
    logit, act = meter.read(nan)
    for h in hooks:
        h.remove()
    assert float(act) == pytest.approx(max(outputs))
    # the scores by hand: the last decoder layer's q.k^T, before the 1/sqrt(d) scale
    attn = model.decoder[-1].cross_attn
    seen: list[float] = []
    h = attn.scores.register_forward_hook(lambda mod, i, out: seen.append(float(out.detach().abs().max())))
    model(*batch)
    h.remove()
    assert 0 < seen[0] <= float(logit) + 1e-6
    # outside watch() nothing is counted (evals, decodes); a closed meter counts nothing at all
    model(*batch)
    assert float(meter.read(nan)[1]) == pytest.approx(float(act))
    meter.close()
    with meter.watch():
        model(*batch)
    assert math.isnan(float(meter.read(nan)[0]))


def test_an_fp16_overflow_shows_as_a_non_finite_scores_figure() -> None:
    """Scaled-up query and key weights push q.k^T past 65,504: under fp16 autocast the figure is not finite
    (nor is the output, downstream); the same model in fp32 measures the finite value past 65,504."""
    model, batch = _model(), _batch()
    with torch.no_grad():
        for block in model.decoder:
            block.cross_attn.q.weight.mul_(300.0)
            block.cross_attn.kv.weight.mul_(300.0)
    meter = PeakMeter(model)
    nan = torch.tensor(math.nan)
    with meter.watch():
        model(*batch)
    fp32 = float(meter.read(nan)[0])
    assert math.isfinite(fp32) and fp32 > FP16_MAX and headroom(fp32) < 0
    with torch.autocast("cpu", dtype=torch.float16), meter.watch():
        out = model(*batch)
    assert not math.isfinite(float(meter.read(nan)[0]))  # Inf, or NaN where +Inf and -Inf met in a sum
    assert not torch.isfinite(out.mel_after).all()


def test_every_step_keeps_both_figures_in_the_telemetry(train_data: TrainData, tmp_path: Path) -> None:  # noqa: F811
    assert {"attn_logit_max", "activation_max"} <= set(STEP_METRICS)
    cfg = TrainConfig(model_size="tiny", batch_size=4, max_steps=4, eval_every=1000, lr=1e-3, warmup_steps=2)
    db = tmp_path / "t.db"
    steps: list[StepMetrics] = []
    train(cfg, train_data, device=torch.device("cpu"), hooks=RunHooks(on_step=steps.append, telemetry=db))
    for metric in ("attn_logit_max", "activation_max"):
        series = step_series(db, "run", metric)
        assert [s for s, _ in series] == [1, 2, 3, 4]
        assert all(math.isfinite(v) and 0 < v < FP16_MAX for _, v in series)
        assert [v for _, v in series] == [getattr(m, metric) for m in steps]
    # the figures are the model's own: the same model's first forward, measured apart, gives the same max
    assert steps[0].activation_max > 1.0 and steps[0].attn_logit_max > 0.0
    assert isinstance(build_model(cfg, train_data), TransformerTTS)


def test_a_run_past_fp16s_range_says_so_once(train_data: TrainData) -> None:  # noqa: F811
    """lr 0.1 without warmup: the activations pass 65,504 within a few steps (fp32 holds them); the run
    warns once, naming the tensor and the step, and its result keeps the crossing."""
    warnings: list[str] = []
    cfg = TrainConfig(model_size="tiny", batch_size=4, max_steps=8, eval_every=4, lr=0.1, warmup_steps=0)
    hooks = RunHooks(warn=warnings.append)
    result = train(cfg, train_data, device=torch.device("cpu"), hooks=hooks)
    crossing = result.fp16_crossing
    assert crossing is not None and not crossing.projected and 1 <= crossing.step <= 8
    assert [w for w in warnings if w.startswith("fp16 headroom")] == [crossing.line()]
    assert f"at step {crossing.step} of 8" in crossing.line()
    quiet: list[str] = []
    calm = TrainConfig(model_size="tiny", batch_size=4, max_steps=8, eval_every=4, lr=1e-4, warmup_steps=0)
    assert (
        train(calm, train_data, device=torch.device("cpu"), hooks=RunHooks(warn=quiet.append)).fp16_crossing
        is None
    )
    assert not any(w.startswith("fp16 headroom") for w in quiet)
