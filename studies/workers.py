"""Local worker processes of one search: start them, watch them, stop them cleanly on Ctrl-C.

``--workers N`` runs N copies of the same ``search.py`` command with ``--worker-index i``; they share
the study only through its storage, exactly as processes on other machines do.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path


def sampler_seed(seed: int, worker_index: int | None, *, shared: bool) -> int:
    """The sampler seed of one process: ``--seed`` for a lone search, ``--seed + i`` for local worker i.

    Processes joined on a shared ``--storage`` (other machines, other shells) would otherwise draw the
    same start-up points from the same seed; their host and pid make each stream its own.
    """
    if worker_index is not None:
        return seed + worker_index
    if not shared:
        return seed
    mix = zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())
    return (seed + mix) % 2**32


def spawn_workers(argv: list[str], n: int, threads_each: int, log_dir: Path) -> list[subprocess.Popen]:
    """Start `n` worker processes of this same command; they share the study through its storage.

    Each writes stderr to ``log_dir/worker-<i>.log`` (a pipe nobody reads would fill and block it).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_each), "TTS_SEARCH_THREADS": str(threads_each)}
    procs = []
    for i in range(n):
        cmd = [sys.executable, *argv, "--worker-index", str(i)]
        with open(log_dir / f"worker-{i}.log", "w", encoding="utf-8") as log:
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True))
        procs[-1].log_path = log_dir / f"worker-{i}.log"  # type: ignore[attr-defined]
    return procs


def wait_workers(procs: list[subprocess.Popen], poll: Callable[[], None], interval: float = 1.0) -> list[str]:
    """Poll until every worker has exited; return one line for each that failed."""
    # Poll every worker each round (no short-circuit): polling reaps a dead one at once.
    while [p.poll() for p in procs].count(None):
        poll()
        time.sleep(interval)
    poll()
    errors: list[str] = []
    for p in procs:
        if p.returncode not in (0, None):
            path = getattr(p, "log_path", None)
            lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines() if path else []
            last = lines[-1] if lines else f"exited with code {p.returncode}"
            errors.append(f"{last} (log: {path})" if path else last)
    return errors


def stop_workers(procs: list[subprocess.Popen], *, settle_s: float = 2.0, timeout_s: float = 30.0) -> None:
    """After Ctrl-C: let each worker fail its trial cleanly, then make sure every one has exited.

    A terminal sends SIGINT to the workers too; one signalled alone (``kill -INT``) is passed it after
    `settle_s`; one still alive after `timeout_s` is killed (its trial is then failed by pid).
    """
    deadline = time.monotonic() + settle_s
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline + timeout_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
