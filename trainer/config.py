"""TrainConfig and GuardConfig: every knob of a training run, checked when it is built.

A config is frozen and keyword-only, so a trial's settings cannot drift after they are recorded, and a
bad value fails at construction with the field's name and the allowed range instead of as a NaN an
hour later. Named presets and preset files live in `trainer/presets.py`, which builds on this module
(import them from there).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from common.errors import UserError
from tts_model.config import MODEL_SIZES, PriorLayers

Scheduler = Literal["noam", "cosine", "constant"]
AlignmentLoss = Literal["kl", "guided", "prior"]
Precision = Literal["fp32", "bf16", "fp16"]
Norm = Literal["post", "pre"]


class ConfigError(UserError):
    """A config value a user gave is unusable. `field`/`problem` let callers re-say where it came from."""

    def __init__(self, message: str, *, field: str | None = None, problem: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.problem = problem


def _fail(name: str, problem: str) -> ConfigError:
    return ConfigError(f"field '{name}' {problem}", field=name, problem=problem)


@dataclass(frozen=True, kw_only=True, slots=True)
class GuardConfig:
    """Divergence-guard thresholds (see trainer/guards.py). Each default says why it is what it is."""

    # GradScaler halves its scale on every skipped step: 16 skips in a row take the default 2**16 down
    # to 1, so overflow beyond that comes from the gradients themselves, not from the scaling.
    max_consecutive_skips: int = 16
    # Relative to the run's own median: loss weights scale the raw norm (mel weight 25 gave healthy
    # pre-clip norms ~25 where weight 1 gave ~1), so an absolute bound would flag every heavy run.
    # Healthy runs wander a few x around their median; 20x is a jump, not noise.
    explosion_factor: float = 20.0
    # A bounded window keeps the median O(window) per step over 100k-step runs and lets it follow
    # the slow fall of the norm as training settles.
    explosion_window: int = 200
    # The first steps have large, fast-falling norms (output layers calibrating); no median yet.
    explosion_min_steps: int = 100
    # z-score of the unweighted mel against its EMA: 6 sigma is essentially never noise ...
    spike_z: float = 6.0
    # ... and the loss must also at least double: a near-constant loss has a tiny variance, where a
    # harmless wobble would be many sigma.
    spike_ratio: float = 2.0
    # EMA weight of the newest step: ~50 steps of memory follows the falling loss without lagging.
    spike_alpha: float = 0.02
    spike_min_steps: int = 100
    # Log-mel L1 of an untrained model is ~2-5; above 10 after warmup the model is worse than
    # untrained. Unweighted, because mel weight 25 puts a healthy *total* near 100.
    mel_ceiling: float = 10.0
    # The ceiling waits for max(warmup, this) steps, so warmup 0 does not judge step 1.
    ceiling_min_steps: int = 100
    # Collapse (a high plateau with attention that never aligns) is judged only after this many
    # steps: a healthy model needs on the order of a thousand steps to start aligning.
    collapse_min_steps: int = 2000
    # Collapsed if val mel fell less than 10% from its first eval ...
    collapse_min_drop: float = 0.1
    # ... or improved less than 1% over the last 3 evals ...
    collapse_window: int = 3
    collapse_tolerance: float = 0.01
    # ... and the attention is not aligning either: its diagonality rose less than this over the same
    # window. A collapsed run's diagonality holds flat, while a run at a very low lr can still be aligning
    # with its val mel improving only about 1% an eval: a 1%-only rule would call it collapsed
    # (figures: docs/measurements.md).
    collapse_diagonality_rise: float = 0.01
    # ... while the attention's diagonality stays below 0.3. Measured on the corpus's val set
    # (tts_model.losses.attention_diagonality, band 0.1): uniform attention scores 0.19, the seed's
    # KL prior (width 0.2) 0.44, a sharp diagonal 1.0. The seed's KL loss pulls attention onto its
    # broad prior, so a healthy KL-trained tiny model sits at 0.42-0.44 after 300 steps while a
    # collapsed one stays at 0.19: 0.3 separates the two (the collapse guard's bar only).
    collapse_diagonality: float = 0.3
    # "Aligned" for feasibility and the judge: the eval's diagonality over the KL prior's own
    # (EvalMetrics.over_prior) at least this. The KL prior itself scores 0 by construction and KL-trained
    # runs stay within a few hundredths of it however long they train (they never speak), every aligning
    # form clears +0.4 and a collapsed run goes negative: 0.25 passes every aligning form early and no KL
    # run, where the raw 0.3 bar passed every KL run by the prior alone (figures: docs/measurements.md).
    aligned_over_prior: float = 0.25
    # Greedy decoding of the same speaker should land within 2x the reference length; a model that
    # never stops or stops after a few frames is outside it.
    decode_length_ratio: float = 2.0
    # Few sentences, short trial: tolerate a minority of bad decodes, not a majority.
    decode_max_bad_fraction: float = 0.5
    # "speaks" (trainer/speech.py): conditions on the decoded held-out sentences, medians except the stop
    # rate. Measured with `python -m tts_model.speech_scale` on the embedded corpus's 5 shortest val
    # sentences and an overfit tiny model (tests/test_speaks.py). Stop: as for feasibility, at most half
    # of the decodes may run to the cap.
    speak_min_stop_rate: float = 0.5
    # eSpeak itself at 120 and 250 words a minute (1.46x and 0.70x the corpus's length) still says the
    # words (decode ratio <= 0.11): a tempo inside 1.5x is speech, a decode twice as long is not.
    speak_length_ratio: float = 1.5
    # Decode ratio (0 = eSpeak at 150 wpm, 1 = the mean frame): other English voices saying the words,
    # pitch/rate changes and a lightly blurred reference all score at most about 0.35; a reference blurred
    # until the syllables are gone, another language's voice, the reference time-reversed, and models
    # that say nothing (a smear of the right length included) all score about 0.66 or more: 0.5 lies
    # between the two (figures: docs/measurements.md).
    speak_max_decode_ratio: float = 0.5
    # Attention walk (share of symbols the argmax visits in order): untrained 0.04-0.11, collapsed
    # (uniform attention, lr 3e-2) 0.04-0.18 per sentence; KL-trained models that speak 0.50-0.86 per
    # sentence, medians 0.57-0.69 (the seed's broad KL prior makes the argmax jitter and skip symbols).
    speak_min_attention_walk: float = 0.4

    def __post_init__(self) -> None:
        _check_types(self)
        for name in ("max_consecutive_skips", "explosion_window", "collapse_window"):
            _check_range(name, getattr(self, name), ge=1)
        for f in dataclasses.fields(self):  # every guard's minimum (trainer.guards.GUARDS declares them)
            if f.name.endswith("_min_steps"):
                _check_range(f.name, getattr(self, f.name), ge=0)
        _check_range("explosion_factor", self.explosion_factor, gt=1.0)
        _check_range("spike_z", self.spike_z, gt=0.0)
        _check_range("spike_ratio", self.spike_ratio, gt=1.0)
        _check_range("spike_alpha", self.spike_alpha, gt=0.0, lt=1.0)
        _check_range("mel_ceiling", self.mel_ceiling, gt=0.0)
        _check_range("collapse_min_drop", self.collapse_min_drop, ge=0.0, lt=1.0)
        _check_range("collapse_tolerance", self.collapse_tolerance, ge=0.0, lt=1.0)
        _check_range("collapse_diagonality_rise", self.collapse_diagonality_rise, ge=0.0, le=1.0)
        _check_range("collapse_diagonality", self.collapse_diagonality, ge=0.0, le=1.0)
        _check_range("aligned_over_prior", self.aligned_over_prior, ge=-1.0, le=1.0)
        _check_range("decode_length_ratio", self.decode_length_ratio, gt=1.0)
        _check_range("decode_max_bad_fraction", self.decode_max_bad_fraction, ge=0.0, le=1.0)
        _check_range("speak_min_stop_rate", self.speak_min_stop_rate, ge=0.0, le=1.0)
        _check_range("speak_length_ratio", self.speak_length_ratio, gt=1.0)
        _check_range("speak_max_decode_ratio", self.speak_max_decode_ratio, gt=0.0, lt=1.0)
        _check_range("speak_min_attention_walk", self.speak_min_attention_walk, ge=0.0, le=1.0)


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    """One training recipe. Defaults are the seed's `basic` level; precision defaults to fp32 (the seed
    kept fp16 on in `basic`, which this project treats as a separate knob)."""

    # optimisation
    lr: float = 1e-5  # peak learning rate (reached at the end of warmup)
    weight_decay: float = 1e-7
    grad_clip: float = 0.5  # max global grad norm; 0 = no clipping
    warmup_steps: int = 3000
    scheduler: Scheduler = "noam"
    # losses
    mel_weight: float = 1.0
    kl_weight: float = 0.5  # the seed's "KL": alignment prior vs cross-attention, not a VAE term
    stop_weight: float = 1.0
    stop_pos_weight: float = 5.0
    # "kl": the seed's KL(prior || attention); "guided": Tachibana's guided attention (both weighted by
    # kl_weight, width alignment_width); "prior": a beta-binomial prior added to the decoder's cross-
    # attention scores (prior_layers), faded out over training, plus the forward-sum (CTC) alignment loss
    # weighted by forward_sum_weight (Badlani et al. 2022; NeMo's Magpie-TTS). kl_weight and
    # alignment_width do not act on "prior", nor the prior_* fields and forward_sum_weight on the others.
    alignment_loss: AlignmentLoss = "kl"
    alignment_width: float = 0.2
    # The beta-binomial's scaling (a = s * t, b = s * (T + 1 - t)): smaller is broader. NeMo uses 0.5.
    prior_scaling: float = 0.5
    # The prior is whole until this step, then fades linearly (NeMo's interpolation towards all ones) ...
    prior_anneal_start: int = 250
    # ... and from this step on it is gone: the training step is then the one free-running decoding
    # mirrors. Decoding never has the prior (it needs the utterance's length, which decoding does not know).
    # NeMo fades it between steps 5,000 and 8,000 of far longer runs; here the forward-sum loss has the
    # prior-free attention aligned by step 250-500, so the prior is gone well before speech (~2,750).
    prior_anneal_end: int = 1000
    # Weight of the forward-sum loss on the prior-free attention (mean over the prior's layers). On the
    # tiny model, at 1.0 the attention aligned early but the mel trained slower than with guided
    # attention; at 0.1 it aligned as early with guided attention's mel, and decoded closer to speech
    # (figures: docs/measurements.md).
    forward_sum_weight: float = 0.1
    # The share of that weight left once the prior has faded out: the loss fades with the prior, from its
    # whole weight at prior_anneal_start to this share at prior_anneal_end. 1.0 = no fade. The loss is what
    # aligns the attention early, but held at its weight it slows the mel (figures: docs/measurements.md).
    forward_sum_final_share: float = 1.0
    # Which decoder layers get the prior and the forward-sum loss: "all" (NeMo's default, every layer
    # that attends to the text) or "alignment", the one layer the KL and guided losses act on.
    prior_layers: PriorLayers = "all"
    adaptive_loss_weights: bool = False
    adaptive_momentum: float = 0.99  # EMA momentum of the mel running mean (trainer/adaptive.py)
    label_smoothing: bool = False
    label_smoothing_amount: float = 0.1
    huber_loss: bool = False
    huber_delta: float = 1.0
    precision: Precision = "fp32"  # fp16 uses a GradScaler
    # The first this many steps train on the shortest utterances only, their share growing from 30% to all
    # (tts_model/curriculum.py); 0 = off, every epoch sees all of the data, as the seed trained.
    length_curriculum_steps: int = 0
    # run length and bookkeeping
    batch_size: int = 16
    epochs: int = 100
    max_steps: int = 0  # 0 = the epochs decide
    eval_every: int = 500
    checkpoint_every: int = 1000  # steps, as the seed intended (its code counted epochs)
    keep_checkpoints: int = 3
    seed: int = 0
    model_size: str = "normal"  # our "normal" = the seed's "tiny" dims
    # Mel frames per decoder step; 0 = the model size's own (tts_model/config.py). Larger means fewer,
    # coarser decoder steps: Tacotron's lever for an early alignment (Coqui trains with a large one first).
    reduction_factor: int = 0
    norm: Norm = "post"
    max_recoveries: int = 3
    recovery_lr_factor: float = 0.5
    guards: GuardConfig = field(default_factory=GuardConfig)

    def __post_init__(self) -> None:
        _check_types(self)
        _check_range("lr", self.lr, gt=0.0, le=1.0)
        _check_range("weight_decay", self.weight_decay, ge=0.0, lt=1.0)
        _check_range("grad_clip", self.grad_clip, ge=0.0)
        _check_range("warmup_steps", self.warmup_steps, ge=0)
        _check_range("mel_weight", self.mel_weight, gt=0.0)
        for name in ("kl_weight", "stop_weight"):
            _check_range(name, getattr(self, name), ge=0.0)
        _check_range("stop_pos_weight", self.stop_pos_weight, gt=0.0)
        _check_range("alignment_width", self.alignment_width, gt=0.0, le=1.0)
        _check_range("prior_scaling", self.prior_scaling, gt=0.0, le=100.0)
        _check_range("prior_anneal_start", self.prior_anneal_start, ge=0)
        _check_range("prior_anneal_end", self.prior_anneal_end, ge=self.prior_anneal_start)
        _check_range("forward_sum_weight", self.forward_sum_weight, ge=0.0)
        _check_range("forward_sum_final_share", self.forward_sum_final_share, ge=0.0, le=1.0)
        _check_range("adaptive_momentum", self.adaptive_momentum, ge=0.0, lt=1.0)
        _check_range("label_smoothing_amount", self.label_smoothing_amount, ge=0.0, le=0.5)
        _check_range("huber_delta", self.huber_delta, gt=0.0)
        for name in ("batch_size", "epochs", "eval_every", "checkpoint_every", "keep_checkpoints"):
            _check_range(name, getattr(self, name), ge=1)
        for name in ("max_steps", "seed", "max_recoveries", "length_curriculum_steps", "reduction_factor"):
            _check_range(name, getattr(self, name), ge=0)
        _check_range("recovery_lr_factor", self.recovery_lr_factor, gt=0.0, lt=1.0)
        sizes = model_sizes()
        if self.model_size not in sizes:
            raise _fail("model_size", f"must be one of {', '.join(sorted(sizes))}, got {self.model_size!r}")


def model_sizes() -> frozenset[str]:
    """The model sizes tts_model/config.py defines (the model owns its sizes)."""
    return frozenset(MODEL_SIZES)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_types(cfg: Any) -> None:
    """Reject wrong types at construction (a bool is not a number here) and store ints given for floats
    as floats, so configs compare and serialise the same however they were written."""
    for f in dataclasses.fields(cfg):
        hint, value = _hints(type(cfg))[f.name], getattr(cfg, f.name)
        if typing.get_origin(hint) is Literal:
            choices = typing.get_args(hint)
            if value not in choices or not isinstance(value, str):
                raise _fail(f.name, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        elif hint is bool:
            if not isinstance(value, bool):
                raise _fail(f.name, f"must be true or false, got {value!r}")
        elif hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _fail(f.name, f"must be an integer, got {value!r}")
        elif hint is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _fail(f.name, f"must be a number, got {value!r}")
            if not math.isfinite(value):
                raise _fail(f.name, f"must be a finite number, got {value!r}")
            object.__setattr__(cfg, f.name, float(value))
        elif hint is str:
            if not isinstance(value, str):
                raise _fail(f.name, f"must be a string, got {value!r}")
        elif isinstance(hint, type) and not isinstance(value, hint):
            raise _fail(f.name, f"must be a {hint.__name__}, got {value!r}")


def _check_range(
    name: str,
    value: float,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> None:
    """Written so NaN fails every bound; the message states the whole allowed range."""
    bounds = [(">", gt, lambda v, b: v > b), (">=", ge, lambda v, b: v >= b)]
    bounds += [("<", lt, lambda v, b: v < b), ("<=", le, lambda v, b: v <= b)]
    active = [(op, bound, ok) for op, bound, ok in bounds if bound is not None]
    if all(ok(value, bound) for _, bound, ok in active):
        return
    allowed = " and ".join(f"{op} {bound:g}" for op, bound, _ in active)
    raise _fail(name, f"must be {allowed}, got {value!r}")


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """JSON-safe plain data (guards as a nested object), in field order so two configs diff cleanly."""
    return dataclasses.asdict(cfg)


def _coerce(cls: type, name: str, value: Any, prefix: str) -> Any:
    """JSON has one number type: accept 3000.0 for an int field and 1 for a float field, nothing looser."""
    hint = _hints(cls)[name]
    if hint is int and isinstance(value, float):
        if not value.is_integer():
            raise _fail(prefix + name, f"must be an integer, got {value!r}")
        return int(value)
    return value


def _changes(cls: type, mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    known = [f.name for f in dataclasses.fields(cls)]
    out = {}
    for key, value in mapping.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown field '{prefix}{key}'{hint}", field=f"{prefix}{key}")
        out[key] = _coerce(cls, key, value, prefix)
    return out


def apply_overrides(cfg: TrainConfig, mapping: Mapping[str, Any], *, where: str) -> TrainConfig:
    """`cfg` with the fields in `mapping` replaced (keys are TrainConfig field names; "guards" takes a
    dict of GuardConfig fields, applied over `cfg.guards`, or a GuardConfig). Any bad key or value fails
    with one line: `where`, the field, the allowed range."""
    try:
        changes = _changes(TrainConfig, mapping)
        guards = changes.get("guards")
        if isinstance(guards, Mapping):
            guard_changes = _changes(GuardConfig, guards, prefix="guards.")
            try:
                changes["guards"] = dataclasses.replace(cfg.guards, **guard_changes)
            except ConfigError as exc:
                raise _fail(f"guards.{exc.field}", exc.problem or "") from None
        return dataclasses.replace(cfg, **changes)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}", field=exc.field, problem=exc.problem) from None


def with_overrides(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    """Keyword form of `apply_overrides` for code and tests."""
    return apply_overrides(cfg, changes, where="overrides")
