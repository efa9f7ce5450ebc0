from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from studies.pruner import PrunerSettings, StabilityPruner, is_diverged

optuna.logging.set_verbosity(optuna.logging.WARNING)
NAN = float("nan")
INF = float("inf")


def make_study(direction: str = "minimize", **kwargs: object) -> optuna.Study:
    settings = dict(
        keep_fraction=0.5, min_step=0, n_startup_trials=0, n_min_peers=1, protect_stop_margin=None
    )
    settings.update(kwargs)
    return optuna.create_study(
        storage=optuna.storages.InMemoryStorage(),
        direction=direction,
        pruner=StabilityPruner(PrunerSettings(**settings)),  # type: ignore[arg-type]
    )


def add_peer(
    study: optuna.Study,
    values: dict[int, float],
    *,
    state: TrialState = TrialState.PRUNED,
    user_attrs: dict | None = None,
    constraints: dict[str, float] | None = None,
) -> None:
    """A finished trial with hand-written intermediate values."""
    last = values[max(values)] if values else 0.0
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=(last if math.isfinite(last) else 1e9) if state == TrialState.COMPLETE else None,
            intermediate_values=values,
            user_attrs=user_attrs or {},
            system_attrs={f"constraints:{k}": v for k, v in (constraints or {}).items()},
        )
    )


def judged(study: optuna.Study, values: dict[int, float]) -> bool:
    """Report `values` in a fresh running trial and ask the study's pruner."""
    trial = study.ask()
    for step, value in values.items():
        trial.report(value, step)
    return trial.should_prune()


def test_non_finite_latest_value_prunes_at_once() -> None:
    # No peers, a large min_step and many startup trials: divergence needs none of them.
    study = make_study(min_step=1000, n_startup_trials=10)
    assert judged(study, {5: NAN})
    assert judged(study, {5: INF})
    assert judged(study, {5: -INF})
    assert not judged(study, {5: 3.0})


def test_nan_after_good_values_prunes_where_optuna_median_does_not() -> None:
    assert judged(make_study(), {40: 2.0, 80: NAN})
    # Optuna's MedianPruner judges the best value over steps (nanmin): the NaN trial survives.
    median = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0))
    add_peer(median, {40: 3.0, 80: 3.0}, state=TrialState.COMPLETE)
    assert not judged(median, {40: 2.0, 80: NAN})


def test_diverged_user_attr_prunes() -> None:
    study = make_study(min_step=1000)
    trial = study.ask()
    trial.report(3.0, 10)
    assert not trial.should_prune()
    trial.set_user_attr("diverged", True)
    assert trial.should_prune()


def test_violated_constraint_prunes() -> None:
    study = make_study(min_step=1000)
    feasible = study.ask()
    feasible.report(3.0, 10)
    feasible.set_constraint("diverged", -1.0)
    assert not feasible.should_prune()
    infeasible = study.ask()
    infeasible.report(3.0, 10)
    infeasible.set_constraint("diverged", 1.0)
    assert infeasible.should_prune()


def test_median_rule_at_the_same_step() -> None:
    study = make_study(n_min_peers=3)
    for value in (1.0, 2.0, 3.0):
        add_peer(study, {40: value, 80: value})
    assert judged(study, {40: 2.5})
    assert not judged(study, {40: 1.5})
    assert not judged(study, {40: 2.0})  # at the bar: kept


def test_peer_nan_and_inf_do_not_poison_the_bar() -> None:
    study = make_study(n_min_peers=3)
    for value in (1.0, 2.0, 3.0):
        add_peer(study, {40: value})
    add_peer(study, {40: NAN})
    add_peer(study, {40: INF})
    assert judged(study, {40: 2.5})  # bar = median(1, 2, 3) = 2, not NaN or a value pulled by Inf
    assert not judged(study, {40: 1.5})


def test_too_few_finite_peers_at_the_step_keeps_the_trial() -> None:
    study = make_study(n_min_peers=3)
    add_peer(study, {40: 1.0})
    add_peer(study, {40: 1.0})
    add_peer(study, {40: NAN})
    add_peer(study, {80: 1.0})  # another step: not a peer at 40
    assert not judged(study, {40: 9.0})


def test_startup_trials_delay_mel_pruning() -> None:
    study = make_study(n_startup_trials=4)
    for value in (1.0, 1.0, 1.0):
        add_peer(study, {40: value})
    assert not judged(study, {40: 9.0})
    add_peer(study, {40: 1.0})
    assert judged(study, {40: 9.0})


def test_min_step_delays_mel_pruning() -> None:
    study = make_study(min_step=80)
    for value in (1.0, 1.0, 1.0):
        add_peer(study, {40: value, 80: value})
    assert not judged(study, {40: 9.0})
    assert judged(study, {40: 1.0, 80: 9.0})


def warming_trial(study: optuna.Study, warmup: int) -> optuna.Trial:
    study.enqueue_trial({"warmup_steps": warmup})
    trial = study.ask()
    assert trial.suggest_int("warmup_steps", 0, 200, step=10) == warmup
    return trial


