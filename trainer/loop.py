"""The training loop: one function, its stages commented, no module-level state.

Many search trials run one after another in one process, so everything a run needs is built inside
`train()` and nothing leaks between calls. The loop knows nothing of Optuna: it reports through two
callbacks, and the eval callback may ask it to stop (that is how the search prunes).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from trainer.adaptive import AdaptiveState, update_adaptive
from trainer.checkpoints import load_latest, rng_state, save_checkpoint, set_rng_state
from trainer.config import TrainConfig, config_to_dict
from trainer.data import DECODE_SENTENCES, BatchStream, TrainData
from trainer.evaluate import DecodeMetrics, EvalMetrics, EvalSample, evaluate
from trainer.guards import StepHistory, Verdict, check_eval, check_step
from trainer.loss_terms import compute_losses
from trainer.schedules import lr_at
from trainer.summary import RunSummary, summarize
from trainer.telemetry import Telemetry
from tts_model.config import model_config
from tts_model.losses import masked_mel_loss
from tts_model.model import TransformerTTS

Mode = Literal["trial", "full"]


@dataclass(frozen=True, slots=True)
class StepMetrics:
    step: int
    loss: float  # weighted total
    mel: float  # mel term as trained (L1 or Huber, decoder + postnet), unweighted
    mel_l1: float  # unweighted postnet L1: the scale-free number guards watch
    kl: float  # alignment loss behind the "KL" knob, unweighted
    stop: float
    grad_norm: float  # global norm measured before clipping
    lr: float
    loss_scale: float
    skipped: bool  # fp16: the GradScaler found inf/NaN gradients and skipped the update
    step_time: float
    mel_weight: float  # after adaptive weighting

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items() if k != "step"}


@dataclass(frozen=True, slots=True)
class Recovery:
    step: int  # where the guard fired
    verdict: Verdict
    rolled_back_to: int  # the checkpoint step training resumed from
    lr_scale: float  # multiplier on the schedule's lr from then on


@dataclass(frozen=True, slots=True)
class TrainResult:
    steps: int
    verdict: Verdict | None  # the divergence that ended the run, if any
    evals: tuple[EvalMetrics, ...]
    recoveries: tuple[Recovery, ...]
    stopped_by_callback: bool
    summary: RunSummary
    last_sample: EvalSample | None = None
    baseline_mel: float | None = None  # val mel of the untrained model (before step 1)

    @property
    def final_eval(self) -> EvalMetrics | None:
        return self.evals[-1] if self.evals else None


@dataclass(slots=True)
class _Position:
    """What a checkpoint must hold besides weights so a resumed run repeats an uninterrupted one."""

    step: int = 0
    epoch: int = 0
    batch_index: int = 0
    adaptive_mean: float | None = None
    lr_scale: float = 1.0
    recoveries: int = 0
    best_val_mel: float = math.inf
    baseline_mel: float | None = None  # val mel of the untrained model: did training move at all?
    evals: list[dict] = field(default_factory=list)


def build_model(cfg: TrainConfig, data: TrainData) -> TransformerTTS:
    mcfg = model_config(cfg.model_size, norm=cfg.norm)
    return TransformerTTS(mcfg, n_symbols=data.n_symbols, n_mels=data.n_mels)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def train(
    cfg: TrainConfig,
    data: TrainData,
    *,
    device: torch.device,
    mode: Mode = "trial",
    out_dir: Path | None = None,
    on_step: Callable[[StepMetrics], None] | None = None,
    on_eval: Callable[[EvalMetrics, EvalSample], bool] | None = None,
    telemetry: Telemetry | None = None,
    run_id: str = "run",
    resume: bool = False,
    warn: Callable[[str], None] = print,
    lr_schedule: Callable[[int], float] | None = None,
    decode_sentences: int = DECODE_SENTENCES,
) -> TrainResult:
    """Train `cfg` on `data`. Trial mode stops at the first guard verdict; full mode rolls back and heals."""
    # lr_schedule: step -> lr, replacing cfg's schedule (the lr range test drives the lr from outside).
    # --- setup: everything is local to this call -------------------------------------------------
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data).to(device)
    r = model.cfg.reduction_factor
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    stream = BatchStream(data.train, batch_size=cfg.batch_size, seed=cfg.seed, reduction_factor=r)
    total_steps = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * len(stream)
    val_batches = data.val_batches(cfg.batch_size, r)
    ckpt_dir = out_dir / "checkpoints" if out_dir is not None else None
    pos = _Position()
    # Rollback target before the first checkpoint; only full mode heals, so trials skip the copy.
    initial = copy.deepcopy(_state_dict(model, optimizer, scaler, pos, cfg)) if mode == "full" else None

    resumed_from: int | None = None
    if resume and ckpt_dir is not None:
        found = load_latest(ckpt_dir, warn=warn)
        if found is not None:
            pos = _restore(found[0], model, optimizer, scaler)
            resumed_from = pos.step
            warn(f"resumed from {found[1]} at step {pos.step}")

    history = StepHistory(cfg.guards)
    evals = [_eval_from_dict(e) for e in pos.evals]
    recoveries: list[Recovery] = []
    verdict: Verdict | None = None
    stopped_by_callback = False
    last_sample: EvalSample | None = None
    step_log: list[StepMetrics] = []
    if telemetry is not None:
        meta = {"mode": mode, "device": str(device), "data": data.fingerprint}
        telemetry.start_run(run_id, config_to_dict(cfg), meta, from_step=resumed_from)

    # --- baseline: the untrained model's val mel, so a collapse (fit the mean, then flat) is told
    #     apart from a run too slow to leave the starting level (judged by the pruner, not a guard) ---
    if pos.baseline_mel is None:
        base, _ = evaluate(model, val_batches, [], step=0, reduction_factor=r, device=device)
        pos.baseline_mel = base.val_mel
        if telemetry is not None:
            telemetry.log_eval(run_id, 0, base.as_dict())

    model.train()
    while pos.step < total_steps:
        t0 = time.perf_counter()
        step = pos.step + 1
        batch = stream.next_batch(pos).to(device)  # advances pos.epoch / pos.batch_index

        # --- lr schedule ---------------------------------------------------------------------------
        base = lr_schedule(step) if lr_schedule else lr_at(step, cfg, total_steps=total_steps)
        lr = base * pos.lr_scale
        for group in optimizer.param_groups:
            group["lr"] = lr

        # --- forward under autocast, then losses (in fp32) ---------------------------------------------
        with autocast(device, cfg.precision):
            out = model(batch.text, batch.text_lengths, batch.mel, batch.mel_lengths)
        mel_weight = cfg.mel_weight
        adaptive = AdaptiveState(mean=pos.adaptive_mean)
        if cfg.adaptive_loss_weights:
            adaptive, factor = update_adaptive(adaptive, _mel_for_adaptive(out, batch), cfg.adaptive_momentum)
            mel_weight = cfg.mel_weight * factor
        terms = compute_losses(out, batch, cfg, mel_weight=mel_weight, reduction_factor=r)

        # --- backward, then the global gradient norm measured before clipping -------------------------
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms.total).backward()
        scaler.unscale_(optimizer)
        params = [p for p in model.parameters() if p.grad is not None]
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))  # returns the pre-clip norm

        # --- optimizer step (AdamW); the scaler skips it on inf/NaN gradients under fp16 ---------------
        scale_before = scaler.get_scale() if scaler.is_enabled() else 1.0
        loss_value = float(terms.total.detach())
        healthy = math.isfinite(loss_value) and (math.isfinite(grad_norm) or scaler.is_enabled())
        if healthy:
            scaler.step(optimizer)
        scaler.update()
        skipped = scaler.is_enabled() and scaler.get_scale() < scale_before
        pos.step = step
        pos.adaptive_mean = adaptive.mean

        metrics = StepMetrics(
            step=step,
            loss=loss_value,
            mel=float(terms.mel.detach()),
            mel_l1=terms.mel_l1,
            kl=float(terms.align.detach()),
            stop=float(terms.stop.detach()),
            grad_norm=grad_norm,
            lr=lr,
            loss_scale=scale_before,
            skipped=skipped,
            step_time=time.perf_counter() - t0,
            mel_weight=mel_weight,
        )
        step_log.append(metrics)
        if telemetry is not None:
            telemetry.log_step(run_id, step, metrics.as_dict())
        if on_step is not None:
            on_step(metrics)

        # --- divergence guards: trial mode stops here; full mode rolls back, lowers lr, skips on -------
        history.append(step=step, loss=loss_value, mel=terms.mel_l1, grad_norm=grad_norm, skipped=skipped)
        verdict = check_step(history, cfg.guards, warmup_steps=cfg.warmup_steps)
        if verdict is not None:
            if mode == "trial" or len(recoveries) >= cfg.max_recoveries:
                if mode == "full":
                    warn(f"giving up after {len(recoveries)} recoveries: {verdict.detail}")
                break
            recovery = _heal(verdict, ckpt_dir, initial, model, optimizer, scaler, pos, cfg, warn)
            recoveries.append(recovery)
            history = StepHistory(cfg.guards)
            verdict = None
            continue

        # --- eval: teacher-forced val mel, attention, and at the last eval a free-running decode --------
        is_last = step == total_steps
        if step % cfg.eval_every == 0 or is_last:
            decode = data.decode_examples(decode_sentences) if (is_last or mode == "full") else []
            ev, last_sample = evaluate(
                model, val_batches, decode, step=step, reduction_factor=r, device=device
            )
            evals.append(ev)
            pos.evals.append(asdict(ev))
            if telemetry is not None:
                telemetry.log_eval(run_id, step, ev.as_dict())
            verdict = check_eval(evals, cfg.guards, warmup_steps=cfg.warmup_steps, baseline=pos.baseline_mel)
            if on_eval is not None and on_eval(ev, last_sample):
                stopped_by_callback = True
            if verdict is not None and mode == "trial":
                break
            verdict = None if mode == "full" else verdict
            if stopped_by_callback:
                break

        # --- checkpoint: every checkpoint_every steps, atomically, keeping the last K and the best -----
        if ckpt_dir is not None and (step % cfg.checkpoint_every == 0 or is_last):
            best = evals[-1].val_mel if evals and evals[-1].step == step else None
            state = _state_dict(model, optimizer, scaler, pos, cfg)
            save_checkpoint(ckpt_dir, step, state, keep=cfg.keep_checkpoints, val_mel=best)

    if telemetry is not None:
        status = "diverged" if verdict else ("pruned" if stopped_by_callback else "finished")
        telemetry.finish_run(run_id, status, _verdict_dict(verdict))
        telemetry.flush()
    return TrainResult(
        steps=pos.step,
        verdict=verdict,
        evals=tuple(evals),
        recoveries=tuple(recoveries),
        stopped_by_callback=stopped_by_callback,
        summary=summarize(step_log, len(recoveries)),
        last_sample=last_sample,
        baseline_mel=pos.baseline_mel,
    )


def _mel_for_adaptive(out, batch) -> float:
    """The seed's running mean tracks the raw mel L1 of the decoder output."""
    return float(masked_mel_loss(out.mel_before.detach().float(), batch.mel, batch.mel_lengths, None))


