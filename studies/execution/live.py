"""The live view: progress over trials with an ETA, running and recent trials, outcomes, best so far.

It reads only the study's storage, so it shows the same thing whether trials run in this process
or in worker processes on this or other machines.
"""

from __future__ import annotations

import time
from collections import Counter

import optuna
from optuna.trial import TrialState
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

from space import SearchSpace
from studies import ranking
from studies.display import duration, fmt, shown_step, speech_words
from studies.record import FINISHED, load_records


class LiveView:
    def __init__(
        self,
        study: optuna.Study,
        space: SearchSpace,
        total: int,
        mean_trial_steps: int | None,
        *,
        metric: str = "val mel",
        speech: bool = True,
    ) -> None:
        """``mean_trial_steps``: a trial's usual length (None: unknown, e.g. a user's trainer whose space
        file does not say; then no estimate is shown, only the measured rate). ``metric``: what the value
        is called; ``speech``: the trainer decodes speech (the project's), so the speech column shows."""
        self.study = study
        self.metric, self.speech = metric, speech
        self.shown = space.headline
        self.total = total
        self.mean_trial_steps = mean_trial_steps
        self._rate: float | None = None  # training steps per second, EMA over in-process steps
        self._last_step_time: float | None = None
        self._first_step_at: float | None = None  # this process's first training step
        self._forecast_said = False
        self.progress = Progress(
            TextColumn("[bold]trials"),
            MofNCompleteColumn(),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        self.task = self.progress.add_task("trials", total=total)
        self.step_info: dict[int, str] = {}  # trial number -> live step text (in-process runs)
        self._last = 0.0

    def render(self) -> Group:
        records = load_records(self.study)
        done = [r for r in records if r.finished]
        # A screen on its long rung (a continuation, studies.promotion) has ended its screen: one of the N.
        self.progress.update(
            self.task, completed=sum(r.finished or r.continued_as is not None for r in records)
        )
        table = Table(title="running and recent trials", expand=False)
        for col in (
            "#",
            "preset",
            *(label for _, label in self.shown),
            "step",
            self.metric,
            "verdict",
            *(("speech",) if self.speech else ()),
        ):
            table.add_column(col)
        running = [r for r in records if r.state == TrialState.RUNNING]
        for r in running + done[-8:][::-1]:
            value = r.last_value
            table.add_row(
                str(r.number),
                r.preset or "",
                *(fmt(r.params.get(p, "")) for p, _ in self.shown),
                self.step_info.get(r.number) or shown_step(r),
                "" if value is None else f"{value:.4f}",
                r.outcome.value,
                *((speech_words(r),) if self.speech else ()),
            )
        tally = Counter(r.outcome for r in records if r.state != TrialState.WAITING)
        counts = "  ".join(f"{k.value}: {v}" for k, v in sorted(tally.items()))
        best = ranking.best(records)
        best_line = "best: none feasible yet"
        if best is not None:
            params = ", ".join(f"{p} {fmt(best.params[p])}" for p, _ in self.shown if p in best.params)
            best_line = f"best: trial {best.number}  {self.metric} {best.value:.4f}  ({params})"
        return Group(self.progress, table, counts, best_line, self._eta_line(len(done)))

    def on_step(self, number: int, step: int, max_steps: int | None = None) -> None:
        """Called for every training step of an in-process trial: live step and a step-rate ETA."""
        now = time.monotonic()
        if self._last_step_time is not None and step > 1:
            rate = 1.0 / max(now - self._last_step_time, 1e-6)
            self._rate = rate if self._rate is None else 0.95 * self._rate + 0.05 * rate
        self._last_step_time = now
        if self._first_step_at is None:
            self._first_step_at = now
        self.step_info[number] = f"{step}" if max_steps is None else f"{step}/{max_steps}"
        self._current = (step, max_steps or self.mean_trial_steps)

    def _eta_line(self, done: int) -> str:
        """Before the first trials finish, the bar's ETA knows nothing; the step rate does."""
        if self._rate is None:
            return ""
        if self.mean_trial_steps is None:
            return f"step rate {self._rate:.2f}/s"
        step, total = getattr(self, "_current", (0, self.mean_trial_steps))
        remaining_trials = max(self.total - done - 1, 0)
        steps_left = max(total - step, 0) + remaining_trials * self.mean_trial_steps
        seconds = steps_left / self._rate
        return (
            f"step rate {self._rate:.2f}/s -> about {duration(seconds)} left if the remaining "
            f"{remaining_trials + 1} trials run {self.mean_trial_steps} steps each (pruning shortens it)"
        )

    def take_forecast(self, device: str, *, after_steps: int, after_s: float) -> str | None:
        """The forecast line once, after `after_steps` in-process steps, or after the second step when
        the steps since the first have taken `after_s`; None before and ever after."""
        if self._forecast_said or self._rate is None:
            return None
        step, _ = getattr(self, "_current", (0, 0))
        slow = time.monotonic() - (self._first_step_at or 0.0) >= after_s
        if step < after_steps and not slow:
            return None
        self._forecast_said = True
        return self.forecast(device)

    def forecast(self, device: str) -> str | None:
        """One line, printed once after a trial's first steps: the measured rate and what it means for
        the trial and the study (before the step-0 eval and the first steps, nothing on screen moves)."""
        if self._rate is None:
            return None
        step, total = getattr(self, "_current", (0, self.mean_trial_steps))
        if total is None or self.mean_trial_steps is None:
            return f"measured {self._rate:.2f} steps/s on {device}"
        done = len(self.study.get_trials(deepcopy=False, states=FINISHED))
        rest = max(self.total - done - 1, 0)
        return (
            f"measured {self._rate:.2f} steps/s on {device}: this trial ({total} steps) about "
            f"{duration(max(total - step, 0) / self._rate)} more; the other {rest} trials of ~{self.mean_trial_steps} "
            f"steps about {duration(rest * self.mean_trial_steps / self._rate)} before pruning"
        )

    def due(self, every: float = 1.0) -> bool:
        now = time.monotonic()
        if now - self._last >= every:
            self._last = now
            return True
        return False
