"""Every knob changes the computation: one test per knob shows that the loss or the update differs when
only that knob changes.

The seed shipped three knobs that did nothing (KL weight, label smoothing, Huber): they were parsed,
printed and never passed to the loss. Here each TrainConfig field that should affect training runs the
real loop (tiny model, a few CPU steps) against a base config where the knob is active, and the
meta-test fails as soon as a new field appears without a row in the knob table or a reason to be absent.
The runs are deterministic (tested first), so any difference is the knob's doing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from corpus_fixture import cache_env, corpus_paths, train_data  # noqa: F401  (pytest fixtures)

import trainer.loop as loop
from trainer.config import TrainConfig, with_overrides
from trainer.data import TrainData
from trainer.hooks import RunHooks
from trainer.loss_terms import compute_losses
from tts_model.batching import collate

CPU = torch.device("cpu")
STEPS = 3

# Every knob is active here: lr warms up over 2 steps (so step 1 is at half the peak), the clip is below
# the observed pre-clip norms (~4 at step 1), weight decay is large enough to move weights in 3 steps,
# label smoothing and Huber are on, Huber's delta is below the typical log-mel error (~3 at init).
BASE = TrainConfig(
    model_size="tiny",
    batch_size=4,
    max_steps=STEPS,
    eval_every=1000,
    checkpoint_every=1000,
    lr=1e-3,
    warmup_steps=2,
    scheduler="noam",
    grad_clip=0.5,
    weight_decay=0.1,
    label_smoothing=True,
    label_smoothing_amount=0.1,
    huber_loss=True,
    huber_delta=0.5,
    seed=0,
)
# The adaptive weight only leaves its 0.7 floor when the mel loss rises to >1.42x its running mean (the
# seed's formula, trainer/adaptive.py): a high constant lr without a clip makes it rise within 3 steps.
ADAPTIVE_BASE = with_overrides(
    BASE, adaptive_loss_weights=True, lr=0.1, grad_clip=0.0, warmup_steps=0, scheduler="constant", max_steps=4
)

# The "prior" form with its prior whole at step 1, half at step 2 (the fade runs from step 1 to 3) and gone
# at step 3, so each of its knobs acts inside the 3 steps.
PRIOR_BASE = with_overrides(BASE, alignment_loss="prior", prior_anneal_start=1, prior_anneal_end=3)


@dataclass(frozen=True)
class Knob:
    field: str
    value: Any
    where: str  # "forward": the step-1 loss differs; "update": step 1 is equal, the weights then differ
    base: TrainConfig = BASE


KNOBS = (
    Knob("lr", 3e-3, "update"),
    Knob("weight_decay", 0.5, "update"),
    Knob("grad_clip", 0.25, "update"),
    Knob("warmup_steps", 4, "update"),
    Knob("scheduler", "cosine", "update"),  # noam sqrt(2/3) vs cosine's floor at the last step
    Knob("scheduler", "constant", "update"),
    Knob("mel_weight", 2.0, "forward"),
    Knob("kl_weight", 2.0, "forward"),
    Knob("stop_weight", 0.3, "forward"),
    Knob("stop_pos_weight", 2.0, "forward"),
    Knob("alignment_loss", "guided", "forward"),
    Knob("alignment_width", 0.4, "forward"),
    Knob("alignment_loss", "prior", "forward"),
    Knob("prior_scaling", 2.0, "forward", base=PRIOR_BASE),  # a narrower band on the step-1 scores
    Knob("forward_sum_weight", 0.5, "forward", base=PRIOR_BASE),
    Knob("prior_layers", "alignment", "forward", base=PRIOR_BASE),
    Knob("prior_anneal_start", 2, "update", base=PRIOR_BASE),  # step 2 at the whole prior, not half
    Knob("prior_anneal_end", 4, "update", base=PRIOR_BASE),  # step 2 at 2/3 of the prior, not half
    Knob("forward_sum_final_share", 0.5, "update", base=PRIOR_BASE),  # step 2's loss at 3/4 weight
    Knob("adaptive_loss_weights", True, "forward"),  # x0.7 from step 1
    Knob("adaptive_momentum", 0.5, "update", base=ADAPTIVE_BASE),
    Knob("label_smoothing", False, "forward"),
    Knob("label_smoothing_amount", 0.2, "forward"),
    Knob("huber_loss", False, "forward"),
    Knob("huber_delta", 1.0, "forward"),
    Knob("precision", "bf16", "forward"),  # with Huber on: caught a bf16 backward crash
    Knob("precision", "fp16", "forward"),
    Knob("batch_size", 6, "forward"),
    Knob("length_curriculum_steps", 100, "forward"),  # step 1 on the shortest utterances only
    Knob("seed", 1, "forward"),
    Knob("model_size", "small", "forward"),
    Knob("reduction_factor", 4, "forward"),  # tiny's own is 3
    Knob("norm", "pre", "forward"),
)

# Fields that decide how long a run is and what it writes, not what one step computes. Each is still
# tested where it acts: max_steps/epochs set the run length (and the cosine horizon, seen through
# `scheduler` above), eval/checkpoint fields in tests/test_loop.py and tests/test_checkpoints.py, the
# recovery fields in test_loop.py's self-healing test, guards in tests/test_guards.py.
NON_COMPUTATIONAL = {
    "epochs": "run length",
    "max_steps": "run length",
    "eval_every": "when validation runs",
    "checkpoint_every": "when checkpoints are written",
    "keep_checkpoints": "how many checkpoints are kept",
    "max_recoveries": "full-mode self-healing (test_loop)",
    "recovery_lr_factor": "full-mode self-healing (test_loop)",
    "guards": "divergence thresholds (test_guards, test_loop)",
}


@dataclass(frozen=True)
class Run:
    losses: tuple[float, ...]
    mel_weights: tuple[float, ...]
    lrs: tuple[float, ...]
    weights: dict[str, torch.Tensor]


class _Stop(Exception):
    """Raised from on_step to end a run early: a forward knob needs only its first step."""


def run(cfg: TrainConfig, data: TrainData, *, steps: int | None = None) -> Run:
    """The real loop in trial mode (all `cfg.max_steps`, or the first `steps`); the model is captured as
    the loop builds it, to read its weights."""
    models: list[torch.nn.Module] = []
    log: list[loop.StepMetrics] = []

    def capture(c: TrainConfig, d: TrainData) -> torch.nn.Module:
        models.append(build(c, d))
        return models[-1]

    def on_step(m: loop.StepMetrics) -> None:
        log.append(m)
        if m.step == steps:
            raise _Stop

    build = loop.build_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "build_model", capture)
        try:
            result = loop.train(cfg, data, device=CPU, hooks=RunHooks(on_step=on_step, warn=lambda _: None))
        except _Stop:
            pass
        else:
            assert result.verdict is None, result.verdict
            assert result.steps == cfg.max_steps
    assert len(log) == (steps or cfg.max_steps)
    weights = {k: v.detach().clone() for k, v in models[0].state_dict().items()}
    return Run(
        losses=tuple(m.loss for m in log),
        mel_weights=tuple(m.mel_weight for m in log),
        lrs=tuple(m.lr for m in log),
        weights=weights,
    )


@pytest.fixture(scope="module")
def runs() -> dict[TrainConfig, Run]:
    """Runs by config, so each base runs once for the whole module."""
    return {}


def cached_run(cache: dict[TrainConfig, Run], cfg: TrainConfig, data: TrainData) -> Run:
    if cfg not in cache:
        cache[cfg] = run(cfg, data)
    return cache[cfg]


def weight_distance(a: Run, b: Run) -> float:
    assert a.weights.keys() == b.weights.keys()
    return max(float((a.weights[k].float() - b.weights[k].float()).abs().max()) for k in a.weights)


def test_knob_table_covers_every_train_config_field() -> None:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    tested = {k.field for k in KNOBS}
    assert not tested & NON_COMPUTATIONAL.keys()
    missing = fields - tested - NON_COMPUTATIONAL.keys()
    assert not missing, f"TrainConfig fields without a knob test or a reason to have none: {sorted(missing)}"
    unknown = (tested | NON_COMPUTATIONAL.keys()) - fields
    assert not unknown, f"the knob table names fields TrainConfig no longer has: {sorted(unknown)}"


def test_base_runs_are_reproducible(train_data: TrainData, runs: dict) -> None:  # noqa: F811
    """Without this, 'differs' below could be noise."""
    for base in (BASE, ADAPTIVE_BASE):
        a, b = cached_run(runs, base, train_data), run(base, train_data)
        assert a.losses == b.losses
        assert weight_distance(a, b) == 0.0


@pytest.mark.parametrize("knob", KNOBS, ids=lambda k: f"{k.field}={k.value}")
def test_knob_changes_training(knob: Knob, train_data: TrainData, runs: dict) -> None:  # noqa: F811
    assert getattr(knob.base, knob.field) != knob.value, "the variant must change the knob"
    variant_cfg = with_overrides(knob.base, **{knob.field: knob.value})
    changed = [
        f.name
        for f in dataclasses.fields(TrainConfig)
        if getattr(variant_cfg, f.name) != getattr(knob.base, f.name)
    ]
    assert changed == [knob.field]

    base = cached_run(runs, knob.base, train_data)
    if knob.where == "forward":
        variant = run(variant_cfg, train_data, steps=1)
        assert variant.losses[0] != base.losses[0], f"{knob.field} did not change the step-1 loss"
    else:
        variant = cached_run(runs, variant_cfg, train_data)
        # Same init, same batch, same forward: the knob acts on the update, so step 1 is identical ...
        assert variant.losses[0] == base.losses[0]
        # ... and what the optimizer did is not (a schedule may differ only at the last step, so the
        # weights are the evidence, not the later losses).
        assert weight_distance(base, variant) > 1e-6, f"{knob.field} did not change the weights"


def test_adaptive_momentum_moves_the_mel_weight(train_data: TrainData, runs: dict) -> None:  # noqa: F811
    """The mechanism behind the adaptive_momentum row: the applied mel weight leaves the 0.7 floor
    differently (the seed's formula keeps it at 0.7 x base while the loss falls, see trainer/adaptive.py)."""
    base = cached_run(runs, ADAPTIVE_BASE, train_data)
    variant = cached_run(runs, with_overrides(ADAPTIVE_BASE, adaptive_momentum=0.5), train_data)
    assert base.mel_weights[0] == variant.mel_weights[0] == pytest.approx(0.7)
    assert base.mel_weights != variant.mel_weights
    assert max(base.mel_weights) > 0.7


def test_schedule_knobs_change_the_lr(train_data: TrainData, runs: dict) -> None:  # noqa: F811
    """The lr the loop applied, per step: warmup and scheduler act where the schedule says."""
    base = cached_run(runs, BASE, train_data).lrs
    assert base == pytest.approx((0.5e-3, 1e-3, 1e-3 * (2 / 3) ** 0.5))
    longer = cached_run(runs, with_overrides(BASE, warmup_steps=4), train_data).lrs
    assert longer == pytest.approx((0.25e-3, 0.5e-3, 0.75e-3))
    cosine = cached_run(runs, with_overrides(BASE, scheduler="cosine"), train_data).lrs
    assert cosine[:2] == base[:2] and cosine[2] == pytest.approx(1e-4)


# --- compute_losses directly: the switches and weights on one fixed model output (cheap) -------------


@pytest.fixture(scope="module")
def fixed_output(train_data: TrainData):  # noqa: F811
    torch.manual_seed(0)
    model = loop.build_model(BASE, train_data)
    r = model.cfg.reduction_factor
    batch = collate([train_data.train[i] for i in range(4)], r)
    with torch.no_grad():
        out = model(batch.text, batch.text_lengths, batch.mel, batch.mel_lengths)
    return out, batch, r


LOSS_KNOBS = {
    # field: (variant value, the LossTerms fields that must change)
    "mel_weight": (2.0, {"total"}),
    "kl_weight": (2.0, {"total"}),
    "stop_weight": (0.3, {"total"}),
    "stop_pos_weight": (2.0, {"total", "stop"}),
    "alignment_loss": ("guided", {"total", "align"}),
    "alignment_width": (0.4, {"total", "align"}),
    "label_smoothing": (False, {"total", "stop"}),
    "label_smoothing_amount": (0.2, {"total", "stop"}),
    "huber_loss": (False, {"total", "mel"}),
    "huber_delta": (1.0, {"total", "mel"}),
}


@pytest.mark.parametrize("field", sorted(LOSS_KNOBS))
def test_loss_knob_changes_exactly_its_term(field: str, fixed_output) -> None:
    out, batch, r = fixed_output
    value, expected = LOSS_KNOBS[field]
    variant = with_overrides(BASE, **{field: value})
    weight = lambda cfg: cfg.mel_weight  # noqa: E731
    a = compute_losses(out, batch, BASE, mel_weight=weight(BASE), reduction_factor=r)
    b = compute_losses(out, batch, variant, mel_weight=weight(variant), reduction_factor=r)
    changed = {
        name
        for name in ("total", "mel", "align", "stop")
        if not torch.equal(getattr(a, name), getattr(b, name))
    }
    assert changed == expected
    # The guards' number is the unweighted postnet L1 whatever the loss knobs say.
    assert torch.equal(a.mel_l1, b.mel_l1)


def test_prior_form_knobs_act_where_they_should(fixed_output) -> None:
    """On one fixed model output: the forward-sum weight scales the total only; the prior's own knobs
    act in the forward pass (the loop table above), not on the losses of a given output."""
    out, batch, r = fixed_output
    prior = with_overrides(BASE, alignment_loss="prior")

    def losses(cfg: TrainConfig):
        return compute_losses(out, batch, cfg, mel_weight=cfg.mel_weight, reduction_factor=r)

    a = losses(prior)
    b = losses(with_overrides(prior, forward_sum_weight=0.25))
    assert torch.equal(a.align, b.align) and not torch.equal(a.total, b.total)
    for field, value in (("prior_scaling", 2.0), ("prior_anneal_end", 5000), ("kl_weight", 2.0)):
        assert torch.equal(losses(with_overrides(prior, **{field: value})).total, a.total), field


def test_loss_knobs_table_matches_the_loop_table() -> None:
    forward = {k.field for k in KNOBS if k.base is BASE and k.where == "forward"}
    assert set(LOSS_KNOBS) <= forward
