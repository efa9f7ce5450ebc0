"""A stand-in for a user's own trainer: a training run in pure Python that prints a metrics line per step.

Its loss falls like a real run's and its validation metric is best near lr 3e-3; with ``--diverge-above
LR`` a run whose lr is above that explodes at ``--diverge-at`` (its gradient norm jumps 1000x, its loss
goes NaN a step later), the known step the tests check the guards against. ``--trace FILE`` records its
pid, a helper's pid (``--helper``: a child process that sleeps, as a DataLoader worker would) and every
step it printed, so a test can tell how far it got after the search said stop, and whether anything
it started is still alive. ``--config FILE`` reads lr and warmup from a JSON config instead (the keys
``optim.lr`` and ``schedule.warmup``), as a trainer driven by its config file would.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--config", default=None)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--diverge-above", type=float, default=None)
    p.add_argument("--diverge-at", type=int, default=30)
    p.add_argument("--crash-at", type=int, default=None, help="raise at this step (exit code 1)")
    p.add_argument("--sleep", type=float, default=0.01)
    p.add_argument("--format", choices=("json", "log"), default="json")
    p.add_argument("--trace", default=None)
    p.add_argument("--helper", action="store_true")
    p.add_argument("--ignore-term", action="store_true")
    args = p.parse_args()
    if args.config is not None:
        with open(args.config, encoding="utf-8") as fh:
            config = json.load(fh)
        args.lr, args.warmup = config["optim"]["lr"], config["schedule"]["warmup"]
    if args.lr is None:
        p.error("--lr or --config is required")

    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    trace = os.open(args.trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND) if args.trace else None

    def note(text: str) -> None:
        if trace is not None:
            os.write(trace, f"{text}\n".encode())

    note(f"pid {os.getpid()}")
    if args.helper:
        helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        note(f"helper {helper.pid}")
    rng = random.Random(round(args.lr * 1e9))
    print(f"training with lr {args.lr} clip {args.grad_clip} warmup {args.warmup}", flush=True)
    diverges = args.diverge_above is not None and args.lr > args.diverge_above
    floor = 1.0 + 0.5 * math.log10(args.lr / 3e-3) ** 2
    for step in range(1, args.steps + 1):
        if args.crash_at == step:
            raise RuntimeError(f"CUDA error: an illegal memory access was encountered (step {step})")
        loss = floor + 2.0 * math.exp(-step / 15) + rng.gauss(0, 0.01)
        grad_norm = 1.0 + rng.gauss(0, 0.05)
        if diverges and step == args.diverge_at:
            grad_norm, loss = 1000.0 * grad_norm, 10 * loss
        elif diverges and step > args.diverge_at:
            grad_norm, loss = math.inf, math.nan
        if args.format == "json":
            print(json.dumps({"step": step, "loss": loss, "grad_norm": grad_norm}))
        else:
            print(f"| step {step:5d} | loss {loss:.5f} | grad {grad_norm:.4f} | lr {args.lr:.2e} |")
        if step % args.eval_every == 0:
            metric = floor + 2.0 * math.exp(-step / 15) + 0.05
            if args.format == "json":
                print(json.dumps({"step": step, "metric": metric}))
            else:
                print(f"EVAL step={step} val_loss={metric:.5f}")
        sys.stdout.flush()
        note(f"step {step}")
        time.sleep(args.sleep)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
