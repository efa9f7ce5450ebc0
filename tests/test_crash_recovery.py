"""`python -m trainer` killed with SIGKILL, then `--resume`: the run goes on as if never stopped.

A resumed run must repeat the uninterrupted one's losses step for step (weights, optimizer, data
position and every RNG come back from the checkpoint), and a checkpoint cut short by the crash must
be detected by its checksum and passed over for the previous good one, with a one-line warning.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.corpus_fixture import cache_env, corpus_paths  # noqa: F401  (session fixtures)
from tests.pg_harness import wait_for
from trainer.checkpoints import checkpoint_name

ROOT = Path(__file__).resolve().parents[1]
STEPS, EVERY = 40, 10


def trainer_cmd(out: Path, corpus, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "trainer", "--model-size", "tiny", "--optimization-level", "enhanced",
        "--batch-size", "8", "--max-steps", str(STEPS), "--checkpoint-every", str(EVERY),
        "--eval-every", str(EVERY), "--seed", "3", "--device", "cpu", "--out", str(out),
        "--train-data", str(corpus.train), "--val-data", str(corpus.eval), *extra,
    ]  # fmt: skip


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def losses(out: Path) -> dict[int, float]:
    db = sqlite3.connect(out / "telemetry.db")
    try:
        return dict(db.execute("select step, loss from steps where run_id = ? order by step", [out.name]))
    finally:
        db.close()


@pytest.fixture(scope="module")
def baseline(corpus_paths, tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:  # noqa: F811
    out = tmp_path_factory.mktemp("baseline") / "run"
    result = run(trainer_cmd(out, corpus_paths))
    assert result.returncode == 0, result.stderr[-2000:]
    steps = losses(out)
    assert sorted(steps) == list(range(1, STEPS + 1))
    return steps


@pytest.fixture(scope="module")
def killed(corpus_paths, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A run SIGKILLed just after its step-20 checkpoint landed (and before step 30's)."""
    out = tmp_path_factory.mktemp("killed") / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(trainer_cmd(out, corpus_paths), cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    sidecar = out / "checkpoints" / checkpoint_name(2 * EVERY).replace(".pt", ".json")
    try:
        wait_for(sidecar.exists, 120, interval=0.02, what="the step-20 checkpoint")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "checkpoints" / checkpoint_name(3 * EVERY).replace(".pt", ".json")).exists()
    return out


def assert_same_losses(resumed: dict[int, float], baseline: dict[int, float], from_step: int) -> None:
    assert set(range(from_step + 1, STEPS + 1)) <= set(resumed), "the resumed run lost steps"
    for step, loss in resumed.items():
        assert loss == pytest.approx(baseline[step], rel=1e-5, abs=1e-6), f"step {step}"


def test_resume_after_sigkill_repeats_the_uninterrupted_losses(
    killed: Path,
    baseline,
    corpus_paths,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    shutil.copytree(killed, out)
    result = run(trainer_cmd(out, corpus_paths, "--resume"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed from" in result.stderr and "step 20" in result.stderr
    assert_same_losses(losses(out), baseline, from_step=2 * EVERY)


def test_a_truncated_checkpoint_is_detected_and_the_previous_one_used(
    killed: Path,
    baseline,
    corpus_paths,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    shutil.copytree(killed, out)
    newest = out / "checkpoints" / checkpoint_name(2 * EVERY)
    data = newest.read_bytes()
    (out / "checkpoints" / "best.pt").unlink(missing_ok=True)  # may be a hard link to the same bytes
    newest.write_bytes(data[: len(data) // 2])  # what a crash mid-write on a non-atomic writer leaves
    result = run(trainer_cmd(out, corpus_paths, "--resume"))
    assert result.returncode == 0, result.stderr[-2000:]
    err = " ".join(result.stderr.split())
    assert f"checkpoint {newest.name} is truncated or corrupt" in err
    assert f"using {checkpoint_name(EVERY)}" in err and "step 10" in err
    assert "Traceback" not in result.stderr
    assert_same_losses(losses(out), baseline, from_step=EVERY)
