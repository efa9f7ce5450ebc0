"""`bench/gpu_check.py` on a machine without CUDA: one line saying so, exit 0, nothing run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
