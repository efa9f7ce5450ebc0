"""The objective of a command-line study: one trial = one run of the user's command, guarded line by line.

The command is filled with the trial's params (and its config file written, when params go to config
keys), started as a ``TrainerProcess``, and its output read as it arrives: each metrics line goes to the
trial's ``Reporter`` at once, so a guard that fires, or the pruner, stops the process at the line that
decided it (SIGTERM to its process group, SIGKILL after the grace period). A process that exits non-zero
without a divergence is FAIL with its last lines in the record; so is one that printed no metrics line
for ``stall_s`` or ran past ``timeout_s``, stopped the same way. Ctrl-C stops the process the same way on
its way out, and the runner re-queues the trial.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna

from studies.command import CommandSpec
from studies.execution.foreign_trial import (
    FailureStreak,
    ForeignTrial,
    OnStep,
    StreakObjective,
    say_once,
)
from studies.execution.objective import Objective
from studies.execution.trainer_process import TrainerProcess, new_token
from studies.foreign import ForeignStudy
from studies.metrics_lines import MAX_KEYS
from studies.paths import StudyPaths
from studies.record import TrialRecord
from studies.record_keys import COMMAND, TRAINER_TOKEN
from trainer.reporter import ReportError, StopRun


def trial_values(
    study: ForeignStudy, paths: StudyPaths, params: dict[str, Any], number: int, seed: int
) -> dict:
    """Every template field of one trial: its params, and the fields the search fills (its config
    file, written here when params go to config keys)."""
    run_dir = paths.trial_dir(number)
    assert study.command is not None
    if study.config is not None or study.command.uses("run_dir"):
        run_dir.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {**params, "trial": number, "run_dir": str(run_dir), "seed": seed}
    if study.config is not None:
        keyed = {p.key: params[p.name] for p in study.space.params if p.key is not None}
        path = run_dir / f"config{study.config.suffix}"
        values["config"] = str(study.config.write(path, keyed))
    return values


def make_command_objective(
    study: ForeignStudy,
    paths: StudyPaths,
    seed: int,
    say: Callable[[str], None],
    on_step: OnStep | None = None,
) -> Objective:
    spec = study.command
    assert spec is not None
    streak, note = FailureStreak(), say_once(say)

    def objective(trial: optuna.Trial) -> TrialRecord:
        params = study.space.suggest(trial)
        values = trial_values(study, paths, params, trial.number, seed)
        token = new_token()
        line = spec.line(values)
        # Both before the process exists: whoever fails this trial later can find what it started.
        trial.set_user_attr(TRAINER_TOKEN, token)
        trial.set_user_attr(COMMAND, line)
        seen: list[str] = []  # the keys of its JSON lines, for the hint if no metric comes
        with ForeignTrial(
            study,
            trial,
            paths,
            params,
            note=note,
            on_step=on_step,
            meta={"command": line},
            hint=lambda stepped: spec.metrics.hint(seen, stepped=stepped),
            what="metrics line",
        ) as run:
            proc = TrainerProcess(spec.fill(values), cwd=spec.cwd, token=token)
            record = _run(spec, run, proc, line, say, seen)
        streak.update(record, unread=run.unread)
        if record.fail_detail is not None and streak.fatal is None:  # else the search's last line says it
            last = record.output_tail.splitlines()[-1] if record.output_tail else "(no output)"
            say(f"trial {trial.number}: the trainer {record.fail_detail}; its last line: {last}")
        return record

    return StreakObjective(objective, streak)


def _run(
    spec: CommandSpec,
    run: ForeignTrial,
    proc: TrainerProcess,
    line: str,
    say: Callable[[str], None],
    seen: list[str],
) -> TrialRecord:
    """Feed its lines to the reporter until it ends or is stopped (a guard, the pruner, its clocks);
    its record. ``seen`` gathers the keys of its JSON lines until it reports a metric."""
    reporter = run.reporter
    assert reporter is not None
    problem = None
    try:
        for n, text in enumerate(proc.lines(idle=run.watch.check), start=1):
            if not reporter.reported and len(seen) < MAX_KEYS:
                seen.extend(k for k in spec.metrics.keys(text) if k not in seen)
            try:
                parsed = spec.metrics.parse(text)
                if parsed is None:
                    continue
                if parsed.step is not None:
                    s = parsed.step
                    reporter.step(
                        loss=s.loss,
                        grad_norm=s.grad_norm,
                        mel=s.mel,
                        alignment=s.alignment,
                        loss_scale=s.loss_scale,
                        step=s.step,
                    )
                if parsed.eval is not None:
                    e = parsed.eval
                    reporter.eval(metric=e.metric, alignment=e.alignment, step=e.step)
            except ReportError as e:
                problem = f"broke the metrics contract at output line {n}: {e}"
                break
    except StopRun:
        pass  # a guard fired or the pruner said stop: the verdict is the reporter's
    finally:
        stopped = proc.stop(spec.grace_s)
    failure = problem if reporter.stalled is None else str(reporter.stalled)
    over = reporter.over
    if failure is None and not over and stopped.returncode != 0:
        failure = f"exited with code {stopped.returncode} without diverging"
    facts = {
        "command": line,
        "exit_code": stopped.returncode,
        "stopped_with": stopped.signal,
        "stop_s": None if stopped.seconds is None else round(stopped.seconds, 3),
        "output_tail": proc.output_tail() or None,
    }
    if stopped.signal is not None and over:
        say(
            f"trial {run.trial.number}: stopped the trainer (pid {proc.pid}) at step {reporter.steps} with "
            f"{stopped.signal}; it exited {stopped.seconds:.2f} s later"
        )
    return run.finish(failure, **facts)
