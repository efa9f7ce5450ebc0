from __future__ import annotations

import dataclasses
import math
import warnings

import optuna
import pytest
from optuna.trial import TrialState
from test_space import BASIC, ENHANCED

from common.errors import UserError
from space.stability import distributions, preset_params, suggest
from studies.binding import (
    base_config,
    recipe_config,
    rung_lr,
    train_overrides,
    trial_config,
    trial_steps,
)
from studies.evidence.ranks import MIN_PAIRS
from studies.presets_seed import enqueue_presets, seeded_presets
from studies.pruner import PrunerSettings, StabilityPruner
from studies.record_keys import PRESET as PRESET_ATTR
from studies.registry import (
    SamplerSpec,
    ScoringSpec,
    SpeechRung,
    StudyDef,
    get_study,
    make_pruner,
    make_sampler,
    study_names,
    tpe_gamma,
)
from trainer.config import apply_overrides
from trainer.schedules import lr_at

optuna.logging.set_verbosity(optuna.logging.WARNING)
PRESETS = {"basic": BASIC, "enhanced": ENHANCED}


def test_known_studies() -> None:
    assert {"stability", "stability-quick"} <= set(study_names())
    gpu, quick = get_study("stability"), get_study("stability-quick")
    assert (gpu.model_size, gpu.precision, gpu.n_trials, gpu.space.warmup_max) == ("normal", "fp16", 50, 4000)
    assert (quick.model_size, quick.precision, quick.n_trials) == ("tiny", "fp32", 10)
    # the speech rung: long enough for speech (README, The speech rung), past the screen, capped
    assert quick.speech_rung is not None and quick.speech_rung.horizon >= 5 * quick.horizon
    assert gpu.speech_rung is None and gpu.alignment_loss == quick.alignment_loss == "prior"
    assert quick.presets == gpu.presets == ("basic", "enhanced")
    assert quick.scoring.decode_sentences > 0


def test_unknown_study_is_one_line_listing_the_known_ones() -> None:
    with pytest.raises(UserError) as info:
        get_study("stabilty")
    message = str(info.value)
    assert "\n" not in message and "stability-quick" in message and "'stabilty'" in message


