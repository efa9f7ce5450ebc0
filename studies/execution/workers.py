"""Local worker processes of one search: start them, watch them, stop them cleanly on Ctrl-C.

``--workers N`` runs N copies of the same ``search.py`` command with ``--worker-index i``; they share
the study only through its storage, exactly as processes on other machines do. A dead one is
restarted by ``studies.execution.supervisor``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path

from studies.execution.seeds import stream_seed

RESTART_ENV = "TTS_SEARCH_WORKER_RESTART"  # set by the supervisor: how many times worker i was restarted
THREADS_ENV = "TTS_SEARCH_THREADS"  # torch CPU threads a worker process runs with


def sampler_seed(seed: int, worker_index: int | None, *, shared: bool) -> int:
    """The sampler seed of this process: ``--seed`` itself for a lone search on its own storage, else a
    stream of its own derived from ``--seed`` (``studies.execution.seeds.stream_seed``).

    A local worker's stream is set by its index and how often it was restarted: a restarted worker must
    not propose its dead predecessor's points again. On a shared ``--storage`` (other machines, other
    shells) the host and pid join in, since every machine numbers its local workers from 0 and two
    processes on one seed would draw the same start-up points. The lone search keeps ``--seed`` so
    ``--workers 1`` proposes what it always did.
    """
    if worker_index is None and not shared:
        return seed
    restart = int(os.environ.get(RESTART_ENV, "0") or 0) if worker_index is not None else 0
    host = zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) if shared else None
    return stream_seed(seed, worker_index or 0, restart, host=host)


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them ([] on a CPU machine)."""
    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    if named is not None:
        return [d.strip() for d in named.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_gpu(index: int, gpus: list[str]) -> str | None:
    """The card of local worker `index`: worker i on GPU i mod count, so N workers spread over the cards
    and several share one when N exceeds them (a tiny model leaves a big GPU mostly idle)."""
    return gpus[index % len(gpus)] if gpus else None


def spawn_worker(
    args: list[str],
    index: int,
    threads_each: int,
    log_dir: Path,
    *,
    restart: int = 0,
    name: str = "worker",
    title: str = "search run",
) -> subprocess.Popen:
    """Start ``python ARGS`` as local worker `index` (its `restart`-th restart); stderr goes to
    ``log_dir/<name>-<i>.log``. Every worker process of the project starts here: a search's trial
    workers (``args`` = the search command with ``--worker-index i``) and long-run workers
    (``studies.execution.pool``) alike, with the same thread count, card and log.

    The log is appended to, after a header naming the run and the time: a rerun after a crash, or a
    restart, must keep the traceback of the worker that died. (A pipe nobody reads would fill and
    block the worker, hence a file.)
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads_each),
        THREADS_ENV: str(threads_each),
        RESTART_ENV: str(restart),
    }
    gpu = worker_gpu(index, visible_gpus())
    if gpu is not None:  # each worker sees its one card as cuda:0; it says which in its log
        env["CUDA_VISIBLE_DEVICES"] = gpu
    path = log_dir / f"{name}-{index}.log"
    started = datetime.now(UTC).isoformat(timespec="seconds")
    what = f"restart {restart}" if restart else "start"
    cmd = [sys.executable, *args]
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"=== {title} of parent pid {os.getpid()}, {name} {index} {what}, {started} ===\n")
        log.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    proc.log_path = path  # type: ignore[attr-defined]
    return proc


def worker_threads(default: int) -> int:
    """Torch CPU threads of this process when a parent started it as a worker, else ``default``."""
    raw = os.environ.get(THREADS_ENV)
    return int(raw) if raw else default


def last_log_line(proc: subprocess.Popen) -> str:
    """The last line a worker wrote (its one-line error, or a traceback's last line), with its log."""
    path = getattr(proc, "log_path", None)
    lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines() if path else []
    last = lines[-1] if lines and not lines[-1].startswith("=== ") else f"exited with code {proc.returncode}"
    return f"{last} (log: {path})" if path else last


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
