"""Named study definitions: space, budget, horizon, pruner, sampler, scoring, presets to seed.

A study is plain frozen data so two studies can be diffed, and every number the lead may tune
(trial budget, horizon, rung spacing, pruning aggressiveness) is a field, not a constant buried in
the objective. ``stability`` is the seed's setting on a GPU; ``stability-quick`` is the same
question sized to finish on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
import warnings
from dataclasses import dataclass, field

import optuna

from common.errors import UserError
from space import SearchSpace
from space.stability import SpaceSpec
from studies.pruner import PrunerSettings, StabilityPruner
from studies.startup_sampler import SobolStartupTPESampler
from trainer.config import AlignmentLoss, GuardConfig, config_to_dict
from trainer.data import SPEECH_SENTENCES
from trainer.guards import MIN_STEPS_FIELDS
from trainer.presets import preset
from tts_model.config import MODEL_SIZES

ALIGNMENT_FORMS: tuple[str, ...] = typing.get_args(AlignmentLoss)

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True, kw_only=True, slots=True)
class SamplerSpec:
    """TPE settings. ``constant_liar`` keeps parallel workers from piling onto one point.

    gamma_fraction: the share of finished trials TPE models as "good" (capped at 25 trials). Optuna's
    default, 0.1, suits hundreds of trials; in a 20-trial study it leaves one or two, so TPE samples
    near whichever trial happened to rank first.
    """

    n_startup_trials: int = 10
    multivariate: bool = True
    constant_liar: bool = True
    gamma_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.n_startup_trials < 0:
            raise ValueError(f"SamplerSpec.n_startup_trials must be >= 0, got {self.n_startup_trials}")
        if not 0.0 < self.gamma_fraction <= 1.0:
            raise ValueError(f"SamplerSpec.gamma_fraction must be in (0, 1], got {self.gamma_fraction}")


@dataclass(frozen=True, kw_only=True, slots=True)
class ScoringSpec:
    """How a trial that did not diverge is judged.

    The thresholds themselves are the trainer's ``GuardConfig`` (mel ceiling, collapse, decode
    length); a study only overrides those whose step counts must shrink to fit its horizon, as
    ``(GuardConfig field, value)`` pairs, so there is one definition of "stable", not two.
    decode_sentences: validation sentences decoded free-running at the end of a trial.
    """

    decode_sentences: int = 3
    guard_overrides: tuple[tuple[str, float | int], ...] = ()

    def __post_init__(self) -> None:
        if self.decode_sentences < 0:
            raise ValueError(f"ScoringSpec.decode_sentences must be >= 0, got {self.decode_sentences}")
        names = [name for name, _ in self.guard_overrides]
        if len(names) != len(set(names)):
            raise ValueError(f"ScoringSpec.guard_overrides names a field twice: {names}")


@dataclass(frozen=True, kw_only=True, slots=True)
class SpeechRung:
    """The long rung of successive halving (``studies.promotion``): the best aligned screens go on to
    ``horizon`` steps past their warmup, where speech can show; the screens among the top 1/``eta`` of
    the study's trials that have ended, once ``min_peers`` + 1 have (by rank among all, not by arrival),
    and at most 1/``eta`` of the trials asked for (``most_promoted``).

    decode_sentences: validation sentences decoded at the rung's end, where the export's "speaks" is
    judged: as many as the exported preset's full training decodes (``SPEECH_SENTENCES``), more than a
    screen's (``ScoringSpec.decode_sentences``).
    """

    horizon: int
    eta: int = 3
    min_peers: int = 3
    decode_sentences: int = SPEECH_SENTENCES

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise ValueError(f"SpeechRung.horizon must be >= 1, got {self.horizon}")
        if self.eta < 2:
            raise ValueError(f"SpeechRung.eta must be >= 2, got {self.eta}")
        if self.min_peers < 1:
            raise ValueError(f"SpeechRung.min_peers must be >= 1, got {self.min_peers}")
        if self.decode_sentences < 1:
            raise ValueError(f"SpeechRung.decode_sentences must be >= 1, got {self.decode_sentences}")

    def most_promoted(self, planned: int) -> int:
        """The cap on promotions in a study of ``planned`` trials (``--trials N``): floor(N / eta), what
        the rule keeps once all N have ended. A promotion once made stands, so without the cap screens
        that led early and better ones that ended later could all go on. It grows with N: a study resumed
        with more trials promotes more (10 trials: 3, 20: 6)."""
        return planned // self.eta


# The alignment form's settings a study may fix for all its runs (StudyDef.form_settings).
FORM_SETTINGS = frozenset(
    {"prior_anneal_start", "prior_anneal_end", "forward_sum_final_share", "prior_scaling"}
)


@dataclass(frozen=True, kw_only=True, slots=True)
class StudyDef:
    """Everything that makes one named study; the objective and CLI read it, never mutate it.

    horizon: steps each trial trains at peak lr after its warmup (``trial_steps``).
    eval_every: validation interval in steps; rungs are its multiples so trials meet at one step.
    """

    name: str
    description: str
    space: SearchSpace
    model_size: str
    precision: str
    batch_size: int
    n_trials: int
    horizon: int
    eval_every: int
    pruner: PrunerSettings
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    scoring: ScoringSpec = field(default_factory=ScoringSpec)
    presets: tuple[str, ...] = ("basic", "enhanced")
    # One alignment form for every run of the study: trials, validation, the transfer check, the lr probe
    # and the exported preset's full training. On the tiny model the seed's KL prior never speaks (its
    # attention sits on the prior); guided attention speaks in a full training but has not aligned by a
    # trial's horizon, so a guided quick study finds nothing feasible; the "prior" form aligns within
    # the first few hundred steps, so a short trial can be judged on alignment, and speaks in a full
    # training with its long warmup (figures: docs/measurements.md). Not a knob of the space: a KL
    # trial can never pass "aligned" (over the prior), so a categorical would spend a third of the trials
    # on a form the judge rules out. The space's alignment weight (the seed's "KL" knob) weights this
    # form's loss (studies.binding.form_overrides).
    alignment_loss: AlignmentLoss = "prior"
    # The form's own settings every run of the study shares and the exported preset keeps (TrainConfig
    # fields, FORM_SETTINGS); the trainer's defaults where not named.
    form_settings: tuple[tuple[str, float | int], ...] = ()
    # Sized for a CUDA GPU: refused on a CPU unless forced with --device cpu (a trial would take hours).
    needs_gpu: bool = False
    # The long rung where the best screens are judged on speech (None: every trial is its screen only).
    speech_rung: SpeechRung | None = None
    # Mel frames per decoder step for every run of the study (TrainConfig.reduction_factor; 0 = the model
    # size's own). The exported preset keeps it: a recipe is exported in the form it was judged in.
    reduction_factor: int = 0

    def __post_init__(self) -> None:
        if self.model_size not in MODEL_SIZES:
            raise ValueError(
                f"StudyDef.model_size must be one of {', '.join(sorted(MODEL_SIZES))}, got {self.model_size!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"StudyDef.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.alignment_loss not in ALIGNMENT_FORMS:
            raise ValueError(
                f"StudyDef.alignment_loss must be one of {', '.join(ALIGNMENT_FORMS)}, got {self.alignment_loss!r}"
            )
        names = [name for name, _ in self.form_settings]
        if len(set(names)) != len(names) or not set(names) <= FORM_SETTINGS:
            raise ValueError(
                f"StudyDef.form_settings: each of {', '.join(sorted(FORM_SETTINGS))} at most once, got {names}"
            )
        if self.reduction_factor < 0:
            raise ValueError(f"StudyDef.reduction_factor must be >= 0, got {self.reduction_factor}")
        for name in ("batch_size", "n_trials", "horizon", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"StudyDef.{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every > self.horizon:
            raise ValueError(f"StudyDef.eval_every ({self.eval_every}) must be <= horizon ({self.horizon})")
        if self.speech_rung is not None and self.speech_rung.horizon <= self.horizon:
            raise ValueError(
                f"StudyDef.speech_rung.horizon ({self.speech_rung.horizon}) must be > horizon ({self.horizon})"
            )

    # -- what the launch and the evidence read of any study (``studies.foreign.ForeignStudy`` too) ------
    def preset_values(self) -> dict[str, dict]:
        """The presets it judges, as TrainConfig fields (the space turns them into params)."""
        return {name: config_to_dict(preset(name)) for name in self.presets}

    @property
    def runs_project_trainer(self) -> bool:
        return True

    @property
    def metric_label(self) -> str:
        return "val mel"

    @property
    def telemetry_metric(self) -> str:
        return "val_mel"

    @property
    def _frames_words(self) -> str:
        return f" at {self.reduction_factor} frames a decoder step" if self.reduction_factor else ""

    @property
    def trial_words(self) -> str:
        return (
            f"model {self.model_size}{self._frames_words}, {self.precision}, batch {self.batch_size}; each "
            f"trial is its warmup plus {self.horizon} steps at peak lr"
        )


def _registry() -> dict[str, StudyDef]:
    # Built on call, not at import: no module-level mutable state.
    stability = StudyDef(
        name="stability",
        description="the seed's ranges on a GPU: model 'normal', fp16 with a GradScaler, as the seed trained",
        space=SpaceSpec(warmup_max=4000, warmup_step=50, warmup_scale=1.0),
        model_size="normal",
        precision="fp16",
        batch_size=16,
        n_trials=50,
        horizon=2000,
        eval_every=250,
        pruner=PrunerSettings(keep_fraction=0.5, min_step=1000, n_startup_trials=8, n_min_peers=4),
        sampler=SamplerSpec(n_startup_trials=10),
        needs_gpu=True,
    )
    quick = StudyDef(
        name="stability-quick",
        description="the same space and scoring sized for a 2-core CPU: model 'tiny', fp32, a short horizon",
        # The horizon: on the tiny model (batch 16, fp32) the free-running decode first stops a few hundred
        # steps into training, later at a lower lr or a higher mel weight relative to the KL weight; a
        # shorter horizon left a study with no trial that stopped, and 300 widens what can succeed
        # (figures: docs/measurements.md). Mean trial ~ 50 (mean warmup) + 300 = 350 steps; pruning
        # and divergence cut that further. The seed's warmups map to 90 (basic) and 60 (enhanced).
        space=SpaceSpec(warmup_max=100, warmup_step=10, warmup_scale=0.03),
        model_size="tiny",
        precision="fp32",
        batch_size=16,
        n_trials=10,
        horizon=300,
        eval_every=50,
        pruner=PrunerSettings(keep_fraction=0.5, min_step=100, n_startup_trials=4, n_min_peers=3),
        # The prior and the forward-sum loss do their work, the alignment, in the first few hundred steps:
        # both fade out by step 300, the loss to a sixth of its weight. Held at its weight the loss slows
        # the mel, and a recipe speaks later (figures: docs/measurements.md).
        form_settings=(
            ("prior_anneal_start", 50),
            ("prior_anneal_end", 300),
            ("forward_sum_final_share", 0.17),
        ),
        # Speech is judged at a long rung: a good recipe aligns early in a trial, but its decodes only
        # creep towards speech, so the rung sits where two exported recipes first spoke in their full
        # training, 2,000 steps past the warmup, at the full training's lr (binding.rung_lr;
        # figures: docs/measurements.md). The best 1 in 3 screens, so 3 of 10 trials: 3 is the fewest
        # trials at both rungs that the rung agreement can rank (with 2 it is not computable). Each
        # promotion is ~1,700 steps more; 10 screens pay for the third (docs/speech.md). Its verdict is
        # on as many decoded sentences as the full training's (SPEECH_SENTENCES), not a screen's 3.
        speech_rung=SpeechRung(horizon=2000, eta=3, min_peers=3),
        # gamma 0.25, not Optuna's 0.1: replayed on a finished quick study's history, it put about twice
        # the share of TPE's proposals in the lr decade where that study's good trials were
        # (figures: docs/measurements.md). 6 random start-up trials (the 2 presets among them), so 4 of
        # the 10 are TPE's.
        sampler=SamplerSpec(n_startup_trials=6, gamma_fraction=0.25),
        # Guards' minimum steps scaled to a ~350-step trial. Collapse (uniform attention on a flat val
        # mel, measured at lr >= 3e-2) shows by step 150 on the tiny model, so it is judged from there.
        scoring=ScoringSpec(
            decode_sentences=3,
            guard_overrides=(
                ("explosion_min_steps", 30),
                ("spike_min_steps", 30),
                ("ceiling_min_steps", 40),
                ("collapse_min_steps", 150),
            ),
        ),
    )
    smoke = StudyDef(
        name="stability-smoke",
        description="a smoke test of the whole pipeline in about a minute on a CPU: tiny trials, no verdict worth reading",
        # 20-40 steps a trial: too short to align or stop a decode, long enough to diverge at a high lr.
        space=SpaceSpec(warmup_max=20, warmup_step=5, warmup_scale=0.005),
        model_size="tiny",
        precision="fp32",
        batch_size=16,
        n_trials=3,
        horizon=20,
        eval_every=10,
        pruner=PrunerSettings(keep_fraction=0.5, min_step=10, n_startup_trials=2, n_min_peers=1),
        sampler=SamplerSpec(n_startup_trials=2),
        scoring=ScoringSpec(
            decode_sentences=1,
            guard_overrides=(("explosion_min_steps", 10), ("spike_min_steps", 10), ("ceiling_min_steps", 10)),
        ),
    )
    return {d.name: d for d in (stability, quick, smoke)}


def study_names() -> tuple[str, ...]:
    """The known study names, for the CLI's help and its error messages."""
    return tuple(_registry())


