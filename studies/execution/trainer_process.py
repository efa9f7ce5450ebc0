"""A user's trainer as a child process: its output line by line, a clean stop, and no orphans.

The trainer runs in a session (process group) of its own, so a stop reaches everything it started
(DataLoader workers, a shell's children): SIGTERM to the group, SIGKILL after a grace period. Two
things outlive a worker that is killed outright (SIGKILL, the OOM killer), and both are covered:
- the trainer itself: it is started through a few lines of Python that ask Linux to SIGKILL it when
  its parent dies (``PR_SET_PDEATHSIG``), then exec the user's program (same pid, nothing in between);
- what the trainer started: every process of a trial carries the trial's token in its environment
  (``TOKEN_ENV``), recorded on the trial before the process starts, so whoever fails the dead worker's
  trial (its supervisor at once, or the rerun) kills them by it (``reap``), wherever they moved to.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

TOKEN_ENV = "TTS_SEARCH_TRAINER"
TAIL_LINES, TAIL_CHARS = 20, 300  # the output a failed trial's record keeps: its last lines, cut
QUIET_AFTER_EXIT_S = 0.5  # the trainer exited, but something it started holds the pipe open
POLL_S = 0.2  # how often a silent trainer's reader looks at its clocks
# Runs in the child, then becomes the user's program: die with the parent (Linux), unless it is gone
# already (then the kill below would never come).
_GUARD = "\n".join(
    (
        "import ctypes, os, signal, sys",
        "try:",
        "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG",
        "except Exception:",
        "    pass",
        "if os.getppid() != int(sys.argv[1]):",
        "    os._exit(137)",
        "os.execvp(sys.argv[2], sys.argv[2:])",
    )
)


def new_token() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Stopped:
    """How a trainer ended: ``signal`` None when it exited by itself."""

    returncode: int
    signal: str | None = None  # "SIGTERM", or "SIGKILL" when it outlived the grace period
    seconds: float | None = None  # from the SIGTERM to its exit


class TrainerProcess:
    """One run of the user's command; ``stop`` it however the run ends (it is a no-op once it has
    exited and nothing it started is left)."""

    def __init__(self, argv: list[str], *, cwd: Path, token: str) -> None:
        env = {**os.environ, TOKEN_ENV: token, "PYTHONUNBUFFERED": "1"}  # a Python trainer's lines at once
        self.token = token
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _GUARD, str(os.getpid()), *argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # A process group of its own (stopped as one), in the search's session: a new session would
            # also be a new scheduler autogroup on Linux, out of reach of the search's `nice`.
            process_group=0,
        )
        self.stopped: Stopped | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lines(self, idle: Callable[[], None] | None = None) -> Iterator[str]:
        """Its output, a line at a time as it arrives, until it ends (and its pipe is quiet). ``idle`` is
        called between reads, at least every ``POLL_S`` while it is silent: what it raises ends the
        reading (a reader's clock: the trainer has stalled)."""
        assert self.proc.stdout is not None
        fd, buffer, exited_at = self.proc.stdout.fileno(), b"", None
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                if idle is not None:
                    idle()
                if sel.select(timeout=POLL_S):
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        break
                    *complete, buffer = (buffer + chunk).split(b"\n")
                    for raw in complete:
                        yield self._keep(raw)
                    continue
                if self.proc.poll() is not None:
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > QUIET_AFTER_EXIT_S:
                        break
        if buffer:
            yield self._keep(buffer)

    def _keep(self, raw: bytes) -> str:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        self.tail.append(line[:TAIL_CHARS])
        return line

    def stop(self, grace_s: float) -> Stopped:
        """SIGTERM its process group, SIGKILL after ``grace_s``; then kill what is left of the group and
        anything else carrying its token. Idempotent: the first call's answer is kept."""
        if self.stopped is not None:
            return self.stopped
        how, seconds = None, None
        if self.proc.poll() is None:
            began, how = time.monotonic(), "SIGTERM"
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                how = "SIGKILL"
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            seconds = time.monotonic() - began
        _signal_group(self.proc.pid, signal.SIGKILL)  # its children, if the leader left them behind
        reap(self.token)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stopped = Stopped(returncode=self.proc.returncode, signal=how, seconds=seconds)
        return self.stopped

    def output_tail(self) -> str:
        return "\n".join(self.tail)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def reap(token: str | None) -> list[int]:
    """SIGKILL every process of this user that carries ``token`` in its environment (a trainer, or
    what it started, left behind by a worker that died); the pids killed. Linux /proc; elsewhere none."""
    if not token:
        return []
    marker = f"{TOKEN_ENV}={token}".encode()
    killed = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            pid = int(environ.parent.name)
            if pid == os.getpid() or marker not in environ.read_bytes().split(b"\0"):
                continue
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
    return killed
