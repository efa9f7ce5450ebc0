"""What a run reports and where: its callbacks and I/O as one frozen value, every part optional.

The loop calls `on_step` after each step's numbers are read back, and `on_eval` after each eval (a
True answer stops the run: that is how a search prunes); `on_rung` at the end of a rung (a False
answer ends the run there, finished: that is how a trial is not promoted). `telemetry` names the SQLite file the run's
steps, evals and verdict go to; with none, a null writer takes them, so the loop never asks whether
there is one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from trainer.evaluate import EvalMetrics, EvalSample
from trainer.results import StepMetrics
from trainer.telemetry import Telemetry


@dataclass(frozen=True, kw_only=True, slots=True)
class RunHooks:
    on_step: Callable[[StepMetrics], None] | None = None
    on_eval: Callable[[EvalMetrics, EvalSample], bool] | None = None
    on_rung: Callable[[EvalMetrics], bool] | None = None  # at a rung's end: go on to the next one?
    telemetry: Path | None = None  # the run's telemetry database (trainer/telemetry.py)
    run_id: str = "run"  # the run's key in the telemetry
    warn: Callable[[str], None] = print  # resumes, recoveries, an out-of-memory stop

    def step(self, metrics: StepMetrics) -> None:
        if self.on_step is not None:
            self.on_step(metrics)

    def eval(self, metrics: EvalMetrics, sample: EvalSample) -> bool:
        """True when the caller asks the run to stop here."""
        return self.on_eval is not None and bool(self.on_eval(metrics, sample))

    def rung(self, metrics: EvalMetrics) -> bool:
        """True when the run goes on past the rung that ends at this eval (the default)."""
        return self.on_rung is None or bool(self.on_rung(metrics))


NO_HOOKS = RunHooks()  # a run that reports to nobody (warnings still print)


class RunWriter(Protocol):
    """What the loop writes to: `Telemetry`, or the null writer."""

    def start_run(
        self, run_id: str, config: Mapping[str, Any], meta: Mapping[str, Any], *, from_step: int | None = None
    ) -> None: ...
    def log_step(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None: ...
    def log_eval(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None: ...
    def finish_run(self, run_id: str, status: str, verdict: Mapping[str, Any] | None = None) -> None: ...


class NullWriter:
    """Takes a run's telemetry and keeps none of it."""

    def start_run(
        self, run_id: str, config: Mapping[str, Any], meta: Mapping[str, Any], *, from_step: int | None = None
    ) -> None:
        return None

    def log_step(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
        return None

    def log_eval(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
        return None

    def finish_run(self, run_id: str, status: str, verdict: Mapping[str, Any] | None = None) -> None:
        return None


@contextlib.contextmanager
def open_writer(path: Path | None) -> Iterator[RunWriter]:
    """The run's telemetry writer, closed (and flushed) when the run ends, however it ends."""
    if path is None:
        yield NullWriter()
        return
    with Telemetry(path) as telemetry:
        yield telemetry
