"""How fast `search.py` answers when it has nothing to train: --help and the one-line refusals.

A user who mistypes a flag should hear so at once, not after torch and optuna load. Each command runs
5 times as a whole process (the median is quoted); with ``--against DIR`` the same commands run from
another checkout (an older commit: ``git worktree add /tmp/old <commit>``), side by side, one after
the other, so the ratio holds however noisy the machine is that minute.

    python bench/bench_cli_start.py [--against /tmp/old] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOWHERE = Path(tempfile.gettempdir()) / "bench-cli-nowhere"
COMMANDS = {
    "--help": ["--help"],
    "unknown study": ["--study", "stabilty"],
    "--trials 0": ["--study", "stability-quick", "--trials", "0"],
    "missing data folder": ["--study", "stability-quick", "--train-data", "/nope", "--val-data", "/nope"],
    "GPU study, no GPU": ["--study", "stability"],
    "report of no study": ["--study", "stability-quick", "--report", "--runs-dir", str(NOWHERE)],
    "missing space file": ["--space", "/nope.toml"],
}


def median_seconds(checkout: Path, argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, str(checkout / "search.py"), *argv], cwd=checkout, capture_output=True
        )
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", type=Path, default=None, help="another checkout to time side by side")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    head = f"{'command':<22} {'this (s)':>9}" + (f" {'against (s)':>12} {'ratio':>6}" if args.against else "")
    print(head)
    for name, argv in COMMANDS.items():
        now = median_seconds(ROOT, argv, args.runs)
        line = f"{name:<22} {now:>9.2f}"
        if args.against is not None:
            then = median_seconds(args.against, argv, args.runs)
            line += f" {then:>12.2f} {now / then:>6.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
