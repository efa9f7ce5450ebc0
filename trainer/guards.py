"""Divergence guards: pure checks over a run's recent history, each returning a Verdict or None.

Every check judges what no knob can game: gradient norms against the run's *own* median (loss weights
scale the raw norm), and the *unweighted* mel loss for spikes and the ceiling (weights scale the total).
The seed's "loss within 1-10" and "grad norm < 1" are not enforced here: mel weight 25 puts a healthy
total near 100 and healthy pre-clip norms near 25. Thresholds and their reasons: GuardConfig.

A check receives the current step's values and summaries of the *previous* steps (a bounded window,
an EMA), so a step never dilutes the statistics it is judged against, and a 100k-step run costs
O(window) per step. Non-finite inputs return None from every check but `check_nonfinite`.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from trainer.config import GuardConfig

VerdictKind = Literal["nonfinite", "explosion", "spike", "ceiling", "collapse"]


@dataclass(frozen=True, slots=True)
class GuardSpec:
    """A guard, and the GuardConfig field holding the steps it needs before it can judge a run (None:
    it judges from the first step). The judge's "judged after" rule and a study's step scaling read
    these declarations, so a new guard with a minimum cannot be forgotten by either."""

    kind: VerdictKind
    min_steps_field: str | None


GUARDS: tuple[GuardSpec, ...] = (
    GuardSpec("nonfinite", None),
    GuardSpec("explosion", "explosion_min_steps"),
    GuardSpec("spike", "spike_min_steps"),
    GuardSpec("ceiling", "ceiling_min_steps"),
    GuardSpec("collapse", "collapse_min_steps"),
)
_KINDS = tuple(g.kind for g in GUARDS)
MIN_STEPS_FIELDS: tuple[str, ...] = tuple(g.min_steps_field for g in GUARDS if g.min_steps_field)
# The two checks of a finished run (trainer/judge.py): its attention aligned, its free-running decode
# stops. With the guards above, what a run's ``guards_off`` may name when a signal is missing.
ALIGNED_CHECK, DECODE_CHECK = "aligned", "decode"


def judged_after(cfg: GuardConfig, warmup_steps: int, *, off: Collection[str] = ()) -> int:
    """The step by which every divergence guard has had the steps it needs to judge a run (the ceiling
    and collapse guards also wait out the warmup).

    A run stopped earlier (pruned on mel at an early rung) is ``unjudged``: no guard fired, but the
    collapse guard, say, never looked, so it must not count as stable anywhere (else the lr boundary
    can call an lr stable that collapses, on a trial pruned before the collapse guard looked).
    A guard that is ``off`` (its signal was missing: a trainer that reports no grad norm has no
    explosion guard) has nothing to wait for.
    """
    waits = (getattr(cfg, g.min_steps_field) for g in GUARDS if g.min_steps_field and g.kind not in off)
    return max(warmup_steps, *waits, 0)


@dataclass(frozen=True, kw_only=True, slots=True)
class Verdict:
    """Why and where a run diverged; `detail` is for people and carries the numbers."""

    kind: VerdictKind
    step: int
    detail: str

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown verdict kind {self.kind!r}; one of {', '.join(_KINDS)}")


class StepRecord(NamedTuple):
    step: int
    loss: float  # the weighted total that was backpropagated
    mel: float  # the unweighted mel loss
    grad_norm: float | None  # pre-clip global norm; None when not measured
    skipped: bool  # fp16: the loss was finite, its scaled gradients overflowed, the update was skipped


class EvalPoint(NamedTuple):
    step: int
    val_mel: float  # the validation metric (lower is better): val mel for the project's trainer
    diagonality: float | None  # None: the trainer reports no alignment, so the collapse guard is off


class StepHistory:
    """The bounded recent history `check_step` reads. Build one per run (and afresh after a recovery,
    so the rolled-back steps do not count) with the GuardConfig the checks will use."""

    def __init__(self, cfg: GuardConfig | None = None) -> None:
        cfg = GuardConfig() if cfg is None else cfg
        self.alpha = cfg.spike_alpha
        self.records: deque[StepRecord] = deque(maxlen=cfg.explosion_window + 1)  # last = current
        self.prev_norms: deque[float] = deque(maxlen=cfg.explosion_window)  # finite, previous steps
        self.n_norms = 0  # finite norms folded into prev_norms so far
        self.ema_mean: float | None = None  # EMA of the unweighted mel over previous steps
        self.ema_var = 0.0
        self.n_mels = 0
        self.consecutive_skips = 0

    @property
    def last(self) -> StepRecord | None:
        return self.records[-1] if self.records else None

    def append(
        self, *, step: int, loss: float, mel: float, grad_norm: float | None, skipped: bool = False
    ) -> None:
        """Record the current step; the step before it joins the statistics now."""
        previous = self.last
        if previous is not None and not previous.skipped:
            self._fold(previous)
        self.records.append(StepRecord(step, float(loss), float(mel), grad_norm, skipped))
        self.consecutive_skips = self.consecutive_skips + 1 if skipped else 0

    def _fold(self, record: StepRecord) -> None:
        if record.grad_norm is not None and math.isfinite(record.grad_norm):
            self.prev_norms.append(float(record.grad_norm))
            self.n_norms += 1
        if not math.isfinite(record.mel):
            return
        self.n_mels += 1
        if self.ema_mean is None:
            self.ema_mean = record.mel
            return
        # West's exponentially weighted mean and variance.
        diff = record.mel - self.ema_mean
        self.ema_mean += self.alpha * diff
        self.ema_var = (1.0 - self.alpha) * (self.ema_var + self.alpha * diff * diff)


def check_nonfinite(
    step: int,
    *,
    loss: float,
    mel: float,
    grad_norm: float | None,
    skipped: bool,
    consecutive_skips: int,
    cfg: GuardConfig,
    fp16: bool = False,
) -> Verdict | None:
    """NaN/Inf in the loss or the gradient norm. A non-finite loss is a divergence at its step whatever
    the GradScaler did: under fp16 it is a forward overflow (the seed's NaN), which no loss scale cures.
    A GradScaler skip (a finite loss whose scaled gradients overflowed) left the weights untouched, so it
    is counted, not a divergence, until more than `max_consecutive_skips` come in a row."""
    for name, value in (("loss", loss), ("unweighted mel loss", mel)):
        if not math.isfinite(value):
            cause = " (forward overflow under fp16)" if fp16 else ""
            return Verdict(kind="nonfinite", step=step, detail=f"{name} is {value} at step {step}{cause}")
    if skipped:
        if consecutive_skips > cfg.max_consecutive_skips:
            detail = (
                f"GradScaler skipped {consecutive_skips} steps in a row (limit {cfg.max_consecutive_skips}): "
                "the gradients overflow at any loss scale"
            )
            return Verdict(kind="nonfinite", step=step, detail=detail)
        return None
    if grad_norm is not None and not math.isfinite(grad_norm):
        return Verdict(kind="nonfinite", step=step, detail=f"gradient norm is {grad_norm} at step {step}")
    return None


def check_explosion(
    step: int, grad_norm: float | None, previous_norms: Sequence[float], *, n_seen: int, cfg: GuardConfig
) -> Verdict | None:
    """The pre-clip gradient norm jumps above `explosion_factor` x the median of the previous window."""
    if grad_norm is None or not math.isfinite(grad_norm):
        return None
    if n_seen < cfg.explosion_min_steps or not previous_norms:
        return None
    median = statistics.median(previous_norms)
    if median <= 0.0 or grad_norm <= cfg.explosion_factor * median:
        return None
    detail = (
        f"gradient norm {grad_norm:.4g} is {grad_norm / median:.4g}x the median {median:.4g} of the "
        f"previous {len(previous_norms)} steps (limit {cfg.explosion_factor:g}x)"
    )
    return Verdict(kind="explosion", step=step, detail=detail)


def check_spike(
    step: int, mel: float, *, mean: float | None, var: float, n_seen: int, cfg: GuardConfig
) -> Verdict | None:
    """The unweighted mel jumps more than `spike_z` EMA standard deviations above its EMA mean *and* to
    more than `spike_ratio` x that mean (both scale-free, so a loss weight cannot trip it)."""
    if not math.isfinite(mel) or mean is None or n_seen < cfg.spike_min_steps:
        return None
    if mean <= 0.0 or var <= 0.0 or mel <= cfg.spike_ratio * mean:
        return None
    z = (mel - mean) / math.sqrt(var)
    if z <= cfg.spike_z:
        return None
    detail = (
        f"unweighted mel loss {mel:.4g} is {z:.4g} sigma and {mel / mean:.4g}x above its running mean "
        f"{mean:.4g} (limits {cfg.spike_z:g} sigma and {cfg.spike_ratio:g}x)"
    )
    return Verdict(kind="spike", step=step, detail=detail)


def check_ceiling(step: int, mel: float, *, warmup_steps: int, cfg: GuardConfig) -> Verdict | None:
    """After warmup the unweighted mel loss must stay below `mel_ceiling` (worse than untrained)."""
    if not math.isfinite(mel) or step <= max(warmup_steps, cfg.ceiling_min_steps):
        return None
    if mel <= cfg.mel_ceiling:
        return None
    detail = f"unweighted mel loss {mel:.4g} is above the ceiling {cfg.mel_ceiling:g} after warmup"
    return Verdict(kind="ceiling", step=step, detail=detail)


def check_step(
    history: StepHistory,
    cfg: GuardConfig,
    *,
    warmup_steps: int = 0,
    fp16: bool = False,
    off: Collection[str] = (),
) -> Verdict | None:
    """Run the per-step checks on the newest step, first verdict wins: non-finite, explosion, spike,
    ceiling. A GradScaler-skipped step is judged only by the skip count (its gradients are inf). `fp16`:
    the forward ran under fp16 autocast, which a non-finite loss's verdict names as its likely cause.
    `off`: guard kinds not run, because the trainer does not report their signal (never "nonfinite":
    the loss is always there)."""
    r = history.last
    if r is None:
        return None
    verdict = check_nonfinite(
        r.step,
        loss=r.loss,
        mel=r.mel,
        grad_norm=r.grad_norm,
        skipped=r.skipped,
        consecutive_skips=history.consecutive_skips,
        cfg=cfg,
        fp16=fp16,
    )
    if verdict is not None or r.skipped:
        return verdict
    checks: tuple[tuple[VerdictKind, Callable[[], Verdict | None]], ...] = (
        (
            "explosion",
            lambda: check_explosion(r.step, r.grad_norm, history.prev_norms, n_seen=history.n_norms, cfg=cfg),
        ),
        (
            "spike",
            lambda: check_spike(
                r.step, r.mel, mean=history.ema_mean, var=history.ema_var, n_seen=history.n_mels, cfg=cfg
            ),
        ),
        ("ceiling", lambda: check_ceiling(r.step, r.mel, warmup_steps=warmup_steps, cfg=cfg)),
    )
    for kind, check in checks:
        if kind not in off and (found := check()) is not None:
            return found
    return None


def _point(e: Any) -> EvalPoint:
    """An eval as (step, val_mel, diagonality): a tuple, or any object with those attributes."""
    if hasattr(e, "val_mel"):
        return EvalPoint(e.step, e.val_mel, e.diagonality)
    return EvalPoint(*e)


def check_eval(
    evals: Sequence[Any], cfg: GuardConfig, *, warmup_steps: int = 0, baseline: float | None = None
) -> Verdict | None:
    """Collapse, over the eval history [(step, val_mel, diagonality)] (tuples or objects with those
    attributes): after max(`collapse_min_steps`, warmup) the val mel sits on a high plateau (fell less
    than `collapse_min_drop` from the first eval and is not falling now, or improved less than
    `collapse_tolerance` over the last `collapse_window` evals) while the attention never aligned
    (latest diagonality below `collapse_diagonality`) and is not aligning (it rose less than
    `collapse_diagonality_rise` over that window). A run still warming up, one still improving
    steadily, or one whose attention is still finding the diagonal, is slow, not collapsed. A post-norm transformer at a high lr without warmup fails this way
    instead of going NaN, with a loss the seed's 1-10 band calls healthy. A run that never left the
    untrained model's val mel (`baseline`, measured before step 1) is slow, not collapsed: collapse means
    it fitted something (the average frame) and stopped there. A non-finite eval is "nonfinite".
    An eval without a diagonality (None: a trainer that reports no alignment) is judged for NaN/Inf
    only: the collapse guard needs the attention, and is off without it."""
    if not evals:
        return None
    step, val_mel, diagonality = _point(evals[-1])
    if diagonality is None:
        if math.isfinite(val_mel):
            return None
        return Verdict(kind="nonfinite", step=step, detail=f"validation metric {val_mel} at step {step}")
    if not (math.isfinite(val_mel) and math.isfinite(diagonality)):
        detail = f"validation mel {val_mel}, diagonality {diagonality} at step {step}"
        return Verdict(kind="nonfinite", step=step, detail=detail)
    if step < max(cfg.collapse_min_steps, warmup_steps) or len(evals) < 2:
        return None
    if diagonality >= cfg.collapse_diagonality:
        return None
    first = _point(evals[0]).val_mel
    drop = (first - val_mel) / first if first > 0 else 0.0
    window = min(cfg.collapse_window, len(evals) - 1)
    ref, ref_diagonality = _point(evals[-1 - window])[1:]
    ref_diagonality = diagonality if ref_diagonality is None else ref_diagonality
    gain = (ref - val_mel) / ref if ref > 0 else 0.0
    if diagonality - ref_diagonality >= cfg.collapse_diagonality_rise:
        return None  # the attention is still finding the diagonal: slow, not collapsed
    if baseline is not None and math.isfinite(baseline) and baseline > 0:
        if (baseline - val_mel) / baseline < cfg.collapse_min_drop:
            return None  # never left the starting level: too slow to judge, not collapsed
    if drop < cfg.collapse_min_drop and gain < cfg.collapse_min_drop / 2:
        # Never got going and is not getting going. A slow run that is still improving steadily
        # (a low lr in a short trial) is slow, not collapsed: it fails feasibility instead.
        why = f"fell only {drop:.1%} from the first eval's {first:.4g} (needs {cfg.collapse_min_drop:.0%})"
    elif gain < cfg.collapse_tolerance:
        why = f"improved only {gain:.1%} over the last {window} evals (needs {cfg.collapse_tolerance:.0%})"
    else:
        return None
    detail = (
        f"validation mel {val_mel:.4g} {why}, and the attention never aligned "
        f"(diagonality {diagonality:.2f} < {cfg.collapse_diagonality:g})"
    )
    return Verdict(kind="collapse", step=step, detail=detail)