def _heal(
    verdict, ckpt_dir, initial, model, optimizer, scaler, pos: _Position, cfg: TrainConfig, warn
) -> Recovery:
    """Roll back to the last good checkpoint, lower the lr, and go on past the batches that diverged."""
    found = load_latest(ckpt_dir, warn=warn) if ckpt_dir is not None else None
    state = found[0] if found is not None else initial
    epoch, batch_index = pos.epoch, pos.batch_index  # keep the data position: skip the bad batches
    restored = _restore(state, model, optimizer, scaler)
    restored.epoch, restored.batch_index = epoch, batch_index
    restored.lr_scale = pos.lr_scale * cfg.recovery_lr_factor
    restored.recoveries = pos.recoveries + 1
    restored.evals = pos.evals
    for name in _Position.__slots__:
        setattr(pos, name, getattr(restored, name))
    warn(
        f"recovery {pos.recoveries}: {verdict.kind} at step {verdict.step} ({verdict.detail}); "
        f"rolled back to step {pos.step}, lr x{pos.lr_scale:g}"
    )
    return Recovery(step=verdict.step, verdict=verdict, rolled_back_to=pos.step, lr_scale=pos.lr_scale)


def _state_dict(model, optimizer, scaler, pos: _Position, cfg: TrainConfig) -> dict:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "position": {name: getattr(pos, name) for name in _Position.__slots__},
        "rng": rng_state(),
        "config": config_to_dict(cfg),
    }


def _restore(state: dict, model, optimizer, scaler) -> _Position:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return _Position(**state["position"])


def _eval_from_dict(d: dict) -> EvalMetrics:
    decode = DecodeMetrics(**d["decode"]) if d.get("decode") else None
    # Checkpoints written before the stop margin existed lack it: "not measured".
    return EvalMetrics(**{"stop_end_margin": math.nan, **d, "decode": decode})


def _verdict_dict(verdict: Verdict | None) -> dict | None:
    return None if verdict is None else {"kind": verdict.kind, "step": verdict.step, "detail": verdict.detail}