def get_study(name: str) -> StudyDef:
    """The named study; a ``UserError`` listing the known names otherwise."""
    studies = _registry()
    if name not in studies:
        raise UserError(f"unknown study {name!r}; known studies: {', '.join(studies)}")
    return studies[name]


def scaled(study: StudyDef, factor: float) -> StudyDef:
    """The study with every step count shrunk by ``factor`` (0 < factor <= 1): horizon, evals, warmups,
    the pruner's first rung and the guards' step minimums. For checking the pipeline end to end on a
    new machine (``--horizon-scale``), never for an answer: its trials are too short to judge. It gets
    its own name, so its trials never mix with the full study's."""
    if not (math.isfinite(factor) and 0.0 < factor <= 1.0):
        raise UserError(f"--horizon-scale must be in (0, 1], got {factor}")
    if factor == 1.0:
        return study
    horizon = max(1, round(study.horizon * factor))
    eval_every = max(1, min(horizon, round(study.eval_every * factor)))
    min_step = round(study.pruner.min_step * factor / eval_every) * eval_every
    space = study.space
    warmup_step = max(1, round(space.warmup_step * factor))
    warmup_max = max(warmup_step, round(space.warmup_max * factor / warmup_step) * warmup_step)
    new_space = dataclasses.replace(
        space, warmup_max=warmup_max, warmup_step=warmup_step, warmup_scale=space.warmup_scale * factor
    )
    rung = study.speech_rung
    if rung is not None:
        rung = dataclasses.replace(rung, horizon=max(horizon + 1, round(rung.horizon * factor)))
    defaults = GuardConfig()
    current = dict(study.scoring.guard_overrides)
    guards = {
        **current,
        **{f: round(current.get(f, getattr(defaults, f)) * factor) for f in MIN_STEPS_FIELDS},
    }
    return dataclasses.replace(
        study,
        name=f"{study.name}-x{factor:g}",
        description=f"{study.description} (every step count x{factor:g}: a pipeline check, not an answer)",
        space=new_space,
        horizon=horizon,
        eval_every=eval_every,
        pruner=dataclasses.replace(study.pruner, min_step=min_step),
        scoring=dataclasses.replace(study.scoring, guard_overrides=tuple(guards.items())),
        speech_rung=rung,
    )


