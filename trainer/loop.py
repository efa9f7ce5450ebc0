"""The training loop: one function, its stages commented, no module-level state.

Many search trials run one after another in one process, so everything a run needs is built inside
`train()` and nothing leaks between calls. The loop knows nothing of Optuna: it reports through two
callbacks, and the eval callback may ask it to stop (that is how the search prunes).

A step reads its numbers back from the device once, after the optimizer step, so on a GPU the host
queues the whole step without waiting on it; `tests/test_host_syncs.py` holds the loop to that.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from trainer import adaptive
from trainer.checkpoints import save_checkpoint
from trainer.config import TrainConfig, config_to_dict
from trainer.data import DECODE_SENTENCES, BatchStream, TrainData
from trainer.evaluate import EvalMetrics, EvalSample, evaluate
from trainer.guards import StepHistory, Verdict, check_eval, check_step
from trainer.loss_terms import compute_losses, training_log_prior
from trainer.results import OutOfMemory, Recovery, StepMetrics, TrainResult
from trainer.run_state import Position, eval_from_dict, heal, resume_latest, state_dict
from trainer.schedules import lr_at
from trainer.summary import summarize
from trainer.telemetry import Telemetry
from tts_model.batching import Batch
from tts_model.config import model_config
from tts_model.losses import masked_mel_loss
from tts_model.model import ModelOutput, TransformerTTS

Mode = Literal["trial", "full"]


@dataclass(frozen=True, slots=True)
class _RunConstants:
    """Tensors every step needs, made on the device once per run (a tensor made from a Python number is a
    host-to-device copy, which waits for the device)."""

    stop_pos_weight: Tensor  # float32
    mel_weight: Tensor  # float64: cfg.mel_weight, reported as is when the weight is not adapted
    one: Tensor  # float32: the loss scale without a GradScaler
    max_norm: float  # the clip; inf = measure the norm, clip nothing

    @classmethod
    def build(cls, cfg: TrainConfig, device: torch.device) -> _RunConstants:
        return cls(
            stop_pos_weight=torch.tensor(cfg.stop_pos_weight, dtype=torch.float32, device=device),
            mel_weight=torch.tensor(cfg.mel_weight, dtype=torch.float64, device=device),
            one=torch.ones((), dtype=torch.float32, device=device),
            max_norm=cfg.grad_clip if cfg.grad_clip > 0 else math.inf,
        )


@dataclass(frozen=True, slots=True)
class _StepTensors:
    """One step's numbers, still on the device (0-dim tensors), read back together by `_read_step`."""

    loss: Tensor
    mel: Tensor
    mel_l1: Tensor
    kl: Tensor
    stop: Tensor
    grad_norm: Tensor  # pre-clip
    loss_scale: Tensor  # the scale this step's loss was multiplied by
    scale_after: Tensor  # the scaler's scale after update(): lower when it skipped the step
    mel_weight: Tensor
    adaptive_mean: Tensor  # NaN: no running mean (adaptive weights off, or no finite loss yet)


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
    """Train `cfg` on `data`. Trial mode stops at the first guard verdict; full mode rolls back and heals.
    Running out of device memory ends the run with `TrainResult.oom` set instead of raising."""
    # lr_schedule: step -> lr, replacing cfg's schedule (the lr range test drives the lr from outside).
    with device_settings(device):
        return _train(
            cfg,
            data,
            device=device,
            mode=mode,
            out_dir=out_dir,
            on_step=on_step,
            on_eval=on_eval,
            telemetry=telemetry,
            run_id=run_id,
            resume=resume,
            warn=warn,
            lr_schedule=lr_schedule,
            decode_sentences=decode_sentences,
        )


@contextlib.contextmanager
def device_settings(device: torch.device) -> Iterator[None]:
    """On CUDA: TF32 matmuls for the fp32 work (what "fp32" means on a tensor-core card; the previous
    setting comes back afterwards), and the run's cached memory handed back when it ends. It wraps
    `_train` rather than sitting at its end because the run's tensors are freed only when `_train`'s
    locals are gone; then workers sharing the card can use the memory."""
    if device.type != "cuda":
        yield
        return
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)
        torch.cuda.empty_cache()


