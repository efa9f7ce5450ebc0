"""The parent of ``--workers N`` restarts a dead worker, up to a bound, and says so each time.

Workers here are stand-ins that die at once (a real worker takes seconds to import torch): what is
tested is the parent's bookkeeping, on a real SQLite study and real processes and signals.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from studies.execution.completion import EXIT_INCOMPLETE, exit_status
from studies.execution.storage import open_storage
from studies.execution.supervisor import MAX_RESTARTS, Supervisor

DIE = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
FAIL_ONCE = "import sys; from pathlib import Path; p = Path(sys.argv[1]); sys.exit(0 if p.exists() else p.touch() or 1)"


def _study(tmp_path: Path) -> optuna.Study:
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=False)
    return optuna.create_study(study_name="s", storage=storage)


def test_a_worker_that_keeps_dying_is_restarted_three_times_then_given_up(tmp_path: Path) -> None:
    study, lines = _study(tmp_path), []
    sup = Supervisor(study, ["-c", DIE], 2, 1, 1, tmp_path / "workers", lines.append)
    assert sup.run(lambda: None, interval=0.05) == []  # every death had its line already
    for i in (0, 1):
        mine = [line for line in lines if line.startswith(f"worker {i} ")]
        assert len(mine) == MAX_RESTARTS + 1, lines
        assert all("killed by SIGKILL" in line for line in mine)
        assert [f"({k} of {MAX_RESTARTS})" in mine[k - 1] for k in range(1, 4)] == [True] * 3
        assert "not restarted: it died 4 times" in mine[-1]
        log = (tmp_path / "workers" / f"worker-{i}.log").read_text()
        assert log.count("=== search run") == MAX_RESTARTS + 1  # appended, never overwritten
    assert len(sup.procs) == 2 * (MAX_RESTARTS + 1)
    said: list[str] = []
    assert exit_status(study, 1, said.append, pids=[p.pid for p in sup.procs]) == EXIT_INCOMPLETE
    assert said == ["incomplete: 0 of 1 trials finished; run the same command to continue"]


def test_a_crashed_worker_is_restarted_and_one_that_ends_is_not(tmp_path: Path) -> None:
    study, lines = _study(tmp_path), []
    flag = tmp_path / "crashed-once"
    sup = Supervisor(study, ["-c", FAIL_ONCE, str(flag)], 1, 1, 1, tmp_path / "workers", lines.append)
    assert sup.run(lambda: None, interval=0.05) == []
    assert len(lines) == 1 and "crashed (exit code 1)" in lines[0] and "restarted as pid" in lines[0]
    assert [p.returncode for p in sup.procs] == [1, 0]


def test_workers_spread_over_the_visible_gpus_and_share_them_beyond() -> None:
    from studies.execution.workers import worker_gpu

    assert [worker_gpu(i, ["0", "1"]) for i in range(5)] == ["0", "1", "0", "1", "0"]
    assert [worker_gpu(i, ["3"]) for i in range(3)] == ["3", "3", "3"]  # several per GPU
    assert worker_gpu(0, []) is None  # a CPU machine: the environment is left alone


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch) -> None:
    from studies.execution.workers import visible_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert visible_gpus() == ["2", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == []
