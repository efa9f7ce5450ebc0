"""The diagnosis's positive controls: a known fault injected into the real trainer, and what it is named.

Each control is a short real run of the tiny model on a small eSpeak corpus (24 training utterances,
built once under --work): (a) lr far above the edge, (b) fp16 with the seed's attention mask applied
twice, (c) a NaN clip in a copy of the corpus that the loader lets through, (d) the forward-sum loss
without zero_infinity on a clip cut shorter than its text, and a run with no fault. The diagnosis must
name the injected cause (and its module, item or term), and none for the run without a fault. Prints:
control, diverged at step, cause named, right?, and what the run and its replay cost.

With ``--study-run M``, instead: what the replay costs on a study's run, ``stability-quick``'s ``basic``
recipe at M times its lr on the embedded corpus, trained and diagnosed as a trial is (``run_config``).

    python bench/bench_diagnosis_controls.py [--threads 1] [--work DIR] [--study-run 4096]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.data import load_train_data  # noqa: E402
from trainer.diagnosis_controls import CONTROLS, run_control  # noqa: E402
from tts_model.corpus import CorpusSpec, ensure_corpus  # noqa: E402
from tts_model.dataset import DataConfig  # noqa: E402

SMALL = CorpusSpec(train_utterances=24, eval_utterances=8, seed=0, min_seconds=1.0, max_seconds=3.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--work", type=Path, default=None, help="where the corpus and its copies go (default: a temp dir)"
    )
    ap.add_argument("--study-run", type=float, default=None, metavar="M", help="time one study run at M x lr")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console = Console(width=160)
    if args.study_run is not None:
        return study_run(args.study_run, console)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        paths = ensure_corpus(SMALL, work / "corpus", console=console)
        data = load_train_data(paths.train, paths.eval, DataConfig())
        table = Table(title="diagnosis positive controls (tiny model, CPU)")
        for col in ("control", "diverged at step", "cause named", "right?", "run s", "replay s"):
            table.add_column(col)
        wrong = 0
        for name in CONTROLS:
            r = run_control(name, data, work / "controls")
            table.add_row(*r.row(), f"{r.train_s:.1f}", f"{r.replay_s:.1f}")
            wrong += not r.right
            if r.diagnosis is not None:
                console.print(f"{name}: {r.diagnosis.line()}", soft_wrap=True)
        console.print(table)
    return 1 if wrong else 0


def study_run(multiplier: float, console: Console) -> int:
    """One run of stability-quick's basic recipe at ``multiplier`` x its lr, through ``run_config``."""
    from studies.binding import recipe_config
    from studies.execution.runs import RunSetup, load_data, run_config
    from studies.paths import StudyPaths
    from studies.registry import get_study
    from trainer.config import with_overrides
    from trainer.loop import RunPlan

    study = get_study("stability-quick")
    params = study.space.preset_params(study.preset_values()["basic"])
    steps = int(params[study.space.warmup_param]) + study.horizon
    cfg = recipe_config(study, params, seed=0, steps=steps, where="bench")
    cfg = with_overrides(cfg, lr=cfg.lr * multiplier)
    data = load_data(None, None)
    with tempfile.TemporaryDirectory() as tmp:
        setup = RunSetup(study, data, torch.device("cpu"), StudyPaths(Path(tmp), study.name), 0)
        t0 = time.perf_counter()
        run = run_config(
            setup, cfg, f"{study.name}/bench", plan=RunPlan(decode_sentences=0), with_diagnosis=True
        )
        total = time.perf_counter() - t0
    d = run.verdict.diagnosis
    console.print(
        f"basic x{multiplier:g}: lr {cfg.lr:.3g}, {run.verdict.outcome} after {run.result.steps} steps"
    )
    if d is None:
        console.print(f"no divergence, no replay: {total:.1f} s")
        return 0
    console.print(f"run {total - d.replay_s:.1f} s, replay {d.replay_s:.1f} s; {d.line()}", soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
