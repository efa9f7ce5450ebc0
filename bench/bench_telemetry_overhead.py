"""What the trainer's bookkeeping costs: trainer.loop.train vs a bare PyTorch loop, side by side.

Both train the same tiny model on the same batches (same seed, same bucketed order) for N steps; the
trainer adds guards, step metrics (the fp16 peaks among them: forward hooks on every Linear / Conv1d and
the cross-attention scores, trainer/peaks.py), SQLite telemetry and callbacks. They alternate A B A B so machine
drift hits both, and the ratio of median step times is printed. Target: within 5% (ratio <= 1.05).

    python bench/bench_telemetry_overhead.py [--steps 60] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import apply_overrides  # noqa: E402
from trainer.data import BatchStream, load_train_data  # noqa: E402
from trainer.hooks import RunHooks  # noqa: E402
from trainer.loop import build_model, train  # noqa: E402
from trainer.loss_terms import compute_losses  # noqa: E402
from trainer.presets import preset  # noqa: E402
from tts_model.dataset import DataConfig  # noqa: E402


def trainer_step_times(cfg, data, steps: int, db: Path) -> list[float]:
    stamps: list[float] = []
    hooks = RunHooks(
        on_step=lambda m: stamps.append(time.perf_counter()), telemetry=db, run_id=f"bench-{time.time()}"
    )
    train(cfg, data, device=torch.device("cpu"), hooks=hooks)
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def bare_step_times(cfg, data, steps: int) -> list[float]:
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data)
    r = model.cfg.reduction_factor
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    stream = BatchStream(data.train, batch_size=cfg.batch_size, seed=cfg.seed, reduction_factor=r)

    class Pos:
        epoch = 0
        batch_index = 0

    pos = Pos()
    model.train()
    stamps = []
    for _ in range(steps):
        batch = stream.next_batch(pos)
        out = model(batch.text, batch.text_lengths, batch.mel, batch.mel_lengths)
        terms = compute_losses(out, batch, cfg, mel_weight=cfg.mel_weight, reduction_factor=r)
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_train_data(None, None, DataConfig())
    overrides = {"model_size": "tiny", "batch_size": 16, "max_steps": args.steps, "eval_every": 10**6}
    cfg = apply_overrides(preset("basic"), {**overrides, "lr": 1e-3, "warmup_steps": 10}, where="bench")
    ratios, trainer_med, bare_med = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            t = statistics.median(trainer_step_times(cfg, data, args.steps, Path(tmp) / "t.db"))
            b = statistics.median(bare_step_times(cfg, data, args.steps))
            trainer_med.append(t)
            bare_med.append(b)
            ratios.append(t / b)
            print(
                f"round {i + 1}: trainer {1000 * t:.1f} ms/step, bare {1000 * b:.1f} ms/step, ratio {t / b:.3f}"
            )
    print(
        f"median step: trainer {1000 * statistics.median(trainer_med):.1f} ms, bare "
        f"{1000 * statistics.median(bare_med):.1f} ms; ratio trainer/bare median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}); target <= 1.05"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
