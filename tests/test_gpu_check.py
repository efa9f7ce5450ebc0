"""`bench/gpu_check.py` on a machine without CUDA: one line saying so, exit 0, nothing run; and the
sharing part's worker protocol, run on the CPU (the GPU parts cannot run here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from corpus_fixture import cache_env  # noqa: F401  (pytest fixture)

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_without_a_gpu_says_so_and_exits_0(tmp_path: Path) -> None:
    # CUDA_VISIBLE_DEVICES="" hides any card, so the test means the same on a GPU machine.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TTS_STABILITY_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "bench/gpu_check.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        "gpu-check: no CUDA GPU is visible here; nothing to check (run it on a GPU machine)"
    ]
    assert proc.stderr == ""
    assert not (tmp_path / "cache").exists()  # no corpus built, no training run


def test_a_sharing_worker_trains_a_timed_window_and_replies(cache_env: Path) -> None:  # noqa: F811
    """The worker loads the embedded corpus, trains a real `tiny` trial from a shared start time for a
    window, and answers in JSON on stdout while loading and training print elsewhere."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TTS_STABILITY_CACHE": str(cache_env)}
    proc = subprocess.Popen(
        [sys.executable, "bench/gpu_check.py", "--worker", "cpu"],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert json.loads(proc.stdout.readline()) == {"ready": True}
        start_at = time.time() + 20.0  # model build, baseline eval and the first steps fit before it
        # fp32: the check's fp16 is emulated on a CPU, ~7x slower; the protocol is the same.
        command = {"size": "tiny", "start_at": start_at, "seconds": 8.0, "precision": "fp32"}
        proc.stdin.write(json.dumps(command) + "\n")
        proc.stdin.flush()
        reply = json.loads(proc.stdout.readline())
    finally:
        proc.stdin.close()
        code = proc.wait(timeout=120)
    assert code == 0
    # A shared 2-core machine can stall a step for seconds; the window still holds several steps.
    assert reply["late"] is False and reply["steps"] >= 2 and 4.0 <= reply["seconds"] <= 30.0, reply


def test_the_study_part_needs_both_seeded_presets_finished() -> None:
    """The study part's verdict over trials as the study stores them (preset in the user attributes)."""
    import optuna
    from optuna.trial import TrialState

    sys.path.insert(0, str(REPO / "bench"))
    from gpu_check import seeded_problems

    def trial(preset: str | None, state: TrialState) -> optuna.trial.FrozenTrial:
        attrs = {} if preset is None else {"preset": preset}
        value = 2.0 if state == TrialState.COMPLETE else None
        return optuna.trial.create_trial(state=state, value=value, user_attrs=attrs)

    basic, enhanced = trial("basic", TrialState.COMPLETE), trial("enhanced", TrialState.PRUNED)
    assert seeded_problems([basic, enhanced, trial(None, TrialState.COMPLETE)]) == []
    assert seeded_problems([basic]) == ["no trial of preset 'enhanced'"]
    failed = trial("enhanced", TrialState.FAIL)
    assert seeded_problems([basic, failed]) == ["preset 'enhanced' never finished (FAIL)"]