def _train(
    cfg: TrainConfig,
    data: TrainData,
    *,
    device: torch.device,
    mode: Mode,
    out_dir: Path | None,
    on_step: Callable[[StepMetrics], None] | None,
    on_eval: Callable[[EvalMetrics, EvalSample], bool] | None,
    telemetry: Telemetry | None,
    run_id: str,
    resume: bool,
    warn: Callable[[str], None],
    lr_schedule: Callable[[int], float] | None,
    decode_sentences: int,
) -> TrainResult:
    # --- setup: everything is local to this call -------------------------------------------------
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data).to(device)
    r = model.cfg.reduction_factor
    # The fused kernel is one launch for all parameters on CUDA (and lets the GradScaler skip a step
    # without reading found_inf on the host); on a CPU the default kernel keeps the golden curve.
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda"
    )
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    constants = _RunConstants.build(cfg, device)
    stream = BatchStream(data.train, batch_size=cfg.batch_size, seed=cfg.seed, reduction_factor=r)
    total_steps = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * len(stream)
    val_batches = data.val_batches(cfg.batch_size, r)
    ckpt_dir = out_dir / "checkpoints" if out_dir is not None else None
    pos = Position()
    # Rollback target before the first checkpoint; only full mode heals, so trials skip the copy.
    initial = copy.deepcopy(state_dict(model, optimizer, scaler, pos, cfg)) if mode == "full" else None

    resumed = (
        resume_latest(ckpt_dir, model, optimizer, scaler, warn) if resume and ckpt_dir is not None else None
    )
    if resumed is not None:
        pos = resumed

    adaptive_mean = adaptive.initial_mean(pos.adaptive_mean, device)
    history = StepHistory(cfg.guards)
    evals = [eval_from_dict(e) for e in pos.evals]
    recoveries: list[Recovery] = []
    divergence: Verdict | None = None  # the guard verdict that ended the run
    oom: OutOfMemory | None = None
    stopped_by_callback = False
    last_sample: EvalSample | None = None
    step_log: list[StepMetrics] = []
    if telemetry is not None:
        meta = {"mode": mode, "device": str(device), "data": data.fingerprint}
        telemetry.start_run(
            run_id, config_to_dict(cfg), meta, from_step=None if resumed is None else resumed.step
        )

    step = pos.step  # the step being trained or evaluated, for an out-of-memory report
    try:
        # --- baseline: the untrained model's val mel, so a collapse (fit the mean, then flat) is told
        #     apart from a run too slow to leave the starting level (judged by the pruner, not a guard) ---
        if pos.baseline_mel is None:
            baseline, _ = _evaluate(model, cfg, data, val_batches, step=0, decode_sentences=0, device=device)
            pos.baseline_mel = baseline.val_mel
            if telemetry is not None:
                telemetry.log_eval(run_id, 0, baseline.as_dict())

        model.train()
        while pos.step < total_steps:
            step_start = time.perf_counter()
            step = pos.step + 1
            batch = stream.next_batch(pos).to(device)  # advances pos.epoch / pos.batch_index

            # --- lr schedule -------------------------------------------------------------------------
            schedule_lr = lr_schedule(step) if lr_schedule else lr_at(step, cfg, total_steps=total_steps)
            lr = schedule_lr * pos.lr_scale
            for group in optimizer.param_groups:
                group["lr"] = lr

            # --- forward, losses, backward, clip, optimizer step: queued on the device, never waited on
            tensors = _train_step(model, batch, optimizer, scaler, cfg, constants, adaptive_mean, step=step)
            adaptive_mean = tensors.adaptive_mean

            # --- the step's one host sync: every number it reports, read together --------------------
            metrics, mean = _read_step(
                tensors, step=step, lr=lr, scaled=scaler.is_enabled(), start=step_start
            )
            pos.step = step
            pos.adaptive_mean = adaptive.stored_mean(mean)
            step_log.append(metrics)
            if telemetry is not None:
                telemetry.log_step(run_id, step, metrics.as_dict())
            if on_step is not None:
                on_step(metrics)

            # --- divergence guards: trial mode stops here; full mode rolls back, lowers lr, skips on ---
            history.append(
                step=step,
                loss=metrics.loss,
                mel=metrics.mel_l1,
                grad_norm=metrics.grad_norm,
                skipped=metrics.skipped,
            )
            step_verdict = check_step(
                history, cfg.guards, warmup_steps=cfg.warmup_steps, fp16=cfg.precision == "fp16"
            )
            if step_verdict is not None:
                if mode == "trial" or len(recoveries) >= cfg.max_recoveries:
                    if mode == "full":
                        warn(f"giving up after {len(recoveries)} recoveries: {step_verdict.detail}")
                    divergence = step_verdict
                    break
                recoveries.append(
                    heal(step_verdict, ckpt_dir, initial, model, optimizer, scaler, pos, cfg, warn)
                )
                adaptive_mean = adaptive.initial_mean(pos.adaptive_mean, device)
                history = StepHistory(cfg.guards)
                continue

            # --- eval: teacher-forced val mel, attention, and at the last eval a free-running decode ----
            is_last = step == total_steps
            if step % cfg.eval_every == 0 or is_last:
                n_decode = decode_sentences if (is_last or mode == "full") else 0
                ev, last_sample = _evaluate(
                    model, cfg, data, val_batches, step=step, decode_sentences=n_decode, device=device
                )
                evals.append(ev)
                pos.evals.append(asdict(ev))
                if telemetry is not None:
                    telemetry.log_eval(run_id, step, ev.as_dict())
                eval_verdict = check_eval(
                    evals, cfg.guards, warmup_steps=cfg.warmup_steps, baseline=pos.baseline_mel
                )
                if on_eval is not None and on_eval(ev, last_sample):
                    stopped_by_callback = True
                if eval_verdict is not None and mode == "trial":  # full mode trains on through a plateau
                    divergence = eval_verdict
                    break
                if stopped_by_callback:
                    break

            # --- checkpoint: every checkpoint_every steps, atomically, keeping the last K and the best ---
            if ckpt_dir is not None and (step % cfg.checkpoint_every == 0 or is_last):
                best = evals[-1].val_mel if evals and evals[-1].step == step else None
                state = state_dict(model, optimizer, scaler, pos, cfg)
                save_checkpoint(ckpt_dir, step, state, keep=cfg.keep_checkpoints, val_mel=best)

    # --- out of memory: an outcome of the recipe; the failed step's tensors die with the exception ----
    except torch.cuda.OutOfMemoryError as exc:
        oom = OutOfMemory(step=step, detail=_first_line(exc))
    if oom is not None:
        optimizer.zero_grad(set_to_none=True)
        warn(f"out of memory at step {oom.step}: {oom.detail}")

    if telemetry is not None:
        telemetry.finish_run(
            run_id, _status(divergence, oom, stopped_by_callback), _verdict_dict(divergence, oom)
        )
        telemetry.flush()
    return TrainResult(
        steps=pos.step,
        verdict=divergence,
        evals=tuple(evals),
        recoveries=tuple(recoveries),
        stopped_by_callback=stopped_by_callback,
        summary=summarize(step_log, len(recoveries)),
        last_sample=last_sample,
        baseline_mel=pos.baseline_mel,
        oom=oom,
    )


