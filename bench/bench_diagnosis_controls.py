"""The diagnosis's positive controls: a known fault injected into the real trainer, and what it is named.

Each control is a short real run of the tiny model on a small eSpeak corpus (24 training utterances,
built once under --work): (a) lr far above the edge, (b) fp16 with the seed's attention mask applied
twice, (c) a NaN clip in a copy of the corpus that the loader lets through, (d) the forward-sum loss
without zero_infinity on a clip cut shorter than its text, and a run with no fault. The diagnosis must
name the injected cause (and its module, item or term), and none for the run without a fault. Prints:
control, diverged at step, cause named, right?, and what the run and its replay cost.

    python bench/bench_diagnosis_controls.py [--threads 1] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console = Console(width=160)
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


if __name__ == "__main__":
    sys.exit(main())
