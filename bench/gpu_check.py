"""The GPU check: is the main command (`python search.py --study stability`) ready for this card?

One script, under 8 minutes on an H100/H200, three parts, exit code non-zero if any part fails:

1. speed: the seed's model (`normal`, 78M) in fp16 at batch 16 for 200 steps of the real trainer:
   steps/s, ms/step, peak memory, and the share of each step the GPU waits on the host (CUDA events
   around the step's device work against the wall time between steps);
2. sharing: trial throughput (trial-steps/s summed over processes) of `tiny`, `small` and `normal` with
   1, 2 and 4 worker processes on the one GPU, side by side, to decide how a study should use a card;
3. the study: `search.py --study stability --trials 3 --horizon-scale 0.05 --device cuda` in a scratch
   runs folder, then the study is opened with optuna and the seeded presets (`basic`, `enhanced`) must
   have finished trials; the outcomes are printed.

Data: the embedded corpus (built on first use, cached), no network. On a machine without CUDA it says
so in one line and exits 0.

    python bench/gpu_check.py            # or: make gpu-check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.device import describe_device  # noqa: E402
from trainer import loop  # noqa: E402
from trainer.config import TrainConfig, apply_overrides  # noqa: E402
from trainer.data import TrainData, load_train_data  # noqa: E402
from trainer.hooks import RunHooks  # noqa: E402
from trainer.presets import preset  # noqa: E402
from tts_model.dataset import DataConfig  # noqa: E402

NO_GPU = "gpu-check: no CUDA GPU is visible here; nothing to check (run it on a GPU machine)"
SPEED_STEPS = 200
SPEED_WARMUP = 20  # steps left out of the timing: allocator growth, cuDNN/cuBLAS heuristics
SIZES = ("tiny", "small", "normal")
WORKERS = (1, 2, 4)
WINDOW_S = 8.0  # timed training per (size, workers) cell
SETUP_S = 8.0  # a worker's model build + baseline eval + first steps, before the window opens
STUDY = "stability"
HORIZON_SCALE = 0.05
# search.py stores a scaled study under its own name (studies/registry.py `scaled`), apart from the real one.
SCALED_STUDY = f"{STUDY}-x{HORIZON_SCALE:g}"
SEEDED_PRESETS = ("basic", "enhanced")
STUDY_TIMEOUT_S = 240


def check_config(size: str, steps: int, precision: str = "fp16") -> TrainConfig:
    """The main study's recipe (`basic`, fp16, batch 16) at `size`; no eval inside the timed steps."""
    overrides = {
        "model_size": size,
        "precision": precision,
        "batch_size": 16,
        "max_steps": steps,
        "eval_every": 10**6,
        "checkpoint_every": 10**6,
    }
    return apply_overrides(preset("basic"), overrides, where="gpu-check")


# --- 1. speed ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Speed:
    steps_per_s: float
    ms_per_step: float
    peak_gib: float
    # Of the wall time between steps, the part outside the step's device span: the batch, the read-back,
    # guards and telemetry. A lower bound of the GPU's idle share: gaps inside the span (kernels that run
    # faster than the host launches them) count as busy.
    host_wait_share: float


