"""`python search.py --study stability --trials 50`: find, with evidence, the settings that train stably.

A thin CLI: parse, pick a study, then run / resume it, export its best preset, or train with it.
Everything a user can get wrong is checked before a study is created or changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from tts_model.cli import OneLineParser, run_cli
from tts_model.errors import UserError


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="search.py", description="Stability search for TTS training (Optuna).")
    p.add_argument("--study", default="stability", help="study name (stability, stability-quick)")
    p.add_argument("--trials", type=int, default=None, help="total finished trials the study should reach")
    p.add_argument("--workers", type=int, default=1, help="local worker processes on this study")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite under runs/STUDY/)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--model-size", default=None, help="override the study's model size")
    p.add_argument(
        "--train-data", type=Path, default=None, help="LJSpeech-style folder (default: embedded corpus)"
    )
    p.add_argument("--val-data", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0, help="seeds the sampler and every trial's training")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads per worker (default: cores / workers)"
    )
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where studies and telemetry live")
    p.add_argument(
        "--export-preset", type=Path, default=None, metavar="FILE", help="write the best trial as a preset"
    )
    p.add_argument(
        "--train-best",
        action="store_true",
        help="full training with the best trial; other flags go to the trainer",
    )
    p.add_argument("--report", action="store_true", help="write runs/STUDY/report.html: the study's evidence")
    p.add_argument("--lr-probe", action="store_true", help="lr range test: lr rises until it diverges")
    p.add_argument("--validate", nargs="+", default=None, metavar="NAME", help="re-run presets / best, seeds")
    p.add_argument("--seeds", type=int, default=3, help="--validate: runs per recipe")
    p.add_argument("--steps", type=int, default=None, help="--validate / --lr-probe: steps per run")
    p.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)  # set by --workers
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not args.train_best:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    # Checks first: a bad flag must leave no study created or changed.
    from studies.registry import get_study
    from studies.storage import resolve_storage
    from tts_model.config import MODEL_SIZES

    study_def = get_study(args.study)
    if args.model_size is not None:
        if args.model_size not in MODEL_SIZES:
            raise UserError(
                f"--model-size {args.model_size!r}: unknown; known sizes: {', '.join(sorted(MODEL_SIZES))}"
            )
        study_def = dataclasses.replace(study_def, model_size=args.model_size)
    trials = study_def.n_trials if args.trials is None else args.trials
    if trials <= 0:
        raise UserError(f"--trials must be > 0, got {trials}")
    if args.workers <= 0:
        raise UserError(f"--workers must be > 0, got {args.workers}")
    if args.threads is not None and args.threads <= 0:
        raise UserError(f"--threads must be > 0, got {args.threads}")
    url = resolve_storage(args.storage, study_def.name, args.runs_dir)

    if args.report or args.lr_probe or args.validate:
        if args.export_preset is not None or args.train_best:
            raise UserError("--report, --lr-probe, --validate: not with --export-preset or --train-best")
        from studies.validate import check_names

        check_names(args.validate or [], args.seeds, args.steps)
        return _evidence(args, study_def, url)
    if args.export_preset is not None or args.train_best:
        return _export_or_train(args, rest, study_def, url)
    from studies.resilience import EXIT_DB_UNAVAILABLE, DatabaseUnavailable  # issue 13

    try:  # issue 13: a database gone past the retry bound is one line and exit 4, never a traceback
        return _search(args, study_def, url, trials)
    except DatabaseUnavailable as e:  # issue 13
        print(f"error: {e}", file=sys.stderr)  # issue 13
        return EXIT_DB_UNAVAILABLE  # issue 13


def _open_existing(study_def, url: str):
    import optuna

    from studies.storage import open_storage, sqlite_path

    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise UserError(f"no study {study_def.name!r} at {path}: run the search first")
    storage = open_storage(url, heartbeat=False)
    try:
        return optuna.load_study(study_name=study_def.name, storage=storage)
    except KeyError:
        raise UserError(f"no study {study_def.name!r} in {url}: run the search first") from None


def _export_or_train(args, rest: list[str], study_def, url: str) -> int:
    from rich.console import Console

    from studies.export import export_best

    study = _open_existing(study_def, url)
    path = args.export_preset or args.runs_dir / study_def.name / "best_preset.json"
    export_best(study, study_def, path)
    Console(stderr=True).print(f"exported the best trial of {study_def.name} to {path}")
    if not args.train_best:
        return 0
    from trainer.cli import main as train_main

    out = ["--out", str(args.runs_dir / study_def.name / "train-best")] if "--out" not in rest else []
    return train_main(["--preset", str(path), *out, *rest])


def _evidence(args, study_def, url: str) -> int:
    """--lr-probe, then --validate, then --report, on an existing study (any of them, in that order)."""
    from rich.console import Console

    from studies.report import write_report
    from studies.runner import counts

    console = Console(stderr=True)
    study = _open_existing(study_def, url)
    if args.report and counts(study).finished == 0:
        raise UserError(f"study {study_def.name!r} has no finished trial yet: nothing to report")
    if args.lr_probe or args.validate:
        from studies.lr_probe import run_probe
        from studies.objective import TrialSetup
        from studies.validate import resolve, table, validate
        from trainer.cli import resolve_device
        from trainer.data import load_train_data
        from tts_model.dataset import DataConfig

        for name in args.validate or []:
            resolve(study, study_def, name)  # "best" needs a feasible trial: fail before loading data
        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)
        data = load_train_data(args.train_data, args.val_data, DataConfig(), console=console)
        _note_other_data(study, data.fingerprint, console)
        telemetry = args.runs_dir / study_def.name / "telemetry.db"
        setup = TrialSetup(study_def, data, resolve_device(args.device), telemetry, args.seed)
        if args.lr_probe:
            run_probe(study, setup, steps=args.steps, console=console)
        if args.validate:
            runs = {"seeds": args.seeds, "steps": args.steps, "base_seed": args.seed}
            results = validate(study, setup, args.validate, **runs, console=console)
            Console().print(table(results))
    if args.report:
        console.print(f"report: {write_report(study, study_def, args.runs_dir / study_def.name)}")
    return 0


def _search(args, study_def, url: str, trials: int) -> int:
    import optuna
    import torch
    from rich.console import Console
    from rich.live import Live

    from studies.export import DATA_ATTR
    from studies.live import LiveView
    from studies.objective import TrialSetup, make_objective
    from studies.presets_seed import enqueue_presets
    from studies.registry import make_pruner, make_sampler, trial_steps
    from studies.runner import counts, exit_status, requeue_interrupted, run_worker  # issue 13: exit_status
    from studies.storage import open_storage, sqlite_path
    from studies.summary import print_summary
    from studies.supervisor import Supervisor  # issue 13
    from studies.workers import sampler_seed, stop_workers
    from trainer.cli import resolve_device
    from trainer.config import config_to_dict, preset
    from trainer.data import load_train_data
    from tts_model.dataset import DataConfig

    console = Console(stderr=True)
    # Optuna logs a failed trial (Ctrl-C included) with a traceback at WARNING; the CLI says it in one line.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    worker = args.worker_index is not None
    # More busy threads than free cores makes torch's CPU kernels spin: ~10x slower, measured here.
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    if worker and os.environ.get("TTS_SEARCH_THREADS"):
        threads = int(os.environ["TTS_SEARCH_THREADS"])
    if args.threads is not None or worker:  # otherwise leave torch's own default (all cores)
        torch.set_num_threads(threads)
    device = resolve_device(args.device)
    data = load_train_data(args.train_data, args.val_data, DataConfig(), console=None if worker else console)

    # From here on the study exists.
    heartbeat = sqlite_path(url) is None  # RDB servers get heartbeats and stale-trial retries
    storage = open_storage(url, heartbeat=heartbeat, create_dir=True, patient=worker)  # issue 13: patient
    seed = sampler_seed(args.seed, args.worker_index, shared=args.storage is not None)
    study = optuna.create_study(
        study_name=study_def.name,
        storage=storage,
        sampler=make_sampler(study_def, seed),
        pruner=make_pruner(study_def),
        direction="minimize",
        load_if_exists=True,
    )
    setup = TrialSetup(
        study=study_def,
        data=data,
        device=device,
        telemetry_path=args.runs_dir / study_def.name / "telemetry.db",
        seed=args.seed,
    )
    if worker:
        run_worker(study, make_objective(setup), trials)
        return exit_status(study, trials, lambda line: print(line, file=sys.stderr))  # issue 13

    _note_other_data(study, data.fingerprint, console)
    study.set_user_attr(DATA_ATTR, data.fingerprint)
    presets = {name: config_to_dict(preset(name)) for name in study_def.presets}
    enqueued = enqueue_presets(study, presets, study_def.space)
    requeued = requeue_interrupted(study)
    c = counts(study)
    console.print(
        f"study [bold]{study_def.name}[/] in {url}: {c.finished} of {trials} trials finished"
        + (f"; seeded presets {', '.join(enqueued)}" if enqueued else "")
        + (f"; re-queued interrupted trials {requeued}" if requeued else "")
    )
    view = LiveView(study, trials, trial_steps(study_def, study_def.space.warmup_max // 2))
    procs: list = []  # local worker processes, stopped cleanly on Ctrl-C
    try:
        with Live(view.render(), console=console, auto_refresh=False, transient=False) as live:

            def refresh() -> None:
                live.update(view.render(), refresh=True)

            if args.workers == 1:

                def on_step(number: int, max_steps: int, m) -> None:
                    view.on_step(number, m.step, max_steps)
                    if view.due():
                        refresh()

                run_worker(study, make_objective(setup, on_step=on_step), trials, on_trial_end=refresh)
            else:
                log_dir = args.runs_dir / study_def.name / "workers"
                say = lambda line: console.print(line, soft_wrap=True)  # noqa: E731  (issue 13)
                # issue 13: the supervisor restarts dead workers; procs grows with every restart
                supervisor = Supervisor(
                    study, _worker_argv(args, trials), args.workers, trials, threads, log_dir, say
                )
                procs = supervisor.procs  # issue 13
                errors = supervisor.run(refresh)  # issue 13
                for e in errors:
                    console.print(f"[red]worker: {e}[/]")
            refresh()
    except KeyboardInterrupt:
        stop_workers(procs)
        requeue_interrupted(study, dead_pids=[p.pid for p in procs])
        c = counts(study)
        console.print(
            f"\ninterrupted: {c.finished} of {trials} trials finished and kept; run the same command to resume",
            soft_wrap=True,
        )
        return 130
    print_summary(study, console)
    say = lambda line: console.print(line, soft_wrap=True)  # noqa: E731  (issue 13)
    return exit_status(study, trials, say, pids=[p.pid for p in procs])  # issue 13


def _note_other_data(study, fingerprint: str, console) -> None:
    """Say so when the study's trials ran on other data than this command loaded."""
    from studies.export import DATA_ATTR

    previous = study.user_attrs.get(DATA_ATTR)
    if previous is not None and previous != fingerprint:
        console.print(
            f"[yellow]note: this study was started on other data ({previous}); now {fingerprint}[/]"
        )


def _worker_argv(args, trials: int) -> list[str]:
    argv = [
        os.path.abspath(__file__),
        "--study",
        args.study,
        "--trials",
        str(trials),
        "--seed",
        str(args.seed),
    ]
    argv += ["--device", args.device, "--runs-dir", str(args.runs_dir)]
    for flag, value in (
        ("--storage", args.storage),
        ("--model-size", args.model_size),
        ("--train-data", args.train_data),
        ("--val-data", args.val_data),
    ):
        if value is not None:
            argv += [flag, str(value)]
    return argv


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
