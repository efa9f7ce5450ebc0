"""The training loop: one function, its stages commented, no module-level state.

Many search trials run one after another in one process, so everything a run needs is built inside
`train()` and nothing leaks between calls. The loop knows nothing of Optuna: it reports through its
hooks (`trainer/hooks.py`), and the eval hook may ask it to stop (that is how the search prunes). How
the run ends is judged by the one judge (`trainer/judge.py`), here for the telemetry as everywhere.

A step reads its numbers back from the device once, after the optimizer step (`trainer/step.py`), so
on a GPU the host queues the whole step without waiting on it; `tests/test_host_syncs.py` holds the
loop to that.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch

from trainer import adaptive
from trainer.checkpoints import save_checkpoint
from trainer.config import TrainConfig, config_to_dict
from trainer.data import DECODE_SENTENCES, BatchStream, TrainData
from trainer.evaluate import EvalMetrics, EvalSample, evaluate
from trainer.guards import StepHistory, Verdict, check_eval, check_step
from trainer.headroom import Crossing, run_crossing
from trainer.hooks import NO_HOOKS, RunHooks, RunWriter, open_writer
from trainer.judge import judge
from trainer.peaks import PeakMeter
from trainer.results import OutOfMemory, Recovery, StepMetrics, TrainResult
from trainer.run_state import Position, Rollback, Trainables, eval_from_dict, heal, resume_latest
from trainer.schedules import lr_at
from trainer.step import RunConstants, autocast, read_step, train_step
from trainer.summary import summarize
from tts_model.batching import Batch
from tts_model.config import model_config
from tts_model.model import TransformerTTS

Mode = Literal["trial", "full"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RunPlan:
    """How a run goes, decided once before step 1.

    trial: the first guard verdict ends the run, one free-running decode at the last eval, nothing on
    disk; what a search trial, a validation or transfer run and the lr probe are. full: a verdict rolls
    back to the last checkpoint and lowers the lr (up to ``max_recoveries``), a collapse plateau is
    trained through, every eval decodes, checkpoints go to ``out_dir``; what ``python -m trainer`` is.
    lr_schedule: step -> lr, replacing the config's schedule (the lr range test drives it from outside).
    rungs: steps before ``max_steps`` where a rung ends (successive halving inside one run): each gets an
    eval with a free-running decode, then the ``on_rung`` hook says whether the run goes on; a run that
    stops there has finished, judged at that rung.
    out_dir of a trial: where a run that stops at a rung leaves its state (one checkpoint, no periodic
    ones), so a later promotion resumes it there (``resume``) instead of training its rung again.
    """

    mode: Mode = "trial"
    out_dir: Path | None = None
    resume: bool = False
    lr_schedule: Callable[[int], float] | None = None
    decode_sentences: int = DECODE_SENTENCES
    rungs: tuple[int, ...] = ()

    @property
    def heals(self) -> bool:
        return self.mode == "full"

    @property
    def decodes_every_eval(self) -> bool:
        return self.mode == "full"

    @property
    def stops_on_collapse(self) -> bool:
        return self.mode == "trial"

    @property
    def ckpt_dir(self) -> Path | None:
        return self.out_dir / "checkpoints" if self.out_dir is not None else None


TRIAL = RunPlan()  # the default: a trial's plan


def build_model(cfg: TrainConfig, data: TrainData) -> TransformerTTS:
    overrides = {"reduction_factor": cfg.reduction_factor} if cfg.reduction_factor else {}
    mcfg = model_config(cfg.model_size, norm=cfg.norm, **overrides)
    return TransformerTTS(mcfg, n_symbols=data.n_symbols, n_mels=data.n_mels)


def train(
    cfg: TrainConfig,
    data: TrainData,
    *,
    device: torch.device,
    plan: RunPlan = TRIAL,
    hooks: RunHooks = NO_HOOKS,
) -> TrainResult:
    """Train `cfg` on `data` as `plan` says, reporting through `hooks`. Running out of device memory
    ends the run with `TrainResult.oom` set instead of raising."""
    with device_settings(device), open_writer(hooks.telemetry) as writer:
        result = _train(cfg, data, device=device, plan=plan, hooks=hooks, writer=writer)
        verdict = judge(result, cfg.guards, warmup_steps=cfg.warmup_steps)
        writer.finish_run(hooks.run_id, verdict.status, verdict.verdict_columns())
    return result


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
    plan: RunPlan,
    hooks: RunHooks,
    writer: RunWriter,
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
    parts = Trainables(model, optimizer, torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"))
    constants = RunConstants.build(cfg, device)
    meter = PeakMeter(model)  # fp16 headroom: the forward's largest values, read with the step's numbers
    stream = BatchStream(
        data.train,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        reduction_factor=r,
        curriculum_steps=cfg.length_curriculum_steps,
    )
    total_steps = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * len(stream)
    val_batches = data.val_batches(cfg.batch_size, r)
    ckpt_dir, warn = plan.ckpt_dir, hooks.warn
    pos = Position()
    # Rollback target before the first checkpoint; only a healing run needs the copy.
    rollback = Rollback(ckpt_dir, copy.deepcopy(parts.state_dict(pos, cfg))) if plan.heals else None
    found = resume_latest(ckpt_dir, parts, warn) if plan.resume and ckpt_dir is not None else None
    resumed, restart = found if found is not None else (None, None)
    pos = resumed or pos

    adaptive_mean = adaptive.initial_mean(pos.adaptive_mean, device)
    history = StepHistory(cfg.guards)
    evals = [eval_from_dict(e) for e in pos.evals]
    recoveries: list[Recovery] = []
    divergence: Verdict | None = None  # the guard verdict that ended the run
    oom: OutOfMemory | None = None
    stopped_by_callback = False
    last_sample: EvalSample | None = None
    step_log: list[StepMetrics] = []
    fp16_crossing: Crossing | None = None  # where the fp16 headroom reached (or trends to) 0, once warned
    meta = {"mode": plan.mode, "device": str(device), "data": data.fingerprint}
    from_step = None if resumed is None else resumed.step
    earlier_recoveries = 0 if resumed is None else resumed.recoveries  # pos (the same object) counts on
    writer.start_run(hooks.run_id, config_to_dict(cfg), meta, from_step=from_step)

    step = pos.step  # the step being trained or evaluated, for an out-of-memory report
    try:
        # --- baseline: the untrained model's val mel, so a collapse (fit the mean, then flat) is told
        #     apart from a run too slow to leave the starting level (judged by the pruner, not a guard) ---
        if pos.baseline_mel is None:
            baseline, _ = _evaluate(model, cfg, data, val_batches, step=0, decode_sentences=0, device=device)
            pos.baseline_mel = baseline.val_mel
            writer.log_eval(hooks.run_id, 0, baseline.as_dict())

        model.train()
        while pos.step < total_steps:
            step_start = time.perf_counter()
            step = pos.step + 1
            batch = stream.next_batch(pos).to(device)  # advances pos.epoch / pos.batch_index

            # --- lr schedule -------------------------------------------------------------------------
            schedule_lr = (
                plan.lr_schedule(step) if plan.lr_schedule else lr_at(step, cfg, total_steps=total_steps)
            )
            lr = schedule_lr * pos.lr_scale
            for group in optimizer.param_groups:
                group["lr"] = lr

            # --- forward, losses, backward, clip, optimizer step: queued on the device, never waited on
            tensors = train_step(
                model, batch, optimizer, parts.scaler, cfg, constants, adaptive_mean, meter, step=step
            )
            adaptive_mean = tensors.adaptive_mean

            # --- the step's one host sync: every number it reports, read together --------------------
            metrics, mean = read_step(
                tensors, step=step, lr=lr, scaled=parts.scaler.is_enabled(), start=step_start
            )
            pos.step = step
            pos.adaptive_mean = adaptive.stored_mean(mean)
            step_log.append(metrics)
            writer.log_step(hooks.run_id, step, metrics.as_dict())
            hooks.step(metrics)

            # --- divergence guards: a trial stops here; a healing run rolls back, lowers lr, skips on ---
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
                if rollback is None or len(recoveries) >= cfg.max_recoveries:
                    if rollback is not None:
                        warn(f"giving up after {len(recoveries)} recoveries: {step_verdict.detail}")
                    divergence = step_verdict
                    break
                recoveries.append(heal(step_verdict, parts, pos, cfg, rollback, warn))
                adaptive_mean = adaptive.initial_mean(pos.adaptive_mean, device)
                history = StepHistory(cfg.guards)
                continue

            # --- eval: teacher-forced val mel, attention, and a free-running decode (at the last eval and
            #     at a rung's end, or at every eval of a full training) --------------------------------
            is_last, is_rung = step == total_steps, step in plan.rungs
            if step % cfg.eval_every == 0 or is_last or is_rung:
                n_decode = plan.decode_sentences if (is_last or is_rung or plan.decodes_every_eval) else 0
                ev, last_sample = _evaluate(
                    model, cfg, data, val_batches, step=step, decode_sentences=n_decode, device=device
                )
                evals.append(ev)
                pos.evals.append(asdict(ev))
                writer.log_eval(hooks.run_id, step, ev.as_dict())
                fp16_crossing = fp16_crossing or _fp16_warning(step_log, total_steps, cfg.warmup_steps, warn)
                eval_verdict = check_eval(
                    evals, cfg.guards, warmup_steps=cfg.warmup_steps, baseline=pos.baseline_mel
                )
                stopped_by_callback = hooks.eval(ev, last_sample)
                if eval_verdict is not None and plan.stops_on_collapse:  # full runs train through a plateau
                    divergence = eval_verdict
                    break
                if stopped_by_callback:
                    break
                if is_rung and not hooks.rung(ev):  # the run ends here, finished at this rung
                    if ckpt_dir is not None:  # kept for a later promotion to resume (studies.promotion)
                        state = parts.state_dict(pos, cfg)
                        save_checkpoint(ckpt_dir, step, state, keep=cfg.keep_checkpoints, val_mel=ev.val_mel)
                    break

            # --- checkpoint: every checkpoint_every steps, atomically, keeping the last K and the best ---
            if plan.mode == "full" and ckpt_dir is not None and (step % cfg.checkpoint_every == 0 or is_last):
                best = evals[-1].val_mel if evals and evals[-1].step == step else None
                state = parts.state_dict(pos, cfg)
                save_checkpoint(ckpt_dir, step, state, keep=cfg.keep_checkpoints, val_mel=best)

    # --- out of memory: an outcome of the recipe; the failed step's tensors die with the exception ----
    except torch.cuda.OutOfMemoryError as exc:
        oom = OutOfMemory(step=step, detail=_first_line(exc))
    if oom is not None:
        optimizer.zero_grad(set_to_none=True)
        warn(f"out of memory at step {oom.step}: {oom.detail}")

    fp16_crossing = fp16_crossing or _fp16_warning(step_log, total_steps, cfg.warmup_steps, warn)
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
        fp16_crossing=fp16_crossing,
        earlier_recoveries=earlier_recoveries,
        resumed=restart,
    )


def _fp16_warning(
    steps: list[StepMetrics], horizon: int, warmup: int, warn: Callable[[str], None]
) -> Crossing | None:
    """One warning line, the first time the run's fp16 headroom reaches 0 or trends to it by ``horizon``."""
    found = run_crossing(steps, horizon=horizon, after=warmup)
    if found is not None:
        warn(found.line())
    return found


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
