"""A run's position and its checkpoint state: what resuming and healing restore.

A checkpoint holds the weights, the optimizer and scaler, the RNG streams and this position (step,
data position, adaptive mean, lr scale, evals so far), so a resumed run repeats an uninterrupted one and
a healed run (rolled back after a divergence) goes on past the batches that diverged. Each heal (and a
resume after one) records the state it went on from (``trainer.results.Restart``), which the diagnosis
of a later divergence replays from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trainer.checkpoints import keep_for_replay, load_latest, rng_state, set_rng_state
from trainer.config import TrainConfig, config_to_dict
from trainer.evaluate import DecodeMetrics, EvalMetrics
from trainer.guards import Verdict
from trainer.results import Recovery, Restart


@dataclass(slots=True)
class Position:
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


@dataclass(frozen=True, slots=True)
class Trainables:
    """What a step changes and a checkpoint restores: the model, its optimizer, the fp16 loss scaler."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler

    def state_dict(self, pos: Position, cfg: TrainConfig) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "position": {name: getattr(pos, name) for name in Position.__slots__},
            "rng": rng_state(),
            "config": config_to_dict(cfg),
        }

    def restore(self, state: dict) -> Position:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        return Position(**state["position"])


@dataclass(frozen=True, slots=True)
class Rollback:
    """Where a healed run rolls back to: the newest good checkpoint in ``ckpt_dir``, else the state the
    run started from (``initial``, a copy taken before step 1)."""

    ckpt_dir: Path | None
    initial: dict

    def state(self, warn: Callable[[str], None]) -> tuple[dict, Path | None]:
        """The state to roll back to, and its checkpoint file (None: the initial copy)."""
        found = load_latest(self.ckpt_dir, warn=warn) if self.ckpt_dir is not None else None
        return found if found is not None else (self.initial, None)


def resume_latest(
    ckpt_dir: Path, parts: Trainables, warn: Callable[[str], None]
) -> tuple[Position, Restart | None] | None:
    """The newest good checkpoint restored into the run, or None when there is none to resume. With it,
    for a checkpoint written after a rollback, where the run went on from (the checkpoint kept for a
    replay of what follows: one from the seed no longer rebuilds the run); None for any other."""
    found = load_latest(ckpt_dir, warn=warn)
    if found is None:
        return None
    pos = parts.restore(found[0])
    warn(f"resumed from {found[1]} at step {pos.step}")
    if pos.recoveries == 0:
        return pos, None
    return pos, _restart(keep_for_replay(found[1], ckpt_dir, "resumed"), pos)


def heal(
    verdict: Verdict,
    parts: Trainables,
    pos: Position,
    cfg: TrainConfig,
    rollback: Rollback,
    warn: Callable[[str], None],
) -> Recovery:
    """Roll back to the last good checkpoint, lower the lr, and go on past the batches that diverged."""
    epoch, batch_index = pos.epoch, pos.batch_index  # keep the data position: skip the bad batches
    state, path = rollback.state(warn)
    restored = parts.restore(state)
    restored.epoch, restored.batch_index = epoch, batch_index
    restored.lr_scale = pos.lr_scale * cfg.recovery_lr_factor
    restored.recoveries = pos.recoveries + 1
    restored.evals = pos.evals
    for name in Position.__slots__:
        setattr(pos, name, getattr(restored, name))
    warn(
        f"recovery {pos.recoveries}: {verdict.kind} at step {verdict.step} ({verdict.detail}); "
        f"rolled back to step {pos.step}, lr x{pos.lr_scale:g}"
    )
    # the state it goes on from, for a replay of a later divergence (trainer.diagnosis_full)
    kept = None
    if path is not None and rollback.ckpt_dir is not None:
        kept = keep_for_replay(path, rollback.ckpt_dir, f"recovery_{pos.recoveries}")
    restart = _restart(kept, pos)
    return Recovery(
        step=verdict.step, verdict=verdict, rolled_back_to=pos.step, lr_scale=pos.lr_scale, restart=restart
    )


def _restart(checkpoint: Path | None, pos: Position) -> Restart:
    return Restart(
        checkpoint=checkpoint,
        step=pos.step,
        epoch=pos.epoch,
        batch_index=pos.batch_index,
        lr_scale=pos.lr_scale,
    )


def eval_from_dict(d: dict) -> EvalMetrics:
    decode = DecodeMetrics(**d["decode"]) if d.get("decode") else None
    # Checkpoints written before the stop margin existed lack it: "not measured".
    return EvalMetrics(**{"stop_end_margin": math.nan, **d, "decode": decode})