def _train_step(
    model: TransformerTTS,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    cfg: TrainConfig,
    constants: _RunConstants,
    adaptive_mean: Tensor,
    *,
    step: int,
) -> _StepTensors:
    """Forward under autocast, losses in fp32, backward, pre-clip norm, clip, AdamW step, scaler update:
    nothing here reads a value back, so the host can queue the step and run ahead of the device.

    The optimizer steps whatever the numbers are: a non-finite loss or norm is a verdict at this very
    step (trial mode stops, full mode rolls back to a checkpoint), so the weights it leaves are never
    used; under fp16 the scaler itself skips an update whose gradients overflowed."""
    # --- forward under autocast, then losses (in fp32) ---------------------------------------------
    # The "prior" form's attention prior (None for the other forms and once it has faded out).
    log_prior = training_log_prior(batch, cfg, step=step, reduction_factor=model.cfg.reduction_factor)
    with autocast(batch.mel.device, cfg.precision):
        out = model(
            batch.text,
            batch.text_lengths,
            batch.mel,
            batch.mel_lengths,
            log_prior=log_prior,
            prior_layers=cfg.prior_layers,
        )
    mel_weight, loss_weight = constants.mel_weight, cfg.mel_weight
    if cfg.adaptive_loss_weights:
        adaptive_mean, factor = adaptive.update(
            adaptive_mean, _mel_for_adaptive(out, batch), cfg.adaptive_momentum
        )
        mel_weight = cfg.mel_weight * factor  # float64, as the seed's rule in Python floats
        loss_weight = mel_weight.float()  # what a Python float becomes when it multiplies a float32 loss
    terms = compute_losses(
        out,
        batch,
        cfg,
        mel_weight=loss_weight,
        reduction_factor=model.cfg.reduction_factor,
        stop_pos_weight=constants.stop_pos_weight,
    )

    # --- backward, then the global gradient norm measured before clipping -------------------------
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms.total).backward()
    scaler.unscale_(optimizer)
    params = [p for p in model.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, constants.max_norm)  # returns the pre-clip norm

    # --- optimizer step (AdamW); the scaler skips it on inf/NaN gradients under fp16 ---------------
    loss_scale = _scale(scaler, constants).clone()  # update() changes the scale in place
    scaler.step(optimizer)
    scaler.update()
    return _StepTensors(
        loss=terms.total,
        mel=terms.mel,
        mel_l1=terms.mel_l1,
        kl=terms.align,
        stop=terms.stop,
        grad_norm=grad_norm,
        loss_scale=loss_scale,
        scale_after=_scale(scaler, constants),
        mel_weight=mel_weight,
        adaptive_mean=adaptive_mean,
    )