def measure_speed(data: TrainData, device: torch.device) -> Speed:
    """200 steps of the real trainer. CUDA events around `train_step` (everything a step queues on the
    device) give the GPU span of each step; the wall time between on_step calls is the whole step."""
    spans: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    stamps: list[float] = []
    real_step = loop.train_step

    def timed_step(*args, **kwargs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = real_step(*args, **kwargs)
        end.record()
        spans.append((start, end))
        return out

    torch.cuda.reset_peak_memory_stats(device)
    loop.train_step = timed_step
    try:
        cfg = check_config("normal", SPEED_STEPS)
        result = loop.train(
            cfg, data, device=device, hooks=RunHooks(on_step=lambda m: stamps.append(time.perf_counter()))
        )
    finally:
        loop.train_step = real_step
    torch.cuda.synchronize(device)
    if result.steps != SPEED_STEPS:
        raise CheckFailed(f"speed: the run stopped at step {result.steps} ({result.verdict or result.oom})")
    wall_ms = [
        1000 * (b - a) for a, b in zip(stamps[SPEED_WARMUP:], stamps[SPEED_WARMUP + 1 :], strict=False)
    ]
    gpu_ms = [s.elapsed_time(e) for s, e in spans[SPEED_WARMUP + 1 :]]
    ms = statistics.median(wall_ms)
    busy = min(1.0, sum(gpu_ms) / sum(wall_ms))
    return Speed(1000 / ms, ms, torch.cuda.max_memory_allocated(device) / 2**30, 1.0 - busy)


# --- 2. sharing: worker processes on one GPU ---------------------------------------------------------


class _WindowOver(Exception):
    """Raised from on_step when a worker's timed window has closed: the trial has said what it can."""


def worker_main(device: torch.device) -> int:
    """A worker: one JSON command per stdin line ({"size", "start_at", "seconds"}, optionally
    "precision"), one JSON reply per line ({"steps", "seconds", "late"}); the data set is loaded once, a
    fresh trial per command."""
    replies = sys.stdout
    sys.stdout = sys.stderr  # what data loading or the trainer prints goes to the log, not into the replies
    data = load_train_data(None, None, DataConfig())
    print(json.dumps({"ready": True}), file=replies, flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        cfg = check_config(cmd["size"], 10**6, cmd.get("precision", "fp16"))
        reply = train_window(data, device, cfg, start_at=cmd["start_at"], seconds=cmd["seconds"])
        print(json.dumps(reply), file=replies, flush=True)
    return 0


def train_window(
    data: TrainData, device: torch.device, cfg: TrainConfig, *, start_at: float, seconds: float
) -> dict:
    """A trial whose steps from wall-clock `start_at` for `seconds` are counted, then stopped. "late": it
    had not finished a step when the window opened (its setup overran), so it did not share it fully."""
    stamps: list[float] = []
    stepping_before = False

    def on_step(m: loop.StepMetrics) -> None:
        nonlocal stepping_before
        now = time.time()
        if now < start_at:
            stepping_before = True
            return
        stamps.append(now)
        if now >= start_at + seconds:
            raise _WindowOver

    with contextlib.suppress(_WindowOver):
        loop.train(cfg, data, device=device, hooks=RunHooks(on_step=on_step, warn=_log))
    late = not stepping_before
    elapsed = stamps[-1] - stamps[0] if len(stamps) > 1 else math.nan
    return {"steps": len(stamps) - 1, "seconds": elapsed, "late": late}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_sharing(out: Callable[[str], None]) -> dict[tuple[str, int], float]:
    """trial-steps/s summed over 1, 2, 4 processes for each size; four workers are started once and the
    first N of them train together in each cell, their windows opened at the same wall-clock time."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}  # 4 workers x 2 host threads fit 16 cores beside the parent
    procs = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", "cuda"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        for _ in range(max(WORKERS))
    ]
    try:
        for p in procs:
            _reply(p)  # ready
        rates: dict[tuple[str, int], float] = {}
        for size in SIZES:
            for n in WORKERS:
                start_at = time.time() + SETUP_S
                cmd = json.dumps({"size": size, "start_at": start_at, "seconds": WINDOW_S}) + "\n"
                for p in procs[:n]:
                    p.stdin.write(cmd)
                    p.stdin.flush()
                replies = [_reply(p) for p in procs[:n]]
                if any(r["late"] or r["steps"] < 1 for r in replies):
                    raise CheckFailed(f"sharing: a {size} worker of {n} missed its window: {replies}")
                rates[(size, n)] = sum(r["steps"] / r["seconds"] for r in replies)
                out(f"  {size:7s} x{n}: {rates[(size, n)]:7.1f} trial-steps/s")
        return rates
    finally:
        for p in procs:
            p.stdin.close()
        for p in procs:
            p.wait(timeout=60)


def _reply(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline()
    if not line:
        raise CheckFailed(f"sharing: worker {proc.pid} ended (exit {proc.wait()})")
    return json.loads(line)


# --- 3. the study ------------------------------------------------------------------------------------


def run_study(runs_dir: Path, out: Callable[[str], None]) -> list[str]:
    """The real study for 3 trials with its horizon cut, then its seeded presets' outcomes from storage."""
    import optuna

    cmd = [sys.executable, "search.py", "--study", STUDY, "--trials", "3"]
    cmd += ["--horizon-scale", str(HORIZON_SCALE), "--device", "cuda", "--runs-dir", str(runs_dir)]
    out("  $ " + " ".join(cmd[1:]))
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=STUDY_TIMEOUT_S)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise CheckFailed(f"study: search.py exited {proc.returncode}: " + " | ".join(tail))
    storage = f"sqlite:///{(runs_dir / SCALED_STUDY / 'study.db').resolve().as_posix()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=SCALED_STUDY, storage=storage)
    for t in study.trials:
        said = {k: t.user_attrs[k] for k in ("preset", "verdict", "divergence_step") if k in t.user_attrs}
        out(f"  trial {t.number}: {t.state.name}, value {t.value}, {said}")
    return seeded_problems(study.trials)


def seeded_problems(trials: Sequence[FrozenTrial]) -> list[str]:
    """What is wrong with the seeded presets' trials: each of `basic` and `enhanced` must have one that
    finished (COMPLETE, or PRUNED, which is how a diverged trial ends). Seeded trials carry the preset
    they judge as user attribute "preset" (studies/record.py PRESET)."""
    from optuna.trial import TrialState

    problems = []
    for name in SEEDED_PRESETS:
        states = [t.state for t in trials if t.user_attrs.get("preset") == name]
        if not states:
            problems.append(f"no trial of preset {name!r}")
        elif not any(state in (TrialState.COMPLETE, TrialState.PRUNED) for state in states):
            problems.append(f"preset {name!r} never finished ({', '.join(s.name for s in states)})")
    return problems


# --- the check ---------------------------------------------------------------------------------------


class CheckFailed(Exception):
    """One part of the check failed; the others still run."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # A sharing worker (part 2) on DEVICE; "cpu" lets tests/test_gpu_check.py run the protocol anywhere.
    parser.add_argument("--worker", choices=["cuda", "cpu"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return worker_main(torch.device(args.worker))
    if not torch.cuda.is_available():
        print(NO_GPU)
        return 0

    began = time.perf_counter()
    device = torch.device("cuda")
    print(
        f"card: {describe_device(device)}; torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True
    )
    data = load_train_data(None, None, DataConfig())  # builds and caches the corpus for the workers too
    failures: list[str] = []

    print("1. speed: normal, fp16, batch 16, 200 steps of the trainer", flush=True)
    try:
        s = measure_speed(data, device)
        print(
            f"  {s.steps_per_s:.2f} steps/s, {s.ms_per_step:.1f} ms/step, peak memory {s.peak_gib:.2f} GiB, "
            f"GPU waiting on the host {100 * s.host_wait_share:.1f}% of the step",
            flush=True,
        )
    except (CheckFailed, RuntimeError) as exc:
        failures.append(str(exc))

    print(f"2. sharing: trial-steps/s summed over {', '.join(map(str, WORKERS))} processes", flush=True)
    try:
        measure_sharing(lambda line: print(line, flush=True))
    except (CheckFailed, OSError, subprocess.SubprocessError, ValueError) as exc:
        failures.append(str(exc))

    print(f"3. study: {STUDY}, 3 trials, every step count x{HORIZON_SCALE:g}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            failures += [f"study: {p}" for p in run_study(Path(tmp), lambda line: print(line, flush=True))]
    except (CheckFailed, ImportError, OSError, subprocess.SubprocessError, KeyError) as exc:
        failures.append(str(exc))

    print(f"gpu-check took {time.perf_counter() - began:.0f} s")
    for failure in failures:
        print(f"FAILED {failure}")
    print("gpu-check: " + ("all parts passed" if not failures else f"{len(failures)} part(s) failed"))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
