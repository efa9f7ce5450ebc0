"""Start or resume a search: open the study, seed its presets, run trials here or in local workers.

``search.py`` parses and checks the flags and hands over a ``SearchRun``; everything that creates or
changes a study happens here, after every check has passed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from common.console import make_console
from common.device import describe_device, resolve_device
from common.errors import UserError
from studies.binding import trial_steps
from studies.evidence.summary import print_summary
from studies.execution.command_trial import make_command_objective
from studies.execution.completion import exit_status
from studies.execution.cores import CoreShare, counts
from studies.execution.foreign_trial import OnStep
from studies.execution.function_trial import TrainFn, make_function_objective
from studies.execution.live import LiveView
from studies.execution.objective import Objective, make_objective
from studies.execution.runner import requeue_interrupted, run_worker
from studies.execution.runs import RunSetup, load_data
from studies.execution.storage import open_storage, require_study_file, sqlite_path
from studies.execution.supervisor import Supervisor
from studies.execution.workers import sampler_seed, stop_workers, worker_threads
from studies.foreign import AnyStudy, ForeignStudy
from studies.guard_waits import waits_line
from studies.paths import StudyPaths
from studies.presets_seed import enqueue_presets
from studies.record_keys import COMMAND, COMMAND_CWD, DATA_FINGERPRINT
from studies.registry import make_pruner, make_sampler
from tts_model.data_audit import preflight

# The rate is measured over the first steps, then said once: after 10 steps, or after the second step
# when the first ones took 20 s (the 78M fp16 study forced onto a CPU runs minutes a step).
FORECAST_AFTER_STEPS, FORECAST_AFTER_S = 10, 20.0


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchRun:
    """One `search.py` search command, checked: what to run and where."""

    study: AnyStudy
    url: str
    trials: int
    workers: int = 1
    threads: int | None = None  # torch CPU threads per process; None: torch's default / cores per worker
    device: str = "auto"
    seed: int = 0
    runs_dir: Path = Path("runs")
    train_data: Path | None = None
    val_data: Path | None = None
    shared_storage: bool = False  # --storage was given: other machines may join
    worker_index: int | None = None  # set in a local worker process
    function: TrainFn | None = None  # a foreign study run in process (studies/execution/inprocess.py)

    @property
    def paths(self) -> StudyPaths:
        return StudyPaths(self.runs_dir, self.study.name)

    @property
    def is_worker(self) -> bool:
        return self.worker_index is not None


def threads_per_worker(threads: int | None, workers: int) -> int:
    """Torch CPU threads for each of `workers` processes: the flag, else the cores shared out. More busy
    threads than free cores makes torch's CPU kernels spin, many times slower (docs/measurements.md)."""
    return threads or max(1, (os.cpu_count() or 1) // workers)


@dataclass(frozen=True, slots=True)
class TrialSource:
    """How a search's trials train: the project's trainer, or the user's (a command, a function)."""

    where: str  # said first: the device the project's trainer uses, or the user's trainer
    objective: Callable[[OnStep | None], Objective]  # given the live view's step callback (or None)
    mean_steps: int | None  # a trial's usual length in steps, for the live view's estimate
    fingerprint: str | None = None  # the data set the project's trainer runs on


def project_trials(run: SearchRun, console: Console) -> TrialSource:
    """The project's trainer: torch threads, the device, the data set, the objective."""
    threads = threads_per_worker(run.threads, run.workers)
    if run.is_worker:
        threads = worker_threads(threads)
    if run.threads is not None or run.is_worker:  # otherwise leave torch's own default (all cores)
        torch.set_num_threads(threads)
    device = resolve_device(run.device)
    where = describe_device(device)
    if run.is_worker:  # into the worker's log: which card (CUDA_VISIBLE_DEVICES) and threads it got
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        print(
            f"worker {run.worker_index}: {where}" + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible else ""),
            file=sys.stderr,
        )
    if not run.is_worker and run.train_data is not None and run.val_data is not None:
        # The user's clips, before any feature is computed: one that would make NaN or log(0) features is
        # refused in one line, no study created (the embedded corpus is the project's own PCM speech).
        preflight((run.train_data, run.val_data))
    data = load_data(run.train_data, run.val_data, None if run.is_worker else console)
    setup = RunSetup(run.study, data, device, run.paths, run.seed)
    mean = trial_steps(run.study, run.study.space.warmup_max // 2)
    # A worker whose threads were shared out takes the idle cores when its trial is the last one running.
    share = CoreShare.for_worker(run.trials) if run.is_worker and run.threads is None else None
    return TrialSource(
        where, lambda on_step: make_objective(setup, on_step=on_step, share=share), mean, data.fingerprint
    )


def foreign_trials(run: SearchRun, say: Callable[[str], None]) -> TrialSource:
    """The user's trainer: their command line, or their function in this process."""
    study = run.study
    assert isinstance(study, ForeignStudy)
    if study.command is not None:
        where = f"your command `{study.command.template}`"

        def objective(on_step: OnStep | None) -> Objective:
            return make_command_objective(study, run.paths, run.seed, say, on_step)

    else:
        if run.function is None:
            raise UserError(f"study {study.name!r} has no --command: give the command line its trials run")
        where = f"your function {getattr(run.function, '__qualname__', run.function)!s} in this process"

        def objective(on_step: OnStep | None) -> Objective:
            return make_function_objective(study, run.function, run.paths, say, on_step)

    return TrialSource(where, objective, study.steps)


def run_search(run: SearchRun, worker_argv: list[str]) -> int:
    """Run the study to ``run.trials`` finished trials; ``worker_argv`` starts one local worker."""
    console = make_console(stderr=True)

    def say(line: str) -> None:
        console.print(line, soft_wrap=True, markup=False, highlight=False)

    # Optuna logs a failed trial (Ctrl-C included) with a traceback at WARNING; the CLI says it in one line.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    source = project_trials(run, console) if run.study.runs_project_trainer else foreign_trials(run, say)
    where = source.where

    # From here on the study exists.
    study = _open_or_create(run)
    if run.is_worker:
        run_worker(study, source.objective(None), run.trials)
        return exit_status(study, run.trials, lambda line: print(line, file=sys.stderr))

    if source.fingerprint is not None:
        note_other_data(study, source.fingerprint, console)
        study.set_user_attr(DATA_FINGERPRINT, source.fingerprint)
    if isinstance(run.study, ForeignStudy) and run.study.command is not None:
        study.set_user_attr(COMMAND, run.study.command.template)  # the export fills it again
        study.set_user_attr(COMMAND_CWD, str(run.study.command.cwd))  # and resolves its paths here
    enqueued = enqueue_presets(study, run.study.preset_values(), run.study.space)
    requeued = requeue_interrupted(study)
    c = counts(study)
    console.print(
        f"study [bold]{run.study.name}[/] in {run.url} on {escape(where)}: {c.finished} of {run.trials} trials finished"
        + (f"; seeded presets {', '.join(enqueued)}" if enqueued else "")
        + (f"; re-queued interrupted trials {requeued}" if requeued else "")
    )
    if isinstance(run.study, ForeignStudy):  # the user's own trainer: what each guard waits for, once
        say(waits_line(run.study.guards, steps=run.study.steps, warmup=run.study.space.warmup_param))
    view = LiveView(
        study,
        run.study.space,
        run.trials,
        source.mean_steps,
        metric=run.study.metric_label,
        speech=run.study.runs_project_trainer,
    )
    rate_on = where if run.study.runs_project_trainer else "your trainer"
    procs: list = []  # local worker processes, stopped cleanly on Ctrl-C
    try:
        with Live(view.render(), console=console, auto_refresh=False, transient=False) as live:

            def refresh() -> None:
                live.update(view.render(), refresh=True)

            if run.workers == 1:

                def on_step(number: int, max_steps: int | None, m) -> None:
                    view.on_step(number, m.step, max_steps)
                    line = view.take_forecast(
                        rate_on, after_steps=FORECAST_AFTER_STEPS, after_s=FORECAST_AFTER_S
                    )
                    if line is not None:
                        say(line)
                    if view.due():
                        refresh()

                run_worker(study, source.objective(on_step), run.trials, on_trial_end=refresh)
            else:
                # The supervisor restarts dead workers (bounded); procs grows with every restart.
                supervisor = Supervisor(
                    study,
                    worker_argv,
                    run.workers,
                    run.trials,
                    threads_per_worker(run.threads, run.workers),
                    run.paths.worker_logs,
                    say,
                )
                procs = supervisor.procs
                for e in supervisor.run(refresh):
                    console.print(f"[red]worker: {escape(e)}[/]")
            refresh()
    except UserError:  # a user's trainer that keeps failing: its one line goes below the live view
        console.print()
        raise
    except KeyboardInterrupt:
        stop_workers(procs)
        requeue_interrupted(study, dead_pids=[p.pid for p in procs])
        c = counts(study)
        console.print(
            f"\ninterrupted: {c.finished} of {run.trials} trials finished and kept; run the same command to resume",
            soft_wrap=True,
        )
        return 130
    print_summary(study, run.study, console)
    return exit_status(study, run.trials, say, pids=[p.pid for p in procs])


def _open_or_create(run: SearchRun) -> optuna.Study:
    heartbeat = sqlite_path(run.url) is None  # RDB servers get heartbeats and stale-trial retries
    # A worker is patient with a database that blips (studies.execution.resilience); the parent too, once running.
    storage = open_storage(run.url, heartbeat=heartbeat, create_dir=True, patient=run.is_worker)
    seed = sampler_seed(run.seed, run.worker_index, shared=run.shared_storage)
    return optuna.create_study(
        study_name=run.study.name,
        storage=storage,
        sampler=make_sampler(run.study, seed, study_seed=run.seed),  # one Sobol start-up for all workers
        pruner=make_pruner(run.study),
        direction="minimize",
        load_if_exists=True,
    )


def open_existing(study_def: AnyStudy, url: str) -> optuna.Study:
    """An existing study for the evidence commands; one line (exit 2) when there is none."""
    require_study_file(study_def.name, url)
    storage = open_storage(url, heartbeat=False)
    try:
        return optuna.load_study(study_name=study_def.name, storage=storage)
    except KeyError:
        raise UserError(f"no study {study_def.name!r} in {url}: run the search first") from None


def note_other_data(study: optuna.Study, fingerprint: str, console: Console) -> None:
    """Say so when the study's trials ran on other data than this command loaded."""
    previous = study.user_attrs.get(DATA_FINGERPRINT)
    if previous is not None and previous != fingerprint:
        console.print(
            f"[yellow]note: this study was started on other data ({previous}); now {fingerprint}[/]"
        )
