"""The live view: progress over trials with an ETA, running and recent trials, outcomes, best so far.

It reads only the study's storage, so it shows the same thing whether trials run in this process
or in worker processes on this or other machines.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Group
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from studies.presets_seed import PRESET_ATTR
from studies.runner import FINISHED

SHOWN_PARAMS = ("lr", "grad_clip", "mel_weight", "kl_weight", "warmup_steps")


def outcome(t: FrozenTrial) -> str:
    """One word for a trial: stable / unaligned / no-stop / pruned / diverged:<kind> / running / failed."""
    if t.state == TrialState.RUNNING:
        return "running"
    if t.state == TrialState.WAITING:
        return "waiting"
    if t.state == TrialState.FAIL:
        return "failed"
    if t.user_attrs.get("diverged"):
        return f"diverged:{t.user_attrs.get('verdict', '?')}"
    return str(t.user_attrs.get("verdict", "pruned" if t.state == TrialState.PRUNED else "complete"))


def feasible(t: FrozenTrial) -> bool:
    return t.state == TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())


def last_value(t: FrozenTrial) -> float | None:
    if t.value is not None:
        return t.value
    if t.intermediate_values:
        return t.intermediate_values[max(t.intermediate_values)]
    return None


def fmt(x: object) -> str:
    if isinstance(x, bool):
        return "on" if x else "off"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        return f"{x:.1e}" if 0 < abs(x) < 1e-2 else f"{x:.3g}"
    return str(x)


class LiveView:
    def __init__(self, study: optuna.Study, total: int, mean_trial_steps: int) -> None:
        self.study = study
        self.total = total
        self.mean_trial_steps = mean_trial_steps
        self._rate: float | None = None  # training steps per second, EMA over in-process steps
        self._last_step_time: float | None = None
        self.progress = Progress(
            TextColumn("[bold]trials"),
            MofNCompleteColumn(),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        self.task = self.progress.add_task("trials", total=total)
        self._start_done = sum(t.state in FINISHED for t in study.get_trials())
        self.step_info: dict[int, str] = {}  # trial number -> live step text (in-process runs)
        self._last = 0.0

    def render(self) -> Group:
        trials = self.study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state in FINISHED]
        self.progress.update(self.task, completed=len(done))
        table = Table(title="running and recent trials", expand=False)
        for col in ("#", "preset", "lr", "clip", "mel w", "kl w", "warmup", "step", "val mel", "verdict"):
            table.add_column(col)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        recent = sorted(done, key=lambda t: t.number)[-8:]
        for t in running + recent[::-1]:
            step = self.step_info.get(t.number) or str(
                t.user_attrs.get("last_step", t.user_attrs.get("steps_run", ""))
            )
            value = last_value(t)
            table.add_row(
                str(t.number),
                str(t.user_attrs.get(PRESET_ATTR, "")),
                *(fmt(t.params.get(p, "")) for p in SHOWN_PARAMS),
                step,
                "" if value is None else f"{value:.4f}",
                outcome(t),
            )
        tally = Counter(outcome(t) for t in trials if t.state != TrialState.WAITING)
        counts = "  ".join(f"{k}: {v}" for k, v in sorted(tally.items()))
        best = [t for t in trials if feasible(t)]
        best_line = "best feasible: none yet"
        if best:
            b = min(best, key=lambda t: t.value)
            params = ", ".join(f"{p} {fmt(b.params[p])}" for p in SHOWN_PARAMS if p in b.params)
            best_line = f"best feasible: trial {b.number}  val mel {b.value:.4f}  ({params})"
        return Group(self.progress, table, counts, best_line, self._eta_line(len(done)))

    def on_step(self, number: int, step: int, max_steps: int | None = None) -> None:
        """Called for every training step of an in-process trial: live step and a step-rate ETA."""
        now = time.monotonic()
        if self._last_step_time is not None and step > 1:
            rate = 1.0 / max(now - self._last_step_time, 1e-6)
            self._rate = rate if self._rate is None else 0.95 * self._rate + 0.05 * rate
        self._last_step_time = now
        self.step_info[number] = f"{step}" if max_steps is None else f"{step}/{max_steps}"
        self._current = (step, max_steps or self.mean_trial_steps)

    def _eta_line(self, done: int) -> str:
        """Before the first trials finish, the bar's ETA knows nothing; the step rate does."""
        if self._rate is None:
            return ""
        step, total = getattr(self, "_current", (0, self.mean_trial_steps))
        remaining_trials = max(self.total - done - 1, 0)
        steps_left = max(total - step, 0) + remaining_trials * self.mean_trial_steps
        seconds = steps_left / self._rate
        return (
            f"step rate {self._rate:.2f}/s -> about {_duration(seconds)} left if the remaining "
            f"{remaining_trials + 1} trials run {self.mean_trial_steps} steps each (pruning shortens it)"
        )

    def due(self, every: float = 1.0) -> bool:
        now = time.monotonic()
        if now - self._last >= every:
            self._last = now
            return True
        return False


def _duration(seconds: float) -> str:
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"
