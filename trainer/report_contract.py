"""The reporter's contract with a training loop, free of torch: what stops the loop (``StopRun`` and its
kinds), what breaks the contract (``ReportError``), and what a run reported (``ReportedStep``,
``Signals``). A command-line study's parser and a CLI's checks read these without loading the model;
the ``Reporter`` itself is in ``trainer/reporter.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from trainer.guards import ALIGNED_CHECK, DECODE_CHECK, Verdict


class StopRun(Exception):  # noqa: N818  (a signal to the loop, like Optuna's TrialPruned)
    """Ends the user's training loop from inside a ``reporter`` call; the study catches it."""


class Diverged(StopRun):
    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.detail)
        self.verdict = verdict


class Pruned(StopRun):
    def __init__(self, step: int) -> None:
        super().__init__(f"pruned at step {step}")
        self.step = step


class Stalled(StopRun):
    """The trainer went quiet for longer than the study allows, or ran past its time: ``str`` says which."""


class Watch(Protocol):
    """The study's clock on a run: ``enter`` at each call (why the run is over, or None), ``leave`` after."""

    def enter(self) -> str | None: ...

    def leave(self) -> None: ...


class ReportError(ValueError):
    """The numbers a loop reports break the contract (a signal that comes and goes, a step that goes
    back): the user's bug, said in one line."""


@dataclass(frozen=True, slots=True)
class ReportedStep:
    """One training step as a trainer reported it (None: not reported)."""

    step: int
    loss: float
    grad_norm: float | None
    mel: float | None
    alignment: float | None
    loss_scale: float | None
    skipped: bool  # the loss scale dropped: the GradScaler skipped this update


@dataclass(frozen=True, slots=True)
class Signals:
    """Which optional signals a run reports, fixed by its first step (alignment: its first eval)."""

    grad_norm: bool
    mel: bool
    loss_scale: bool
    alignment: bool | None  # None: not known yet (no eval so far)

    @property
    def guards_off(self) -> tuple[str, ...]:
        off = [] if self.grad_norm else ["explosion"]
        off += [] if self.mel else ["ceiling"]
        off += [] if self.alignment else ["collapse", ALIGNED_CHECK]
        return (*off, DECODE_CHECK)

    def step_note(self) -> str:
        """What is off for lack of a step signal, in one line."""
        parts = [] if self.grad_norm else ["explosion (no grad_norm)"]
        parts += [] if self.mel else ["ceiling (no mel; the spike guard watches the loss)"]
        parts += ["decode (no free-running decode: the project's own measure)"]
        return "guards off for lack of a signal: " + "; ".join(parts)
