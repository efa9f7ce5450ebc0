"""The objective: one Optuna trial = one short, guarded run of the real trainer.

The trainer knows nothing of Optuna; this module adapts its callbacks to `trial.report` /
`trial.should_prune` and turns its verdict into Optuna's terms. A diverged trial ends PRUNED with
an infeasible constraint and its reason as user attributes, never FAIL: samplers learn nothing
from FAIL trials, and the map of where training diverges is what the user came for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch

from space.stability import suggest
from studies.registry import STOP_MARGIN_ATTR, StudyDef, train_overrides, trial_steps
from trainer.config import apply_overrides, preset
from trainer.data import TrainData
from trainer.evaluate import EvalMetrics
from trainer.loop import StepMetrics, TrainResult, train
from trainer.telemetry import Telemetry
from tts_model.cache import atomic_write

# Constraint keys (> 0 infeasible). TPE ranks every infeasible trial below every feasible one.
DIVERGED, UNALIGNED, NO_STOP = "diverged", "unaligned", "decode_no_stop"
# Weight of the teacher-forced stop margin in an infeasible decode's violation (`shaped_no_stop`):
# below the 1/3 a single stopped sentence of three is worth, so a decode that stops always ranks first.
STOP_SHAPING = 0.3
BASE_LEVEL = "basic"  # knobs the space does not search (stop weight, alignment form...) come from here
SAMPLE_FIELDS = ("target", "predicted", "attention", "decoded")  # EvalSample's tensors, saved per trial


@dataclass(frozen=True, slots=True)
class TrialSetup:
    study: StudyDef
    data: TrainData
    device: torch.device
    telemetry_path: Path
    seed: int


def trial_config(setup: TrialSetup, overrides: dict, *, where: str):
    """The TrainConfig a trial runs: base level + the study's shared settings + the trial's knobs."""
    cfg = apply_overrides(preset(BASE_LEVEL), train_overrides(setup.study), where=where)
    steps = trial_steps(setup.study, int(overrides["warmup_steps"]))
    return apply_overrides(cfg, {**overrides, "max_steps": steps, "seed": setup.seed}, where=where)


def make_objective(
    setup: TrialSetup, on_step: Callable[[int, int, StepMetrics], None] | None = None
) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        cfg = trial_config(setup, suggest(trial, setup.study.space), where=f"trial {trial.number}")
        trial.set_user_attr("max_steps", cfg.max_steps)

        def on_eval(ev: EvalMetrics, _sample) -> bool:
            trial.report(ev.val_mel, ev.step)
            trial.set_user_attr("last_step", ev.step)
            trial.set_user_attr(STOP_MARGIN_ATTR, round(ev.stop_end_margin, 4))  # read by the pruner
            return trial.should_prune()

        step_cb = (lambda m: on_step(trial.number, cfg.max_steps, m)) if on_step is not None else None
        with Telemetry(setup.telemetry_path) as telemetry:
            result = train(
                cfg,
                setup.data,
                device=setup.device,
                mode="trial",
                on_step=step_cb,
                on_eval=on_eval,
                telemetry=telemetry,
                run_id=f"{setup.study.name}/trial-{trial.number}",
                decode_sentences=setup.study.scoring.decode_sentences,
            )
        save_sample(sample_path(setup.telemetry_path.parent, trial.number), result)
        return score(trial, result, setup.study)

    return objective


def sample_path(study_dir: Path, number: int) -> Path:
    return study_dir / "samples" / f"trial-{number}.pt"


def save_sample(path: Path, result: TrainResult) -> None:
    """Keep the last eval's sample (a few small tensors) so the report can show the best trial's mel,
    attention and voice without training it again."""
    sample, final = result.last_sample, result.final_eval
    if sample is None or final is None:
        return
    state = {"step": final.step, "val_mel": final.val_mel, **{k: getattr(sample, k) for k in SAMPLE_FIELDS}}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def score(trial: optuna.Trial, result: TrainResult, study: StudyDef) -> float:
    """Record the evidence, set the constraints, and return val mel or end the trial PRUNED."""
    s = result.summary
    attrs = {
        "steps_run": result.steps,
        # The seed's raw criteria, as information: loss weights move both.
        "seed_loss_in_1_10": round(s.loss_in_seed_band, 4),
        "seed_grad_norm_below_1": round(s.grad_norm_below_one, 4),
        "grad_norm_median": _finite(s.grad_norm_median),
        "grad_norm_p95": _finite(s.grad_norm_p95),
        "nonfinite_events": s.nonfinite_events,
    }
    for key, value in attrs.items():
        trial.set_user_attr(key, value)

    if result.verdict is not None:  # diverged: stopped at the step a guard fired
        v = result.verdict
        trial.set_user_attr("diverged", True)
        trial.set_user_attr("verdict", v.kind)
        trial.set_user_attr("divergence_step", v.step)
        trial.set_user_attr("divergence_detail", v.detail)
        # Far worse than any finished-but-infeasible trial (violations <= ~1.5), so TPE learns to
        # avoid divergence before it learns to align.
        trial.set_constraint(DIVERGED, 10.0)
        trial.set_constraint(UNALIGNED, 0.0)
        trial.set_constraint(NO_STOP, 0.0)
        raise optuna.TrialPruned(f"diverged: {v.kind} at step {v.step}: {v.detail}")

    trial.set_constraint(DIVERGED, -1.0)
    final = result.final_eval
    guards = study_guard_thresholds(study)
    if result.stopped_by_callback or final is None:  # pruned on val mel at a rung: stable so far
        # It never showed it can speak (no final decode): scored like a finished trial whose decode
        # never stopped, ranked among those by its alignment and stop head at its last eval. A pruned
        # trial whose stop head was already firing tells TPE as much as a finished one that was not.
        trial.set_user_attr("verdict", "pruned")
        diagonality = final.diagonality if final is not None else 0.0
        stop_end_margin = final.stop_end_margin if final is not None else 0.0
        trial.set_constraint(UNALIGNED, guards["aligned_diagonality"] - diagonality)
        no_stop = decode_violation(
            None, max_ratio=guards["decode_length_ratio"], max_bad_fraction=guards["decode_max_bad_fraction"]
        )
        trial.set_constraint(NO_STOP, shaped_no_stop(no_stop, stop_end_margin))
        raise optuna.TrialPruned(f"pruned on val mel at step {result.steps}")

    # Finished: feasible only if the attention aligned and the free-running decode stops sanely.
    unaligned, no_stop = finished_violations(final, guards)
    decode = final.decode
    trial.set_constraint(UNALIGNED, unaligned)
    trial.set_constraint(NO_STOP, shaped_no_stop(no_stop, final.stop_end_margin))
    trial.set_user_attr("diagonality", round(final.diagonality, 4))
    trial.set_user_attr("sharpness", round(final.sharpness, 4))
    if decode is not None:
        trial.set_user_attr("decode_stop_rate", decode.stop_rate)
        trial.set_user_attr("decode_length_ratio", round(decode.length_ratio, 3))
        trial.set_user_attr("decode_dtw", round(decode.dtw, 4))
    trial.set_user_attr("verdict", finished_verdict(unaligned, no_stop))
    return final.val_mel


def finished_violations(final: EvalMetrics, guards: dict[str, float]) -> tuple[float, float]:
    """(unaligned, no_stop) of a finished run's last eval; both <= 0 is feasible."""
    unaligned = guards["aligned_diagonality"] - final.diagonality
    no_stop = decode_violation(
        final.decode,
        max_ratio=guards["decode_length_ratio"],
        max_bad_fraction=guards["decode_max_bad_fraction"],
    )
    return unaligned, no_stop