def _scale(scaler: torch.amp.GradScaler, constants: _RunConstants) -> Tensor:
    """The GradScaler's scale as the device tensor it keeps (its public `get_scale()` reads it to the host,
    a sync); 1 without a scaler."""
    return scaler._scale if scaler.is_enabled() else constants.one


def _read_step(
    tensors: _StepTensors, *, step: int, lr: float, scaled: bool, start: float
) -> tuple[StepMetrics, float]:
    """The step's numbers on the host, in one transfer. float64 on the way holds every float32 value
    exactly, so each number is the one `float(tensor)` gives. Also returns the adaptive running mean."""
    t = tensors
    values = torch.stack(
        [
            x.detach().double()
            for x in (t.loss, t.mel, t.mel_l1, t.kl, t.stop, t.grad_norm, t.loss_scale, t.scale_after)
        ]
        + [t.mel_weight.double(), t.adaptive_mean.double()]
    ).tolist()
    loss, mel, mel_l1, kl, stop, grad_norm, loss_scale, scale_after, mel_weight, mean = values
    # A GradScaler skip is a finite loss whose scaled gradients overflowed; a non-finite loss is the
    # forward's own overflow (a divergence, judged by the guards), whatever the scaler did after it.
    skipped = scaled and scale_after < loss_scale and math.isfinite(loss)
    metrics = StepMetrics(
        step=step,
        loss=loss,
        mel=mel,
        mel_l1=mel_l1,
        kl=kl,
        stop=stop,
        grad_norm=grad_norm,
        lr=lr,
        loss_scale=loss_scale,
        skipped=skipped,
        step_time=time.perf_counter() - start,
        mel_weight=mel_weight,
    )
    return metrics, mean


def _evaluate(
    model: TransformerTTS,
    cfg: TrainConfig,
    data: TrainData,
    val_batches: list[Batch],
    *,
    step: int,
    decode_sentences: int,
    device: torch.device,
) -> tuple[EvalMetrics, EvalSample]:
    """Validation (and free-running decodes of `decode_sentences`) under the run's autocast, so an fp16
    overflow shows at eval as it would in training, and the eval measures the model the run trains."""
    examples = data.decode_examples(decode_sentences) if decode_sentences else []
    with autocast(device, cfg.precision):
        return evaluate(
            model,
            val_batches,
            examples,
            step=step,
            reduction_factor=model.cfg.reduction_factor,
            device=device,
            guards=cfg.guards,
        )


def _mel_for_adaptive(out: ModelOutput, batch: Batch) -> Tensor:
    """The seed's running mean tracks the raw mel L1 of the decoder output."""
    return masked_mel_loss(out.mel_before.detach().float(), batch.mel, batch.mel_lengths, None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _status(divergence: Verdict | None, oom: OutOfMemory | None, stopped_by_callback: bool) -> str:
    if oom is not None:
        return "oom"
    if divergence is not None:
        return "diverged"
    return "pruned" if stopped_by_callback else "finished"


def _verdict_dict(verdict: Verdict | None, oom: OutOfMemory | None) -> dict | None:
    """The telemetry's verdict columns: a guard verdict, or where and why memory ran out (no kind: the
    run's status says "oom")."""
    if verdict is not None:
        return {"kind": verdict.kind, "step": verdict.step, "detail": verdict.detail}
    return None if oom is None else {"step": oom.step, "detail": oom.detail}
