"""How evenly a study's start-up trials cover its space: TPE's random start-up against the Sobol one.

No training. Workers on one storage, as ``make run`` runs them: the presets enqueued, each worker
seeded with its own stream of ``--seed``, each telling its trial and asking the next in turn, until TPE
would take over. The start-up points the sampler chose (the presets are the same in both) are mapped
to the unit cube (log params in log space; ``studies.startup_sampler.to_unit_cube``) and compared per
seed: the centred L2 discrepancy (lower is more even), the smallest distance between two points, and
how many fall below alignment weight 0.115 (``kl_weight``; nothing aligned there in measured studies).

"random": today's TPE, start-up drawn by its RandomSampler. "sobol": ``make_sampler``, the Sobol part
seeded by ``--seed`` in every worker (``study_seed``). "sobol, own seeds": the Sobol part seeded by each
worker's own stream, so the workers draw from separate sequences (one worker: the same as "sobol").

    python bench/bench_startup_coverage.py [--study stability-quick] [--seeds 0 1 2 3 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
from scipy.spatial.distance import pdist
from scipy.stats import qmc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studies.execution.workers import sampler_seed  # noqa: E402
from studies.presets_seed import enqueue_presets  # noqa: E402
from studies.record_keys import PRESET  # noqa: E402
from studies.registry import StudyDef, get_study, make_sampler, tpe_gamma  # noqa: E402
from studies.startup_sampler import FINISHED, to_unit_cube  # noqa: E402

UNALIGNED_BELOW = 0.115  # kl_weight
SamplerFor = Callable[[int], optuna.samplers.BaseSampler]  # worker index -> its sampler


def todays_sampler(study: StudyDef, seed: int) -> optuna.samplers.TPESampler:
    """``make_sampler`` before the Sobol start-up: TPE, its start-up TPE's own random draws."""
    s = study.sampler
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*`gamma`.*", category=FutureWarning)  # as make_sampler
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=s.n_startup_trials,
            multivariate=s.multivariate,
            constant_liar=s.constant_liar,
            gamma=functools.partial(tpe_gamma, s.gamma_fraction),
        )


def startup_points(study_def: StudyDef, sampler_for: SamplerFor, workers: int) -> list[dict]:
    """The params of the sampled start-up trials of a study run by ``workers`` processes on one storage."""
    storage = optuna.storages.InMemoryStorage()
    studies = [
        optuna.create_study(
            storage=storage,
            study_name="bench",
            sampler=sampler_for(w),
            direction="minimize",
            load_if_exists=True,
        )
        for w in range(workers)
    ]
    enqueue_presets(studies[0], study_def.preset_values(), study_def.space)
    n_startup = study_def.sampler.n_startup_trials
    points: list[dict] = []

    def ask(w: int) -> optuna.Trial | None:
        """Worker ``w``'s next trial while the study is in start-up (None once TPE would take over)."""
        if len(studies[w].get_trials(deepcopy=False, states=FINISHED)) >= n_startup:
            return None
        trial = studies[w].ask()
        preset = PRESET in trial.user_attrs
        study_def.space.suggest(trial)
        if not preset:
            points.append(dict(trial.params))
        return trial

    running = [ask(w) for w in range(workers)]
    while any(t is not None for t in running):
        for w, trial in enumerate(running):
            if trial is not None:
                studies[w].tell(trial, 1.0)
                running[w] = ask(w)
    return points


def measure(study_def: StudyDef, points: list[dict]) -> tuple[float, float, int]:
    space = study_def.space.distributions()
    cube = np.array([to_unit_cube(p, space) for p in points])
    below = sum(p["kl_weight"] < UNALIGNED_BELOW for p in points)
    return float(qmc.discrepancy(cube, method="CD")), float(pdist(cube).min()), int(below)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="stability-quick")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_def = get_study(args.study)

    def own(seed: int, w: int) -> int:
        """Worker ``w``'s sampler seed as the search derives it (a lone search: ``--seed`` itself)."""
        return sampler_seed(seed, w if args.workers > 1 else None, shared=False)

    ways: dict[str, Callable[[int], SamplerFor]] = {
        "random": lambda seed: lambda w: todays_sampler(study_def, own(seed, w)),
        "sobol": lambda seed: lambda w: make_sampler(study_def, own(seed, w), study_seed=seed),
        "sobol, own seeds": lambda seed: lambda w: make_sampler(study_def, own(seed, w)),
    }
    print(
        f"{args.study}: {args.workers} workers, n_startup_trials {study_def.sampler.n_startup_trials}, "
        f"presets {', '.join(study_def.presets)} enqueued; the sampled start-up points compared\n"
    )
    print(
        "| seed | points | discrepancy random | sobol | ratio | sobol, own seeds | "
        "min distance random | sobol | ratio | kl_weight < 0.115 random | sobol |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for seed in args.seeds:
        got = {name: startup_points(study_def, way(seed), args.workers) for name, way in ways.items()}
        (d_old, m_old, b_old), (d_new, m_new, b_new), (d_own, _, _) = (
            measure(study_def, got[name]) for name in ways
        )
        rows.append((d_old, d_new, d_own, m_old, m_new, b_old, b_new))
        print(
            f"| {seed} | {len(got['sobol'])} | {d_old:.4f} | {d_new:.4f} | {d_new / d_old:.2f} | {d_own:.4f} | "
            f"{m_old:.3f} | {m_new:.3f} | {m_new / m_old:.2f} | {b_old} | {b_new} |"
        )
    d_old, d_new, d_own, m_old, m_new, b_old, b_new = np.array(rows).mean(axis=0)
    print(
        f"| mean | | {d_old:.4f} | {d_new:.4f} | {d_new / d_old:.2f} | {d_own:.4f} | "
        f"{m_old:.3f} | {m_new:.3f} | {m_new / m_old:.2f} | {b_old:.1f} | {b_new:.1f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
