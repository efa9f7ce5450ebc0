"""What being a guarded trial costs Coqui's Trainer: the same Coqui training alone and as a study's trial,
side by side.

- alone: ``examples/coqui/coqui_runner.py --bare``: Coqui's Trainer with the runner's plumbing only (no
  figures, no checkpoints), no hook wrapped, no metrics line;
- in a trial: ``search.py --space ... --command "<the runner>" --trials 1``: the runner's hooks (the
  pre-clip gradient norm, the attention measure), a JSON line per step, and the search reading each line
  as it comes: the guards, the telemetry, Optuna.
Same config, same seed, one torch thread each, run A B then B A. Per run, between the end of the 2nd
step and the end of the last (no start-up, no eval), from the trainer's own clocks (``--timing``): its
steps/s (wall) and its CPU seconds per step; in a trial also the search process's CPU for the whole
trial. On a machine shared with other jobs the wall figures wander with the load; the CPU per step does
not. Both end with the same eval; its value must match (the same training), else the bench exits 1.

    python bench/bench_coqui_overhead.py --corpus runs/coqui-corpus [--steps 60] [--reps 2]

It needs the ``coqui`` extra in this Python (``make setup-coqui``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studies.command import ConfigTarget  # noqa: E402

RUNNER = ROOT / "examples" / "coqui" / "coqui_runner.py"
CONFIG = ROOT / "examples" / "coqui" / "config.json"
PARAMS = {"lr": 1e-3, "grad_clip": 1.0, "warmup_steps": 20}
KEYS = {"lr": "lr", "grad_clip": "grad_clip", "warmup_steps": "lr_scheduler_params.warmup_steps"}
SPACE = f"""
[study]
trials = 1
warmup = "warmup_steps"
[config]
file = "{CONFIG}"
[params.lr]
key = "lr"
low = 1e-5
high = 1.0
scale = "log"
[params.grad_clip]
key = "grad_clip"
low = 0.1
high = 10.0
scale = "log"
[params.warmup_steps]
key = "lr_scheduler_params.warmup_steps"
low = 1
high = 4000
scale = "int"
log = true
[presets.bench]
lr = {PARAMS["lr"]}
grad_clip = {PARAMS["grad_clip"]}
warmup_steps = {PARAMS["warmup_steps"]}
"""


@dataclass(frozen=True)
class Run:
    wall_rate: float  # steps/s, from the end of the 2nd step to the end of the last (the runner's clock)
    cpu_per_step: float  # the trainer process's CPU seconds per step over the same steps
    own_share: float  # the share of the trainer's step time spent in the runner's own code (0 alone)
    search_cpu: float  # the search process's CPU seconds for the whole trial (0 alone)
    metric: float  # the final eval's value: the same in every run, or they did not train the same


def from_timing(path: Path, search_cpu: float, metric: float) -> Run:
    t = json.loads(path.read_text(encoding="utf-8"))
    wall, cpu, own = t["step_end_wall"], t["step_end_cpu"], t["step_end_own"]
    n, span = len(wall) - 2, wall[-1] - wall[1]
    return Run(n / span, (cpu[-1] - cpu[1]) / n, (own[-1] - own[1]) / span, search_cpu, metric)


def search_per_line(lines: int = 2000) -> float:
    """CPU seconds the search spends on one of the runner's step lines: read it, guard it, log it to
    SQLite telemetry (the pipe's own cost aside), measured over ``lines`` lines like the runner's."""
    from studies.metrics_lines import MetricsFormat
    from trainer.config import GuardConfig
    from trainer.hooks import open_writer
    from trainer.reporter import Reporter

    text = [
        json.dumps(
            {
                "step": i,
                "loss": 1.2 + 0.01 * (i % 7),
                "grad_norm": 0.5 + 0.01 * (i % 5),
                "mel": 2.0 + 0.01 * (i % 3),
                "alignment": 0.3,
                "lr": 1e-3,
                "decoder": 2.1,
                "postnet": 2.0,
                "stopnet": 0.06,
                "ga": 0.004,
                "coqui_align_error": 0.9,
            }  # fmt: skip
        )
        for i in range(1, lines + 1)
    ]
    form = MetricsFormat()
    with tempfile.TemporaryDirectory() as tmp, open_writer(Path(tmp) / "telemetry.db") as writer:
        writer.start_run("bench", {}, {})
        reporter = Reporter(GuardConfig(), run_id="bench", writer=writer, note=lambda _: None)
        began = time.process_time()
        for line in text:
            s = form.parse(line).step
            reporter.step(loss=s.loss, grad_norm=s.grad_norm, mel=s.mel, alignment=s.alignment, step=s.step)
        spent = time.process_time() - began
    return spent / lines


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def runner_argv(a: argparse.Namespace, config: str, out: str, timing: str, *, bare: bool) -> list[str]:
    return [
        sys.executable, "-I", str(RUNNER), "--config", config, "--out", out, "--seed", "0", "--tiny",
        "--train-data", str(a.corpus / "dataset_train"), "--val-data", str(a.corpus / "dataset_eval"),
        "--steps", str(a.steps), "--eval-every", str(a.steps), "--timing", timing, *(["--bare"] if bare else []),
    ]  # fmt: skip


def alone(a: argparse.Namespace, work: Path, env: dict[str, str], rep: int) -> Run:
    """Coqui alone: the runner's plumbing, no hook, no line."""
    config = ConfigTarget(base=CONFIG).write(work / "alone.json", {KEYS[k]: v for k, v in PARAMS.items()})
    timing = work / f"alone-{rep}.json"
    argv = runner_argv(a, str(config), str(work / "alone"), str(timing), bare=True)
    # A session of its own, as the search gives its trainer: with Linux's autogroup scheduling a session
    # is a CPU share of its own, and on a loaded machine the two would otherwise not get the same.
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, start_new_session=True)
    metric = next(json.loads(x)["metric"] for x in reversed(out.stdout.splitlines()) if '"metric"' in x)
    return from_timing(timing, 0.0, metric)  # no own code ran: own_share 0


