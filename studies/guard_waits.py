"""How many steps each step guard waits before it judges a trial of the user's trainer: sized to the trial.

``GuardConfig``'s waits (100 steps for the explosion, spike and ceiling guards, 2,000 for collapse) suit
the project's full trainings. In a 300-step trial a 100-step wait lets a gradient norm grow unjudged for
a third of the run: an ``enhanced`` preset reached a norm of 3.7e87 by step 101, where the explosion
guard first looked. So the waits ``[guards]`` does not set are the shares of the trial's length
(``[study] steps``) that the built-in ``stability-quick`` study gives its 300-step horizon
(``studies/registry.py``), never above the defaults: 300 steps wait as that study's trials do.

A trial's length known only once a trial has run is not used: the guards are fixed when the study is
loaded, and judging one study's trials by two sets of guards would make their verdicts incomparable.
The search's start line says what each guard waits for, and where the waits came from.
"""

from __future__ import annotations

from studies.registry import get_study
from trainer.config import GuardConfig
from trainer.guards import MIN_STEPS_FIELDS

MIN_WAIT = 5  # a median or an EMA over fewer steps is noise, whatever the trial's length
SIGNALS = (("explosion", "grad_norm"), ("ceiling", "mel"), ("collapse", "alignment"))


def wait_shares() -> dict[str, float]:
    """Each step guard's wait as a share of a trial's steps, as ``stability-quick`` sizes its own. A
    guard with a wait but no share there is a KeyError here, so a new guard cannot be left unsized."""
    quick = get_study("stability-quick")
    waits = dict(quick.scoring.guard_overrides)
    return {f: waits[f] / quick.horizon for f in MIN_STEPS_FIELDS}


def sized_waits(steps: int) -> dict[str, int]:
    """The GuardConfig min-steps fields for a trial of ``steps`` steps."""
    defaults = GuardConfig()
    return {
        f: min(getattr(defaults, f), max(MIN_WAIT, round(share * steps)))
        for f, share in wait_shares().items()
    }


def waits_line(guards: GuardConfig, *, steps: int | None, warmup: str | None) -> str:
    """One line: what each guard waits for before it judges (the search says it at its start)."""
    after_warmup = " and the warmup" if warmup else ""
    explosion, spike = guards.explosion_min_steps, guards.spike_min_steps
    if explosion == spike:
        first = f"explosion and spike judge after step {explosion}"
    else:
        first = f"explosion judges after step {explosion}, spike after step {spike}"
    parts = [
        first,
        f"the ceiling after step {guards.ceiling_min_steps}{after_warmup}",
        f"collapse from step {guards.collapse_min_steps}{after_warmup}",
    ]
    defaults = GuardConfig()
    if steps is not None:
        source = f" (sized to [study] steps = {steps} where [guards] sets none)"
    elif any(getattr(guards, f) == getattr(defaults, f) for f in MIN_STEPS_FIELDS):
        source = " (GuardConfig's defaults where [guards] sets none, for long runs: [study] steps sizes them to your trial)"
    else:
        source = " (from [guards])"
    off = ", ".join(f"{kind} ({signal})" for kind, signal in SIGNALS)
    return f"guards: {', '.join(parts)}{source}; off if your trainer does not report their signal: {off}"
