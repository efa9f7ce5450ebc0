"""The evidence behind a diagnosis: the diverged run replayed, its last steps under full instrumentation.

Instrumenting every step of every run (a forward hook on every module reading its values back, each
loss term on the host) would cost healthy runs the speed the trainer's one host sync per step buys
them (``tests/test_host_syncs.py``). A run is seeded and its batches are fixed by (seed, epoch), so
the steps before a divergence can be computed again exactly, after the fact, and only for a run that
diverged: this module rebuilds the run from its seed, trains up to ``window`` steps before the
divergence at the loop's own speed (``trainer.step.train_step``, the same code), then replays the last
steps with a hook on every module and every loss term on the host, and probes the weights just before
the divergent step (the instruments: ``trainer.diagnosis_probes``):

- the divergent step's batch, its items' features, and each item left out of it in turn;
- other batches at the same weights (a batch that breaks every recipe is the data's fault);
- an fp16 run's step in fp32 at the same weights;
- the last steps again at ``LOWER_LR_FACTOR`` times lower lr, from the same state and guard history.

What that costs: the run's steps once more, plus ``window`` instrumented steps, the lower-lr steps and
a handful of single-step probes; nothing at all for a run that did not diverge. A collapse is judged
over evals, which the replay does not re-run: its diagnosis rests on the study's measured edge alone.

A full training that healed (rolled back) is no longer the run its seed rebuilds, but it is the run
that starts from the state the heal left (``ReplayPlan.start``): the checkpoint it rolled back to (or
its initial state), the data position it kept and the lr scale it lowered, with a fresh guard history,
as ``trainer.run_state.heal`` leaves the loop. A replay given that start trains from there.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from trainer import adaptive
from trainer.checkpoints import CheckpointError, load_checkpoint, rng_state, set_rng_state
from trainer.config import TrainConfig, with_overrides
from trainer.data import BatchStream, TrainData
from trainer.diagnosis import Cause, Diagnosis, Edge, Evidence, decide
from trainer.diagnosis_probes import Probes, Watch, bad_features, term_values
from trainer.guards import StepHistory, Verdict, check_step
from trainer.loop import build_model, device_settings
from trainer.peaks import PeakMeter
from trainer.results import Restart, StepMetrics
from trainer.run_state import Position, Trainables
from trainer.schedules import lr_at
from trainer.step import RunConstants, read_step, train_step
from tts_model.batching import Batch, collate
from tts_model.model import TransformerTTS

WINDOW = 32  # steps replayed under full instrumentation (and at the lower lr) before the divergence
LOWER_LR_FACTOR = 1 / 16  # four doublings below: a run this far from its lr that still breaks is not the lr's
OTHER_BATCHES = 3
STEP_GUARDS = ("nonfinite", "explosion", "spike", "ceiling")  # judged per step, so a replay can see them


@dataclass(frozen=True, kw_only=True, slots=True)
class ReplayPlan:
    """What the replay needs of the run besides its config and data: its lr schedule when the caller
    drove it (the lr probe), the study's measured edge, and where the run went on from when that was not
    its seed (a full training's heal or resume)."""

    lr_schedule: Callable[[int], float] | None = None  # as RunPlan.lr_schedule (the lr probe's)
    edge: Edge | None = None
    start: Restart | None = None  # None: the run from its seed
    window: int = WINDOW
    other_batches: int = OTHER_BATCHES


def diagnose(
    cfg: TrainConfig,
    data: TrainData,
    verdict: Verdict,
    *,
    device: torch.device,
    plan: ReplayPlan = ReplayPlan(),
) -> Diagnosis:
    """The diagnosis of the run ``cfg`` on ``data`` that ``verdict`` stopped, trained from its seed or
    from ``plan.start``. The process's random streams are as they were afterwards: the replay reseeds
    them as the run did. Raises CheckpointError when the start's checkpoint is gone or unusable."""
    t0 = time.perf_counter()
    streams = rng_state()
    try:
        if verdict.kind in STEP_GUARDS:
            with device_settings(device):  # the run's own matmul precision (TF32 on CUDA)
                found = decide(_Replay(cfg, data, device, plan).evidence(verdict))
        else:
            found = _over_evals(cfg, data, verdict, plan)
    except torch.cuda.OutOfMemoryError as exc:  # the replay holds a few copies of the run's state
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        found = Diagnosis(
            step=verdict.step, cause=Cause.UNKNOWN, evidence=f"the replay ran out of device memory ({line})"
        )
    finally:
        set_rng_state(streams)
    return dataclasses.replace(found, replay_s=time.perf_counter() - t0)


def _over_evals(cfg: TrainConfig, data: TrainData, verdict: Verdict, plan: ReplayPlan) -> Diagnosis:
    """A guard judged over evals (collapse): the lr against the study's edge, nothing replayed."""
    n_batches = len(_stream(cfg, data, reduction_factor=1))
    schedule = plan.lr_schedule
    step = verdict.step
    lr = (
        float(schedule(step))
        if schedule is not None
        else lr_at(step, cfg, total_steps=_total(cfg, n_batches))
    ) * (plan.start.lr_scale if plan.start is not None else 1.0)
    found = decide(Evidence(step=step, kind=verdict.kind, reproduced=True, lr=lr, edge=plan.edge))
    why = f"a {verdict.kind} is judged over evals, which the replay does not re-run"
    if found.named:
        return dataclasses.replace(found, evidence=f"{found.evidence}; {why}")
    edge = plan.edge
    against = (
        "the study has measured no lr edge to compare its lr with"
        if edge is None
        else f"its lr {lr:.3g} is below the study's edge, lr {edge.lr:.3g} ({edge.source})"
    )
    return dataclasses.replace(found, evidence=f"{why}, and {against}")


def _stream(cfg: TrainConfig, data: TrainData, *, reduction_factor: int) -> BatchStream:
    """The loop's own batch order (its curriculum included), so the replay trains the run's batches."""
    return BatchStream(
        data.train,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        reduction_factor=reduction_factor,
        curriculum_steps=cfg.length_curriculum_steps,
    )


def _total(cfg: TrainConfig, n_batches: int) -> int:
    """The run's planned steps, as the loop counts them."""
    return cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * n_batches


class _Replay:
    """The run rebuilt from its seed, as ``trainer.loop._train`` builds it (trial mode)."""

    def __init__(self, cfg: TrainConfig, data: TrainData, device: torch.device, plan: ReplayPlan) -> None:
        self.cfg, self.data, self.device, self.plan = cfg, data, device, plan
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, data).to(device)
        self.r = model.cfg.reduction_factor
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda"
        )
        self.model: TransformerTTS = model
        self.parts = Trainables(
            model, optimizer, torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
        )
        self.constants = RunConstants.build(cfg, device)
        self.meter = PeakMeter(model)
        self.stream = _stream(cfg, data, reduction_factor=self.r)
        self.total = _total(cfg, len(self.stream))

    # -- the run's batches and lr, as the loop's BatchStream and schedule give them -------------------
    def indices(self, pos: Position) -> list[int]:
        """The batch at ``pos`` (advanced past it), as ``trainer.data.BatchStream.next_batch`` takes it."""
        return self.stream.indices(pos)

    def batch(self, indices: list[int]) -> Batch:
        return collate([self.data.train[i] for i in indices], self.r).to(self.device)

    def lr(self, step: int, pos: Position) -> float:
        schedule = self.plan.lr_schedule
        base = schedule(step) if schedule is not None else lr_at(step, self.cfg, total_steps=self.total)
        return float(base) * pos.lr_scale

    # -- one step, exactly as the loop runs it ---------------------------------------------------------
    def step(
        self, step: int, batch: Batch, lr: float, mean: Tensor, cfg: TrainConfig | None = None
    ) -> tuple[StepMetrics, Tensor]:
        for group in self.parts.optimizer.param_groups:
            group["lr"] = lr
        cfg = cfg or self.cfg
        t = train_step(
            self.model,
            batch,
            self.parts.optimizer,
            self.parts.scaler,
            cfg,
            self.constants,
            mean,
            self.meter,
            step=step,
        )
        metrics, _ = read_step(
            t, step=step, lr=lr, scaled=self.parts.scaler.is_enabled(), start=time.perf_counter()
        )
        return metrics, t.adaptive_mean

    def begin(self) -> tuple[Position, Tensor]:
        """The position and adaptive mean the run trained on from: its seed's, or those a heal or a
        resume left (``plan.start``: its checkpoint, or the initial state, with the heal's position)."""
        start, pos = self.plan.start, Position()
        if start is None:
            return pos, adaptive.initial_mean(None, self.device)
        if start.checkpoint is not None:
            pos = self.parts.restore(load_checkpoint(start.checkpoint))
            if pos.step != start.step:
                raise CheckpointError(
                    f"checkpoint {start.checkpoint} holds step {pos.step}, not step {start.step}"
                )
        pos.epoch, pos.batch_index, pos.lr_scale = start.epoch, start.batch_index, start.lr_scale
        return pos, adaptive.initial_mean(pos.adaptive_mean, self.device)

    def snapshot(self, pos: Position, mean: Tensor, history: StepHistory) -> tuple[dict, Tensor, StepHistory]:
        return copy.deepcopy(self.parts.state_dict(pos, self.cfg)), mean.clone(), copy.deepcopy(history)

    def restore(self, snap: tuple[dict, Tensor, StepHistory]) -> tuple[Position, Tensor, StepHistory]:
        state, mean, history = snap
        pos = self.parts.restore(copy.deepcopy(state))
        return pos, mean.clone(), copy.deepcopy(history)

    def guard(self, history: StepHistory, m: StepMetrics) -> Verdict | None:
        history.append(step=m.step, loss=m.loss, mel=m.mel_l1, grad_norm=m.grad_norm, skipped=m.skipped)
        cfg = self.cfg
        return check_step(history, cfg.guards, warmup_steps=cfg.warmup_steps, fp16=cfg.precision == "fp16")

    # -- the evidence ----------------------------------------------------------------------------------
    def evidence(self, verdict: Verdict) -> Evidence:
        cfg, target = self.cfg, verdict.step
        pos, mean = self.begin()
        history = StepHistory(cfg.guards)
        start = max(pos.step, target - self.plan.window)
        self.model.train()
        # up to the window at the loop's speed, no instrumentation; the guards see these steps as the
        # run's did (one firing here means the replay will not reproduce the run, and will say so)
        for step in range(pos.step + 1, start + 1):
            batch = self.batch(self.indices(pos))
            metrics, mean = self.step(step, batch, self.lr(step, pos), mean)
            pos.step = step
            self.guard(history, metrics)
        at_start = self.snapshot(pos, mean, history)

        # the last steps, every module and every term watched
        watch = Watch(self.model)
        log: list[StepMetrics] = []
        fired: Verdict | None = None
        before: tuple[dict, Tensor, StepHistory] | None = None  # the state before the last replayed step
        bad_step_indices: list[int] = []
        try:
            for step in range(pos.step + 1, target + 1):
                before = self.snapshot(pos, mean, history)
                lr = self.lr(step, pos)
                bad_step_indices = self.indices(pos)
                watch.start(step)
                metrics, mean = self.step(step, self.batch(bad_step_indices), lr, mean)
                watch.on = False
                pos.step = step
                log.append(metrics)
                fired = self.guard(history, metrics)
                if fired is not None:
                    break
        finally:
            watch.close()
        step = log[-1].step if log else target
        reproduced = fired is not None and fired.step == verdict.step and fired.kind == verdict.kind
        first, forward_finite = watch.first, watch.all_finite
        terms = term_values(log, cfg)
        lr = log[-1].lr if log else self.lr(step, pos)

        # probes at the weights before the divergent step
        probes = Probes(self, before) if before is not None else None
        items = tuple(self.data.train[i].id for i in bad_step_indices)
        bad = {
            self.data.train[i].id: w for i in bad_step_indices if (w := bad_features(self.data.train[i].mel))
        }
        batch_finite = probes.finite(bad_step_indices) if probes else None
        breaking: tuple[str, ...] = ()
        if batch_finite is False and len(bad_step_indices) > 1:
            breaking = tuple(
                self.data.train[i].id
                for i in bad_step_indices
                if probes.finite([j for j in bad_step_indices if j != i])
            )
        others = probes.other_batches(self.plan.other_batches) if probes else []
        fp32_finite = None
        if cfg.precision == "fp16" and probes is not None:
            fp32_finite = probes.finite(bad_step_indices, cfg=with_overrides(cfg, precision="fp32"))

        lower_lr = lower_survived = None
        if reproduced:
            lower_lr, lower_survived = self.lower_lr(at_start, target, lr)
        return Evidence(
            step=step,
            kind=verdict.kind,
            reproduced=reproduced,
            lr=lr,
            edge=self.plan.edge,
            lower_lr=lower_lr,
            lower_lr_survived=lower_survived,
            items=items,
            bad_items=bad,
            breaking_items=breaking,
            batch_finite=batch_finite,
            other_batches=len(others),
            other_batches_finite=sum(others),
            fp16=cfg.precision == "fp16",
            fp32_finite=fp32_finite,
            first_module=first,
            forward_finite=forward_finite,
            skipped_in_a_row=history.consecutive_skips,
            terms=terms,
        )

    def lower_lr(self, snap: tuple[dict, Tensor, StepHistory], target: int, lr: float) -> tuple[float, bool]:
        """The same last steps from the same state and guard history at LOWER_LR_FACTOR x the lr:
        (the divergent step's lower lr, no guard fired)."""
        pos, mean, history = self.restore(snap)
        pos.lr_scale *= LOWER_LR_FACTOR
        for step in range(pos.step + 1, target + 1):
            lr_now = self.lr(step, pos)
            metrics, mean = self.step(step, self.batch(self.indices(pos)), lr_now, mean)
            pos.step = step
            if self.guard(history, metrics) is not None:
                return lr * LOWER_LR_FACTOR, False
        return lr * LOWER_LR_FACTOR, True
