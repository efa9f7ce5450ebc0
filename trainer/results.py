"""What a training run reports: each step's numbers, recoveries, an out-of-memory stop, the result.

Records, not dicts: the search, the CLI and the evidence commands read these fields by name.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from trainer.evaluate import EvalMetrics, EvalSample
from trainer.guards import Verdict
from trainer.headroom import Crossing
from trainer.summary import RunSummary


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
    skipped: bool  # fp16: the loss was finite, its scaled gradients overflowed, the scaler skipped the update
    step_time: float
    mel_weight: float  # after adaptive weighting
    # fp16 headroom (trainer/peaks.py, trainer/headroom.py): the forward's largest |value| of the
    # cross-attention scores q.k^T and of any Linear / Conv1d output; NaN: not measured
    attn_logit_max: float = math.nan
    activation_max: float = math.nan

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items() if k != "step"}


@dataclass(frozen=True, slots=True)
class Restart:
    """The state a full training went on from after a heal or a resume, as a replay of its later steps
    rebuilds it (``trainer.diagnosis_replay``): a checkpoint, then the position the heal set."""

    checkpoint: Path | None  # the copy kept for the replay (never pruned); None: the run's initial state
    step: int
    epoch: int  # the data position: a heal keeps the diverged run's, so the bad batches are skipped
    batch_index: int
    lr_scale: float


@dataclass(frozen=True, slots=True)
class Recovery:
    step: int  # where the guard fired
    verdict: Verdict
    rolled_back_to: int  # the checkpoint step training resumed from
    lr_scale: float  # multiplier on the schedule's lr from then on
    restart: Restart | None = None  # the state right after the heal (None: not recorded)


@dataclass(frozen=True, slots=True)
class OutOfMemory:
    """The device ran out of memory: an outcome of the recipe (model size x batch x lengths), not a crash,
    so a search can book it and go on."""

    step: int  # the step being trained or evaluated (0: the baseline eval)
    detail: str  # the error's first line, which names the size that failed


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
    oom: OutOfMemory | None = None  # the run stopped because the device ran out of memory
    # Guards and checks that were off because the run never reported their signal (a trainer this
    # project did not write: no grad norm, no alignment, no decode...); () for the project's trainer.
    guards_off: tuple[str, ...] = ()
    fp16_crossing: Crossing | None = None  # its fp16 headroom reached 0, or trends to it by the run's end
    # Recoveries before this process: those of the checkpoint a full training resumed from (0 when it
    # started from scratch); a run rolled back before is no longer the one its seed rebuilds.
    earlier_recoveries: int = 0
    resumed: Restart | None = None  # the checkpoint it resumed from, when written after a rollback

    @property
    def final_eval(self) -> EvalMetrics | None:
        return self.evals[-1] if self.evals else None
