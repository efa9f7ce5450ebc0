"""Does a fp32 run's fp16 headroom predict where the same recipe in fp16 goes non-finite? Both, for real.

Trains one recipe twice on this machine, the tiny model, same seed and batches: in fp32 (recording the
per-step maxima the trainer keeps, ``trainer/peaks.py``) and in fp16 (CPU autocast, emulated and ~9x
slower, with a GradScaler, as a study's fp16 trials train). Only the non-finite guard stops either run:
the question is where fp16 overflows, not where another guard would have stopped it. Then it prints
where the fp32 run's headroom reached 0 (a recorded max past 65,504) and where its trend said it would,
as seen at each step before (``trainer.headroom.trend_crossing`` on the steps so far, warmup included:
the trainer's own warning leaves the warmup out), against the fp16 run's first non-finite step; and
draws both runs' headroom against step into one PNG.

    python bench/fp16_check.py --preset basic --lr 0.1 --warmup 0 --steps 200 --png docs/fp16_check.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import apply_overrides  # noqa: E402
from trainer.data import load_train_data  # noqa: E402
from trainer.headroom import TENSORS, headroom, trend_crossing  # noqa: E402
from trainer.hooks import RunHooks  # noqa: E402
from trainer.loop import train  # noqa: E402
from trainer.presets import PRESETS, preset  # noqa: E402
from tts_model.dataset import DataConfig  # noqa: E402

NEVER = 10**9  # guard minimums past any run here: only the non-finite guard judges


def run(cfg, data, precision: str, db: Path) -> tuple[list, object]:
    steps: list = []
    cfg = apply_overrides(cfg, {"precision": precision}, where=precision)
    hooks = RunHooks(on_step=steps.append, telemetry=db, run_id=precision)
    result = train(cfg, data, device=torch.device("cpu"), hooks=hooks)
    return steps, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--preset", choices=sorted(PRESETS), default="basic", help="the knobs besides lr and warmup"
    )
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precisions", default="fp32,fp16", help="fp32 alone to look for a recipe first")
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None, help="both runs' per-step maxima")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_train_data(None, None, DataConfig())
    guards = {
        f: NEVER
        for f in ("explosion_min_steps", "spike_min_steps", "ceiling_min_steps", "collapse_min_steps")
    }
    overrides = {
        "model_size": "tiny",
        "batch_size": args.batch_size,
        "max_steps": args.steps,
        "eval_every": 10**6,
        "lr": args.lr,
        "warmup_steps": args.warmup,
        "guards": guards,
    }
    cfg = apply_overrides(preset(args.preset), overrides, where="fp16 check")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precisions.split(","):
            steps, result = run(cfg, data, precision, Path(tmp) / "t.db")
            runs[precision] = steps
            v = result.verdict
            print(
                f"{precision}: {result.steps} steps; "
                + (f"{v.kind} at step {v.step}: {v.detail}" if v else "no guard fired")
                + f"; GradScaler skips {result.summary.scaler_skips}"
            )
    fp32 = runs.get("fp32", [])
    at = [m.step for m in fp32]
    for metric, name in TENSORS.items():
        peaks = [getattr(m, metric) for m in fp32]
        reached = next((s for s, p in zip(at, peaks, strict=True) if math.isfinite(p) and p > 65504), None)
        print(
            f"fp32 {name}: headroom first {headroom(peaks[0]):.2f}, last {headroom(peaks[-1]):.2f}; past 65,504 at step {reached}"
        )
        # What the trend said at each step, from the steps before it only.
        said = []
        for k in range(10, len(at) + 1):
            hit = trend_crossing(at[:k], peaks[:k], horizon=args.steps)
            said.append((at[k - 1], None if hit is None else hit[0]))
        first = next(((k, s) for k, s in said if s is not None), None)
        print(
            f"  trend first said it crosses 0 at step {first[1] if first else None} (seen at step {first[0] if first else None})"
        )
        for k, s in said[:: max(1, len(said) // 12)]:
            print(f"  at step {k}: crossing {s}")
    if "fp16" in runs:
        bad = next((m.step for m in runs["fp16"] if not math.isfinite(m.loss)), None)
        print(f"fp16: first non-finite loss at step {bad}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    p: [[m.step, m.attn_logit_max, m.activation_max, m.loss] for m in s]
                    for p, s in runs.items()
                }
            )
        )
    if args.png is not None:
        plot(runs, args, args.png)
    return 0


def plot(runs: dict, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.8))
    styles = {"fp32": "-", "fp16": "--"}
    colours = {"attn_logit_max": "tab:blue", "activation_max": "tab:orange"}
    for precision, steps in runs.items():
        for metric, name in TENSORS.items():
            pts = [(m.step, headroom(getattr(m, metric))) for m in steps]
            pts = [(s, h) for s, h in pts if math.isfinite(h)]
            ax.plot(
                [s for s, _ in pts],
                [h for _, h in pts],
                styles.get(precision, ":"),
                color=colours[metric],
                label=f"{precision}: {name}",
            )
    fp32 = runs.get("fp32", [])
    over = next(
        (m.step for m in fp32 if math.isfinite(m.activation_max) and headroom(m.activation_max) <= 0), None
    )
    over = min(
        (s for s in (over, next((m.step for m in fp32 if headroom(m.attn_logit_max) <= 0), None)) if s),
        default=None,
    )
    if over is not None:
        ax.axvline(over, color="black", linestyle=":", label=f"fp32 headroom first at 0 (step {over})")
    if "fp16" in runs:
        bad = next((m.step for m in runs["fp16"] if not math.isfinite(m.loss)), None)
        if bad is not None:
            ax.axvline(bad, color="red", linestyle=":", label=f"fp16 loss non-finite (step {bad})")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("fp16 headroom, log2(65504 / max |x|)")
    ax.set_title(f"{args.preset} knobs, lr {args.lr:g}, warmup {args.warmup}: fp32 vs fp16")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    raise SystemExit(main())
