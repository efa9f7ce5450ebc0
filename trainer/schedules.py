"""Learning-rate schedules: the seed's noam, cosine and constant, each with a linear warmup; and the fade
of the "prior" alignment form's attention prior.

`cfg.lr` is the *peak* lr, reached at the end of warmup in every schedule, so the same lr means the
same peak whichever schedule a trial uses. Steps count from 1 (the first optimizer step).
"""

from __future__ import annotations

import math

from trainer.config import TrainConfig

# Cosine decays to 10% of the peak, not 0: the last steps of a run still learn, and a step past
# total_steps (a resumed or extended run) keeps a usable lr instead of 0.
COSINE_FLOOR = 0.1


def lr_factor(step: int, *, warmup: int, scheduler: str, total_steps: int | None = None) -> float:
    """The multiplier on the peak lr at `step` (1-based).

    Warmup is linear from 1/warmup at step 1 to 1.0 at step == warmup (never 0: a zero-lr first step
    would be wasted). Then:
      noam:     sqrt(warmup / step), the inverse-square-root decay. With warmup 0 the peak is at step 1
                and the factor is 1/sqrt(step), the limit of the same formula (warmup 0 == warmup 1).
                Under noam, warmup also sets the decay: a short warmup decays faster.
      cosine:   half a cosine from 1.0 at the end of warmup to COSINE_FLOOR at total_steps, then flat.
      constant: 1.0.
    """
    if step < 1:
        raise ValueError(f"step counts from 1, got {step}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if scheduler not in ("noam", "cosine", "constant"):
        raise ValueError(f"unknown scheduler {scheduler!r}")
    if scheduler == "cosine" and (total_steps is None or total_steps < 1):
        # Checked before warmup so a missing run length fails at step 1, not after warmup.
        raise ValueError(f"the cosine schedule needs total_steps >= 1, got {total_steps}")
    if step < warmup:
        return step / warmup
    if scheduler == "noam":
        return math.sqrt(max(warmup, 1) / step)
    if scheduler == "constant":
        return 1.0
    assert total_steps is not None  # cosine, checked above
    span = total_steps - warmup
    progress = 1.0 if span <= 0 else min((step - warmup) / span, 1.0)
    return COSINE_FLOOR + (1.0 - COSINE_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_at(step: int, cfg: TrainConfig, *, total_steps: int | None = None) -> float:
    """The lr at `step` (1-based) under `cfg`. Cosine needs the run length: `total_steps`, else
    `cfg.max_steps` when it is set (with max_steps 0 the epochs decide, so the caller must pass it)."""
    if total_steps is None and cfg.max_steps > 0:
        total_steps = cfg.max_steps
    return cfg.lr * lr_factor(step, warmup=cfg.warmup_steps, scheduler=cfg.scheduler, total_steps=total_steps)


def prior_strength(step: int, cfg: TrainConfig) -> float:
    """How much of the attention prior a training step at `step` (1-based) adds: 1 up to
    `prior_anneal_start`, falling linearly to 0 at `prior_anneal_end`, 0 from there on (and always 0
    unless `alignment_loss` is "prior")."""
    if cfg.alignment_loss != "prior" or step >= cfg.prior_anneal_end:
        return 0.0
    if step <= cfg.prior_anneal_start:
        return 1.0
    return (cfg.prior_anneal_end - step) / (cfg.prior_anneal_end - cfg.prior_anneal_start)


def forward_sum_share(step: int, cfg: TrainConfig) -> float:
    """The share of `forward_sum_weight` a training step at `step` applies: whole while the prior is, then
    falling with the prior's fade to `forward_sum_final_share`, held there once the prior is gone."""
    final = cfg.forward_sum_final_share
    if final == 1.0:
        return 1.0
    return final + (1.0 - final) * prior_strength(step, cfg)
