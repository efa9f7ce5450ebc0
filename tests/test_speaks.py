""" "speaks" on real models: an untrained model does not, a short overfit run on 4 utterances does on them,
and the measure travels through EvalMetrics (telemetry names, checkpoints old and new).

The overfit run is the cheapest model that really speaks: train and validation are the same 4 shortest
utterances of the small corpus (94-114 frames). Measured (seed 0, one thread, decodes every 50 steps):
decode ratio 0.97 at step 50, 0.71 at 100 (right length, a smear), 0.47 at 150 (first under the 0.5 bar),
0.35 at 200, 0.17 at 250, 0.15 at 300. This test's run (evals at 100, 200, 250): 0.71, 0.37, 0.18 in
19.5 s wall on a busy 2-core machine (the file: 22 s). So it does not speak at step 100 and does at step
250, each with a margin of 0.2 or more to the 0.5 threshold.
"""

from __future__ import annotations

import dataclasses
import math
import time

import pytest
import torch
from corpus_fixture import cache_env, corpus_paths, subset, train_data  # noqa: F401  (pytest fixtures)

from trainer.config import GuardConfig, TrainConfig
from trainer.data import TrainData
from trainer.evaluate import DecodeMetrics, EvalMetrics, evaluate
from trainer.hooks import RunHooks
from trainer.loop import RunPlan, build_model, train
from trainer.run_state import eval_from_dict
from trainer.speech import speak_failures

UTTERANCES = 4
STEPS = 250
CFG = TrainConfig(
    model_size="tiny",
    batch_size=UTTERANCES,
    max_steps=STEPS,
    eval_every=100,  # evals (each with a decode, in full mode) at steps 100, 200 and 250
    lr=3e-3,
    warmup_steps=30,
    scheduler="constant",
    grad_clip=1.0,
    alignment_loss="kl",
    seed=0,
)


def _untrained_eval(data: TrainData, *, stop_bias: float | None = None) -> EvalMetrics:
    torch.manual_seed(0)
    model = build_model(CFG, data)
    if stop_bias is not None:
        with torch.no_grad():
            model.stop_head.weight.zero_()
            model.stop_head.bias.fill_(stop_bias)
    r = model.cfg.reduction_factor
    batches = data.val_batches(8, r)
    cpu = torch.device("cpu")
    ev, _ = evaluate(model, batches, data.decode_examples(3), step=0, reduction_factor=r, device=cpu)
    return ev


def test_decode_examples_carry_their_anchors(train_data: TrainData) -> None:  # noqa: F811
    refs = train_data.decode_examples(3)
    assert len(refs) == 3 and all(r.anchors is not None for r in refs)
    for r in refs:
        assert 0.0 < r.anchors.same_words < 0.4 * r.anchors.constant, r.anchors


@pytest.mark.parametrize("stop_bias", [None, -20.0])  # as initialised; a stop head that never fires
def test_an_untrained_model_does_not_speak(train_data: TrainData, stop_bias: float | None) -> None:  # noqa: F811
    ev = _untrained_eval(train_data, stop_bias=stop_bias)
    d = ev.decode
    assert d is not None and len(d.per_sentence) == 3
    print(f"\nuntrained (stop bias {stop_bias}): {speak_failures(d.measure, GuardConfig())}")
    assert not d.speaks
    assert d.ratio > 0.6 and d.walk < 0.3  # measured: ratio 1.3-1.6 and walk <= 0.11 (stops at once)
    row = ev.as_dict()
    assert row["speaks"] == 0.0 and row["decode_ratio"] == pytest.approx(d.ratio)


@pytest.fixture(scope="module")
def overfit(train_data: TrainData) -> tuple[list[EvalMetrics], float]:  # noqa: F811
    data = subset(train_data, UTTERANCES)
    evals: list[EvalMetrics] = []

    def on_eval(ev: EvalMetrics, _sample: object) -> bool:
        evals.append(ev)
        return False

    start = time.perf_counter()
    hooks = RunHooks(on_eval=on_eval, warn=lambda _: None)
    result = train(CFG, data, device=torch.device("cpu"), plan=RunPlan(mode="full"), hooks=hooks)
    seconds = time.perf_counter() - start
    assert result.steps == STEPS and not result.recoveries and result.verdict is None
    return evals, seconds


def test_a_short_overfit_run_speaks_on_its_utterances(overfit) -> None:
    evals, seconds = overfit
    assert [ev.step for ev in evals] == [100, 200, 250]
    curve = ", ".join(
        f"step {ev.step}: ratio {ev.decode.ratio:.2f} walk {ev.decode.walk:.2f}" for ev in evals
    )
    print(f"\noverfit {UTTERANCES} utterances, {STEPS} steps in {seconds:.1f} s: {curve}")
    early, last = evals[0].decode, evals[-1].decode
    assert not early.speaks and early.ratio > 0.6, speak_failures(early.measure, GuardConfig())
    assert last.speaks, speak_failures(last.measure, GuardConfig())
    assert last.ratio < 0.35 and last.stop_rate == 1.0
    assert evals[-1].as_dict()["speaks"] == 1.0


def test_evals_from_checkpoints_old_and_new_load(overfit) -> None:
    evals, _ = overfit
    ev = evals[-1]
    again = eval_from_dict(dataclasses.asdict(ev))  # what a checkpoint stores, then loads
    assert again == ev and again.decode.speaks and again.decode.ratio == ev.decode.ratio
    old = dataclasses.asdict(ev)
    old["decode"] = {"sentences": 3, "stop_rate": 1.0, "length_ratio": 1.1, "dtw": 2.3}  # before the measure
    loaded = eval_from_dict(old).decode
    assert loaded == DecodeMetrics(sentences=3, stop_rate=1.0, length_ratio=1.1, dtw=2.3)
    assert not loaded.speaks and math.isnan(loaded.ratio)
    row = eval_from_dict(old).as_dict()
    assert row["speaks"] == 0.0 and math.isnan(row["decode_ratio"]) and row["decode_dtw"] == 2.3