def test_quick_study_and_its_rung_stay_within_their_step_budget() -> None:
    # make run's steps: every screen (unpruned, mean warmup) plus the capped rung's promotions, each
    # going on from its screen to the rung. Two 1-thread workers trained 6.9 steps/s in all on a quiet day
    # (bench/bench_model_speed.py --corpus --threads 1, twice at once) and 4.7 on a slow one (2026-12-03):
    # 8,600 steps unpruned is 21 min on the first and 31 on the second, over the 15-minute target either
    # way (README, The speech rung). This keeps the study from growing past that without anyone deciding.
    quick = get_study("stability-quick")
    rung = quick.speech_rung
    assert rung is not None
    promoted = rung.most_promoted(quick.n_trials)
    mean_steps = trial_steps(quick, quick.space.warmup_max // 2)
    assert 150 <= mean_steps <= 350
    total = quick.n_trials * mean_steps + promoted * (rung.horizon - quick.horizon)
    assert total / 6.9 <= 25 * 60
    # The rung agreement's Spearman needs MIN_PAIRS trials at both rungs.
    assert promoted >= MIN_PAIRS
    # Trials evaluate at multiples of eval_every: the pruner's first rung must be one of them.
    assert quick.pruner.min_step % quick.eval_every == 0


@pytest.mark.parametrize("name", ["stability", "stability-quick"])
def test_presets_land_inside_every_study_space(name: str) -> None:
    study = get_study(name)
    dists = distributions(study.space)
    for values in PRESETS.values():
        for param, value in preset_params(values, study.space).items():
            assert dists[param]._contains(dists[param].to_internal_repr(value)), (name, param)


def test_past_its_screen_a_run_to_the_speech_rung_trains_at_the_full_training_s_lr() -> None:
    """The rung judges speech at the lr the exported preset will have at those steps: through the screen
    the study's schedule (its short warmup), past it the schedule of the full training (the warmup on the
    seed's scale, as the export maps it), to the rung's end."""
    quick = get_study("stability-quick")
    rung = quick.speech_rung
    assert rung is not None
    params = preset_params(BASIC, quick.space)  # warmup 90 in the study, 3,000 in a full training
    warmup = params["warmup_steps"]
    end = warmup + rung.horizon
    cfg = recipe_config(quick, params, seed=0, steps=end, where="test")
    lr = rung_lr(quick, cfg, params)
    assert lr is not None
    screen_end = trial_steps(quick, warmup)
    full = apply_overrides(cfg, quick.space.export_overrides(dict(params)), where="export")
    assert full.warmup_steps == BASIC["warmup_steps"] and full.lr == cfg.lr
    for step in (1, warmup, screen_end):
        assert lr(step) == lr_at(step, cfg)
    for step in (screen_end + 1, 1000, end):
        assert lr(step) == pytest.approx(lr_at(step, full))
    # what the rung gains: at its end the study's schedule had decayed to under a third of the full
    # training's lr (0.21 of the peak against 0.70 for basic)
    assert lr_at(end, cfg) < lr(end) / 3
    # a study without a speech rung trains its config's schedule
    assert rung_lr(dataclasses.replace(quick, speech_rung=None), cfg, params) is None


def test_trial_steps() -> None:
    quick = get_study("stability-quick")
    assert trial_steps(quick, 150) == 150 + quick.horizon
    with pytest.raises(ValueError):
        trial_steps(quick, -1)


def test_study_def_checks_its_fields() -> None:
    quick = get_study("stability-quick")
    with pytest.raises(ValueError, match="precision"):
        dataclasses.replace(quick, precision="fp8")
    with pytest.raises(ValueError, match="model_size"):
        dataclasses.replace(quick, model_size="huge")
    with pytest.raises(ValueError, match="eval_every"):
        dataclasses.replace(quick, eval_every=quick.horizon + 1)
    with pytest.raises(ValueError, match="alignment_loss"):
        dataclasses.replace(quick, alignment_loss="ctc")
    with pytest.raises(ValueError, match="reduction_factor"):
        dataclasses.replace(quick, reduction_factor=-1)
    with pytest.raises(ValueError, match="form_settings"):
        dataclasses.replace(quick, form_settings=(("lr", 1.0),))  # a searched knob, not the form's
    with pytest.raises(ValueError, match="form_settings"):
        dataclasses.replace(quick, form_settings=(("prior_anneal_end", 300), ("prior_anneal_end", 400)))
    with pytest.raises(ValueError, match="keep_fraction"):
        PrunerSettings(keep_fraction=0.0)
    with pytest.raises(ValueError, match="twice"):
        ScoringSpec(guard_overrides=(("mel_ceiling", 5.0), ("mel_ceiling", 6.0)))
    with pytest.raises(ValueError, match="decode_sentences"):
        SpeechRung(horizon=100, decode_sentences=0)  # a rung that decodes nothing cannot say "speaks"
    assert isinstance(quick, StudyDef)


def test_make_sampler_and_pruner_warn_nothing() -> None:
    quick = get_study("stability-quick")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. the deprecated constraints_func would raise here
        sampler = make_sampler(quick, seed=3)
        pruner = make_pruner(quick)
    assert isinstance(sampler, optuna.samplers.TPESampler) and isinstance(pruner, StabilityPruner)


def test_sampler_is_seeded_and_reads_constraints() -> None:
    quick = get_study("stability-quick")

    def objective(trial: optuna.Trial) -> float:
        overrides = suggest(trial, quick.space)
        diverged = overrides["lr"] > 1e-3
        trial.set_constraint("diverged", 1.0 if diverged else -1.0)
        return 10.0 if diverged else overrides["lr"]

    def run(seed: int) -> list[float]:
        study = optuna.create_study(sampler=make_sampler(quick, seed))
        study.optimize(objective, n_trials=quick.sampler.n_startup_trials + 4)
        return [t.params["lr"] for t in study.trials]

    assert run(1) == run(1) != run(2)
    study = optuna.create_study(sampler=make_sampler(quick, 0))
    study.optimize(objective, n_trials=12)
    assert study.best_trial.constraints == {"diverged": -1.0}


def test_gamma_fraction_sets_how_many_trials_tpe_calls_good() -> None:
    assert [tpe_gamma(0.1, n) for n in (1, 10, 11, 20, 1000)] == [1, 1, 2, 2, 25]
    assert [tpe_gamma(0.25, n) for n in (1, 10, 20)] == [1, 3, 5]
    with pytest.raises(ValueError, match="gamma_fraction"):
        SamplerSpec(gamma_fraction=0.0)
    # The knob reaches the sampler: same history and seed, different proposals.
    quick = get_study("stability-quick")

    def proposals(fraction: float) -> list[float]:
        study_def = dataclasses.replace(
            quick, sampler=dataclasses.replace(quick.sampler, gamma_fraction=fraction)
        )
        study = optuna.create_study(sampler=make_sampler(study_def, 0))
        study.optimize(lambda t: abs(math.log10(suggest(t, quick.space)["lr"]) + 3), n_trials=16)
        return [t.params["lr"] for t in study.trials[quick.sampler.n_startup_trials :]]

    assert proposals(0.1) != proposals(0.5)


def test_protect_stop_margin_reaches_the_pruner() -> None:
    quick = get_study("stability-quick")
    assert make_pruner(quick).settings.protect_stop_margin == quick.pruner.protect_stop_margin
    off = dataclasses.replace(quick, pruner=dataclasses.replace(quick.pruner, protect_stop_margin=None))
    assert make_pruner(off).settings.protect_stop_margin is None


def test_train_overrides_are_valid_trainer_overrides() -> None:
    config = pytest.importorskip("trainer.config")
    presets = pytest.importorskip("trainer.presets")
    for name in study_names():
        study = get_study(name)
        params = preset_params(BASIC, study.space)
        overrides = {
            **train_overrides(study),
            **params,
            "max_steps": trial_steps(study, params["warmup_steps"]),
        }
        cfg = config.apply_overrides(presets.preset("basic"), overrides, where=f"study {name}")
        assert cfg.model_size == study.model_size and cfg.max_steps == trial_steps(study, cfg.warmup_steps)


def test_the_study_sets_the_alignment_loss_of_every_trial() -> None:
    # One form from trial to export (test_export): the attention-score prior, whose loss the space's
    # alignment weight weights (forward_sum_weight); kl_weight is that weight in the KL and guided forms.
    quick = get_study("stability-quick")
    assert quick.alignment_loss == "prior" and base_config(quick).alignment_loss == "prior"
    knobs = {"lr": 1e-3, "kl_weight": 0.7, "warmup_steps": 50}
    cfg = trial_config(quick, knobs, seed=0, where="test")
    assert cfg.forward_sum_weight == 0.7 and cfg.kl_weight == base_config(quick).kl_weight
    guided = dataclasses.replace(quick, alignment_loss="guided")
    cfg = trial_config(guided, knobs, seed=0, where="test")
    assert cfg.alignment_loss == "guided" and cfg.kl_weight == 0.7
    with pytest.raises(ValueError, match="alignment_loss must be one of kl, guided, prior"):
        dataclasses.replace(quick, alignment_loss="ctc")


# enqueue_presets (studies/presets_seed.py)


def test_enqueue_presets_once_per_study() -> None:
    spec = get_study("stability-quick").space
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    assert enqueue_presets(study, PRESETS, spec) == ["basic", "enhanced"]
    assert enqueue_presets(study, PRESETS, spec) == []
    assert seeded_presets(study) == {"basic", "enhanced"}
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs[PRESET_ATTR] for t in waiting] == ["basic", "enhanced"]

    trial = study.ask()  # the enqueued params are used as they are
    assert suggest(trial, spec)["warmup_steps"] == spec.scale_warmup(3000) == 90
    assert trial.params == preset_params(BASIC, spec) and trial.user_attrs[PRESET_ATTR] == "basic"
    study.tell(trial, 1.0)
    assert enqueue_presets(study, PRESETS, spec) == []