def finished_verdict(unaligned: float, no_stop: float) -> str:
    """The words a finished run is judged by, for trials and validation runs alike."""
    if unaligned > 0:
        return "unaligned"
    return "no-stop" if no_stop > 0 else "stable"


def decode_violation(decode, *, max_ratio: float, max_bad_fraction: float) -> float:
    """How far the free-running decode is from sane, continuous so TPE can walk towards feasible:
    the share of sentences that never stopped beyond the tolerated `max_bad_fraction` (a short trial
    decodes few sentences: a minority may fail, not a majority), plus how far the median length ratio
    lies outside [1/max_ratio, max_ratio]. <= 0 is feasible.

    The median length is a stopped sentence's only when more than half stopped; otherwise it is the
    length cap, which says nothing, so such an infeasible decode (and a trial with none, pruned) scores
    the stop share alone: one stopped sentence of three then always ranks above none."""
    if decode is None:
        return 1.0 - max_bad_fraction
    missed = max(0.0, (1.0 - decode.stop_rate) - max_bad_fraction)
    if decode.stop_rate <= 0.5 and missed > 0:
        return missed
    ratio = decode.length_ratio
    return missed + max(0.0, ratio - max_ratio) + max(0.0, 1.0 / max_ratio - ratio)


def shaped_no_stop(violation: float, stop_end_margin: float) -> float:
    """An infeasible decode violation plus how far the stop head is from knowing where speech ends.

    A decode that never stops is all or nothing (every such trial scores the same), so TPE, which ranks
    infeasible trials by their summed violation, could not tell a model one step from stopping from one
    that has not started. The teacher-forced stop margin (p(stop) at the last frame minus before it) is
    the continuous signal underneath; the last-frame probability alone is not, since an untrained head
    says ~0.5 everywhere. Feasibility is unchanged: a feasible decode (<= 0) stays as it is.
    """
    if violation <= 0:
        return violation
    margin = stop_end_margin if math.isfinite(stop_end_margin) else 0.0
    return violation + STOP_SHAPING * (1.0 - min(max(margin, 0.0), 1.0))


def study_guard_thresholds(study: StudyDef) -> dict[str, float]:
    from trainer.config import GuardConfig

    guards = apply_overrides(preset(BASE_LEVEL), train_overrides(study), where=study.name).guards
    assert isinstance(guards, GuardConfig)
    return {
        "aligned_diagonality": guards.collapse_diagonality,
        "decode_length_ratio": guards.decode_length_ratio,
        "decode_max_bad_fraction": guards.decode_max_bad_fraction,
    }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