def test_no_mel_pruning_inside_the_trial_own_warmup() -> None:
    study = make_study()
    for value in (1.0, 1.0, 1.0):
        add_peer(study, {40: value, 80: value, 120: value})
    trial = warming_trial(study, 100)
    trial.report(9.0, 40)
    assert not trial.should_prune()  # step 40 < warmup 100
    trial.report(9.0, 120)
    assert trial.should_prune()
    diverging = warming_trial(study, 100)
    diverging.report(NAN, 40)
    assert diverging.should_prune()  # divergence needs no warmup to have ended
    lax = make_study(respect_warmup=False)
    add_peer(lax, {40: 1.0})
    lax_trial = warming_trial(lax, 100)
    lax_trial.report(9.0, 40)
    assert lax_trial.should_prune()


def test_running_trials_are_not_peers() -> None:
    study = make_study(n_min_peers=1)
    running = study.ask()
    running.report(1.0, 40)
    assert not judged(study, {40: 9.0})
    # A peer that ran on past step 40 (where COMPLETE trials ended is a trial's last eval: never pruned).
    add_peer(study, {40: 1.0, 80: 1.0}, state=TrialState.COMPLETE)
    assert judged(study, {40: 9.0})


def test_diverged_peers_do_not_set_the_bar() -> None:
    # Fast settings learn quickly, then blow up: their early values must not prune stable ones.
    for exclude in (True, False):
        study = make_study(n_min_peers=2, exclude_diverged_peers=exclude)
        add_peer(study, {40: 5.0})
        add_peer(study, {40: 5.0})
        add_peer(study, {40: 0.5, 80: NAN}, user_attrs={"diverged": True})
        add_peer(study, {40: 0.5}, constraints={"diverged": 1.0})
        assert judged(study, {40: 4.0}) is (not exclude)


def test_keep_fraction_is_a_successive_halving_rule() -> None:
    study = make_study(keep_fraction=1 / 3, n_min_peers=3)
    for value in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0):
        add_peer(study, {40: value})
    assert judged(study, {40: 3.5})  # bar = 1/3 quantile = 3.0
    assert not judged(study, {40: 3.0})
    everyone = make_study(keep_fraction=1.0, n_min_peers=1)
    add_peer(everyone, {40: 1.0})
    assert not judged(everyone, {40: 9.0})


def test_maximize_direction() -> None:
    study = make_study(direction="maximize", n_min_peers=3)
    for value in (1.0, 2.0, 3.0):
        add_peer(study, {40: value})
    assert judged(study, {40: 1.5})
    assert not judged(study, {40: 2.5})


def test_no_report_no_prune() -> None:
    study = make_study()
    assert not study.ask().should_prune()


def test_is_diverged() -> None:
    study = make_study()
    add_peer(study, {1: 1.0}, user_attrs={"diverged": False}, constraints={"diverged": 0.0})
    add_peer(study, {1: 1.0}, constraints={"diverged": 0.5})
    assert [is_diverged(t) for t in study.trials] == [False, True]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(keep_fraction=0.0), "keep_fraction"),
        (dict(keep_fraction=1.5), "keep_fraction"),
        (dict(min_step=-1), "min_step"),
        (dict(n_startup_trials=-1), "n_startup_trials"),
        (dict(n_min_peers=0), "n_min_peers"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        PrunerSettings(**kwargs)  # type: ignore[arg-type]


def test_infeasible_but_finished_peers_still_count() -> None:
    # Measured: in a quick study every early trial finished infeasible (unaligned / decode never stops);
    # treating those as diverged left no peers, so no slow trial was ever pruned on mel.
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    for value in (3.9, 3.35, 2.6, 2.6):
        add_peer(study, {100: value}, constraints={"diverged": -1.0, "unaligned": 0.1, "decode_no_stop": 1.2})
    pruner = StabilityPruner(PrunerSettings(keep_fraction=0.5, n_startup_trials=4, n_min_peers=3))
    slow = study.ask()
    slow.report(3.9, 100)
    assert pruner.prune(study, study._storage.get_trial(slow._trial_id))


def test_a_trial_learning_to_speak_is_not_pruned_on_mel_but_still_on_divergence() -> None:
    study = make_study(n_min_peers=3, protect_stop_margin=0.1)
    for value in (1.0, 2.0, 3.0):
        add_peer(study, {40: value})

    def judged_with_margin(values: dict[int, float], margin: float | None) -> bool:
        trial = study.ask()
        if margin is not None:
            trial.set_user_attr("stop_end_margin", margin)
        for step, value in values.items():
            trial.report(value, step)
        return trial.should_prune()

    assert judged_with_margin({40: 2.5}, None)  # no margin recorded: the mel rule
    assert judged_with_margin({40: 2.5}, 0.05)  # below the bound: the mel rule
    assert judged_with_margin({40: 2.5}, float("nan"))
    assert not judged_with_margin({40: 2.5}, 0.23)  # protected
    assert judged_with_margin({40: float("nan")}, 0.23)  # divergence prunes anyway
