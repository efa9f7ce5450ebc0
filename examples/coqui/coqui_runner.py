"""Coqui TTS's own Trainer on a Tacotron 2 recipe, as one trial of the stability search: it trains and
prints its numbers, one JSON line per step and one per eval, which the search reads as they arrive.

    python -I examples/coqui/coqui_runner.py --config CONFIG.json --train-data DIR --val-data DIR \\
        --out DIR --steps 100 --eval-every 20 [--seed 0] [--tiny]

Why a separate process: coqui-tts-trainer's top-level package is called ``trainer``, as is this
project's, and one process can import only one of them. So this file imports no module of the project,
and runs with ``-I`` (isolated: no script folder, no current folder, no PYTHONPATH on ``sys.path``) so
that ``import trainer`` finds Coqui's even when PYTHONPATH names the repository. The search applies the
guards to the lines (``--command``, studies/metrics_lines.py) and stops this process when one fires.

The recipe is the user's Coqui ``config.json`` (``TTS.config.load_config``): the search writes a copy
per trial with its params at their keys (lr, grad_clip, lr_scheduler_params.warmup_steps, ...). This file
changes only the plumbing of a trial (where it writes, no checkpoints, no figures or test synthesis, the
data folders, evals every ``--eval-every`` steps, the step budget), never the training itself.
``--tiny`` shrinks Tacotron 2's fixed widths (512 embedding, 1024 LSTMs, 512 postnet) so a CPU trains it.

A step line: ``{"step", "loss", "grad_norm", "mel", "alignment", "lr", "decoder", "postnet", "stopnet",
"ga", "coqui_align_error"}``:
- ``loss``: Coqui's total, weighted as it trains; ``decoder`` / ``postnet`` / ``stopnet`` / ``ga``: its
  parts, unweighted (Tacotron 2's mel losses are masked MSE on Coqui's normalised log mel);
- ``mel``: the postnet's unweighted mel loss (the model's output; the spike and ceiling guards read it);
- ``grad_norm``: the gradient norm before clipping, computed here: Coqui's own is 0 when grad_clip <= 0
  and replaces NaN by 0;
- ``alignment``: the share of attention mass near the diagonal (the project's measure,
  ``tts_model.losses.attention_diagonality``, copied below), so the guards' 0.3 "aligned" bar means
  the same as for the project's model; ``coqui_align_error`` is Coqui's own (1 - the mean, over the
  characters, of the largest weight any decoder step gave each).
An eval line: ``{"step", "metric", "alignment", ...}``: the postnet's unweighted mel loss on the
validation folder (lower is better), and the alignment over it.

Coqui never checks for NaN (Tacotron 2 trains on through it): the search's guards do.

Its parts sit beside it, one concern each, named ``coqui_*`` so that none can shadow a package of the
project's or Coqui's: coqui_input.py (the flags, the folders, which ``trainer`` loads), coqui_recipe.py
(the example config, the plumbing), coqui_tiny.py (``--tiny``), coqui_lines.py (the numbers and the
lines), coqui_train.py (the Trainer run). ``-I`` keeps this folder off ``sys.path``: this file puts it
back, first, before it imports them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the coqui_* siblings (``-I`` leaves it out)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: characters, no phonemizer
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from coqui_input import BadInput, check_args, import_coqui  # noqa: E402
from coqui_recipe import example_config  # noqa: E402
from coqui_train import train  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="coqui_runner.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, help="Coqui config.json (a Tacotron 2 recipe)")
    p.add_argument("--train-data", type=Path, help="LJSpeech-style folder: metadata.csv, wavs/")
    p.add_argument("--val-data", type=Path, help="LJSpeech-style folder for the evals")
    p.add_argument("--out", type=Path, help="where Coqui writes its run folder")
    p.add_argument("--steps", type=int, default=150, help="training steps of the trial")
    p.add_argument("--eval-every", type=int, default=30, help="an eval every N steps (and after the last)")
    p.add_argument("--seed", type=int, default=0, help="Coqui's training_seed")
    p.add_argument("--tiny", action="store_true", help="shrink Tacotron 2's widths (0.6M params, for a CPU)")
    p.add_argument(
        "--bare",
        action="store_true",
        help="Coqui alone: no hooks, no step lines (bench/bench_coqui_overhead.py)",
    )
    p.add_argument(
        "--timing",
        type=Path,
        default=None,
        metavar="FILE",
        help="write each step's end (wall and CPU seconds) and the process's CPU to FILE (JSON)",
    )
    p.add_argument(
        "--write-config",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the example recipe's config.json to FILE and exit",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        if a.write_config is None:
            check_args(a)  # before the imports: a typo is one line in a tenth of a second
        import_coqui()
        if a.write_config is not None:
            example_config().save_json(str(a.write_config))
            return 0
        began = time.monotonic()
        train(a)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    print(f"done: {a.steps} steps in {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