def make_pruner(study: StudyDef) -> StabilityPruner:
    return StabilityPruner(study.pruner, warmup_param=study.space.warmup_param)


def make_sampler(
    study: StudyDef, seed: int | None, *, study_seed: int | None = None
) -> optuna.samplers.TPESampler:
    """TPE seeded by this process's ``seed``, its start-up trials points of one Sobol sequence.

    study_seed: ``--seed``, the same in every process of the search (None: ``seed``, as in a lone search,
    where the two are one). It seeds the Sobol start-up, so the workers draw successive points of one
    sequence and spread them between them (``studies.startup_sampler``); ``seed``, a stream of each
    process's own, seeds TPE. The start-up count is TPE's ``n_startup_trials``, counted as TPE counts it.

    No ``constraints_func``: it is deprecated in Optuna 5.0. The objective calls
    ``trial.set_constraint("diverged", 1.0 or -1.0)`` instead, and TPE reads ``trial.constraints``
    of COMPLETE and PRUNED trials by itself, ranking infeasible trials below every feasible one.
    ``group`` is left off: the space is static, so group decomposition buys nothing.
    """
    s = study.sampler
    with warnings.catch_warnings():
        # `gamma` is deprecated since Optuna 4.9 (removal planned for 6.0; pyproject pins optuna < 6),
        # but its default leaves a 20-trial study's TPE with one or two "good" trials.
        warnings.filterwarnings("ignore", message=".*`gamma`.*", category=FutureWarning)
        return SobolStartupTPESampler(
            space=study.space.distributions(),
            sobol_seed=seed if study_seed is None else study_seed,
            seed=seed,
            n_startup_trials=s.n_startup_trials,
            multivariate=s.multivariate,
            constant_liar=s.constant_liar,
            gamma=functools.partial(tpe_gamma, s.gamma_fraction),
        )


def tpe_gamma(fraction: float, n_finished: int) -> int:
    """How many finished trials TPE models as good: ``ceil(fraction * n)``, at most 25 (Optuna's cap)."""
    return min(math.ceil(fraction * n_finished), 25)