def test_a_preset_already_run_is_not_enqueued_again() -> None:
    spec = get_study("stability").space
    study = optuna.create_study()
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.PRUNED,
            params=preset_params(ENHANCED, spec),
            distributions=distributions(spec),
            user_attrs={PRESET_ATTR: "enhanced"},
        )
    )
    assert enqueue_presets(study, PRESETS, spec) == ["basic"]


def test_a_preset_outside_the_space_is_a_user_error() -> None:
    spec = get_study("stability").space
    study = optuna.create_study()
    with pytest.raises(UserError, match="preset 'wild'.*lr"):
        enqueue_presets(study, {"wild": {**BASIC, "lr": 0.5}}, spec)
    assert study.trials == []


def test_a_scaled_study_shrinks_every_step_count_and_keeps_its_own_name() -> None:
    from studies.binding import guard_config
    from studies.registry import scaled

    gpu = get_study("stability")
    small = scaled(gpu, 0.05)
    assert small.name == "stability-x0.05" and small.needs_gpu
    assert (small.horizon, small.eval_every, small.pruner.min_step) == (100, 12, 48)
    assert small.space.warmup_max == 200 and small.space.warmup_max % small.space.warmup_step == 0
    guards, full = guard_config(small), guard_config(gpu)
    assert guards.collapse_min_steps == round(full.collapse_min_steps * 0.05)
    assert guards.explosion_min_steps == round(full.explosion_min_steps * 0.05)
    # The presets still land on the scaled warmup grid.
    dists = distributions(small.space)
    for values in PRESETS.values():
        for param, value in preset_params(values, small.space).items():
            assert dists[param]._contains(dists[param].to_internal_repr(value)), param
    assert scaled(gpu, 1.0) is gpu


def test_the_study_s_frames_a_step_and_loss_fade_reach_every_run_s_config() -> None:
    quick = get_study("stability-quick")
    params = preset_params(dict(PRESETS["basic"]), quick.space)
    for r, share in ((0, 1.0), (4, 0.25)):
        study = dataclasses.replace(
            quick, reduction_factor=r, form_settings=(("forward_sum_final_share", share),)
        )
        cfg = recipe_config(study, params, seed=0, steps=10, where="test")
        assert (cfg.reduction_factor, cfg.forward_sum_final_share) == (r, share)
        assert (f"at {r} frames a decoder step" in study.trial_words) == bool(r)