def in_trial(a: argparse.Namespace, work: Path, env: dict[str, str], rep: int) -> Run:
    """The same training as a study's one trial: hooks, a line per step, the search guarding them."""
    space, runs = work / "space.toml", work / f"runs-{rep}"
    space.write_text(SPACE, encoding="utf-8")
    command = shlex.join(runner_argv(a, "{config}", "{run_dir}", "{run_dir}/timing.json", bare=False))
    search = [sys.executable, str(ROOT / "search.py"), "--study", "bench", "--space", str(space)]
    before = children_cpu()
    subprocess.run(
        [*search, "--runs-dir", str(runs), "--trials", "1", "--command", command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    both = children_cpu() - before  # the search and the trainer it started and waited for
    timing = runs / "bench" / "trials" / "trial-0" / "timing.json"
    trainer_cpu = json.loads(timing.read_text(encoding="utf-8"))["process_cpu"]
    db = sqlite3.connect(runs / "bench" / "telemetry.db")
    try:
        (metric,) = db.execute(
            "select value from evals where run_id = 'bench/trial-0' and metric = 'metric' order by step desc"
        ).fetchone()
    finally:
        db.close()
    return from_timing(timing, both - trainer_cpu, metric)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--corpus", type=Path, default=ROOT / "runs" / "coqui-corpus", help="dataset_train/, dataset_eval/"
    )
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--reps", type=int, default=2)
    a = p.parse_args()
    if not (a.corpus / "dataset_train" / "metadata.csv").is_file():
        print(f"error: no corpus at {a.corpus}: python -m tts_model.corpus --out {a.corpus} --utterances 200")
        return 2
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    runs: dict[str, list[Run]] = {"alone": [], "trial": []}
    with tempfile.TemporaryDirectory(prefix="bench-coqui-") as tmp:
        work = Path(tmp)
        for rep in range(a.reps):
            for kind in ("alone", "trial") if rep % 2 == 0 else ("trial", "alone"):
                r = alone(a, work, env, rep) if kind == "alone" else in_trial(a, work, env, rep)
                runs[kind].append(r)
                print(
                    f"rep {rep} {kind:5s}: {r.wall_rate:.3f} steps/s, trainer CPU {r.cpu_per_step * 1000:.0f} ms/step "
                    f"(steps 2-{a.steps}), runner's own code {r.own_share:.2%} of it; search process CPU "
                    f"{r.search_cpu:.1f} s; final val {r.metric:.5f} ({os.getloadavg()[0]:.1f} load)",
                    flush=True,
                )
    wall = {k: statistics.median(1 / r.wall_rate for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r.cpu_per_step for r in v) for k, v in runs.items()}
    search_cpu = statistics.median(r.search_cpu for r in runs["trial"])
    own = statistics.median(r.own_share for r in runs["trial"])
    per_line = search_per_line()
    print(
        f"median wall s/step: alone {wall['alone']:.3f} ({1 / wall['alone']:.3f} steps/s), in a trial "
        f"{wall['trial']:.3f} ({1 / wall['trial']:.3f} steps/s): ratio {wall['trial'] / wall['alone']:.3f}\n"
        f"median trainer CPU per step: alone {cpu['alone'] * 1000:.0f} ms, in a trial {cpu['trial'] * 1000:.0f} ms: "
        f"ratio {cpu['trial'] / cpu['alone']:.3f}\n"
        f"the search process: {search_cpu:.1f} CPU s per trial of {a.steps} steps, start-up included "
        f"({search_cpu / a.steps * 1000:.0f} ms per step at most)\n"
        f"the parts: the runner's own code (grad norm, attention measure, the line) {own:.2%} of a step; the "
        f"search per line (parse, guards, telemetry) {per_line * 1000:.2f} ms CPU = "
        f"{per_line / cpu['alone']:.2%} of a step's CPU alone"
    )
    metrics = {round(r.metric, 5) for v in runs.values() for r in v if math.isfinite(r.metric)}
    if len(metrics) != 1:
        print(f"the runs did not train the same: final val metrics {sorted(metrics)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
