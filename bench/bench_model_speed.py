"""Training speed of a model size: steps/s of forward + losses + backward + AdamW step, fp32.

The target is `tiny` >= 5 steps/s at batch 16 on a 2-core CPU with realistic lengths: texts of 40-80
symbols, mels of 90-430 frames (1-5 s at hop 256, typically ~200), batched by length as the trainer does.

    python bench/bench_model_speed.py                    # random tensors, 3 repeats, median
    python bench/bench_model_speed.py --corpus           # the embedded eSpeak corpus (built on first use)
    python bench/bench_model_speed.py --data DIR         # an LJSpeech-style folder
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tts_model.config import model_config  # noqa: E402
from tts_model.losses import alignment_kl, masked_mel_loss, stop_loss  # noqa: E402
from tts_model.model import TransformerTTS, count_parameters  # noqa: E402

N_SYMBOLS, N_MELS = 80, 80


def synthetic_lengths(n: int, seed: int) -> list[tuple[int, int]]:
    """(text, mel) lengths: mel ~ lognormal around 200 frames clipped to [90, 430], text grows with it."""
    rng = np.random.default_rng(seed)
    mel = np.clip(rng.lognormal(np.log(200), 0.35, size=n), 90, 430).astype(int)
    text = np.clip(40 + (mel - 90) * 40 / 340 + rng.normal(0, 4, size=n), 40, 80).astype(int)
    return list(zip(text.tolist(), mel.tolist(), strict=True))


def synthetic_batches(batch_size: int, n_batches: int, r: int, seed: int) -> list[tuple[torch.Tensor, ...]]:
    lengths = sorted(synthetic_lengths(batch_size * n_batches, seed), key=lambda tm: tm[1])  # bucketed
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(lengths), batch_size):
        chunk = lengths[i : i + batch_size]
        tl = torch.tensor([t for t, _ in chunk])
        ml = torch.tensor([m for _, m in chunk])
        t_max = -(-int(ml.max()) // r) * r
        text = torch.randint(2, N_SYMBOLS, (len(chunk), int(tl.max())), generator=g)
        text[torch.arange(text.shape[1])[None, :] >= tl[:, None]] = 0
        mel = torch.randn(len(chunk), t_max, N_MELS, generator=g) - 5.0
        stop = (torch.arange(t_max)[None, :] >= (ml - 1)[:, None]).float()
        out.append((text, tl, mel, ml, stop))
    return [out[i] for i in np.random.default_rng(seed).permutation(len(out))]  # mixed lengths over time


def real_batches(folder: Path, batch_size: int, r: int) -> list[tuple[torch.Tensor, ...]]:
    from tts_model.batching import BucketBatchSampler, collate
    from tts_model.dataset import DataConfig, load_dataset

    data = load_dataset(folder, DataConfig())
    sampler = BucketBatchSampler(data.mel_lengths, batch_size, seed=0)
    out = []
    for idx in sampler.batches(0):
        b = collate([data[i] for i in idx], r)
        out.append((b.text, b.text_lengths, b.mel, b.mel_lengths, b.stop_target))
    return out


def time_steps(model: TransformerTTS, batches: list, steps: int, warmup: int) -> tuple[float, float]:
    """(steps/s of wall time, CPU seconds per step over all threads). With more runnable threads than
    cores (other jobs), torch's 2-thread kernels slow down far more than the CPU time per step does."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    r = model.r
    start = cpu_start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            start, cpu_start = time.perf_counter(), time.process_time()
        text, tl, mel, ml, stop = batches[i % len(batches)]
        out = model(text, tl, mel, ml)
        dec_lengths = -(-ml // r)
        loss = (
            masked_mel_loss(out.mel_before, mel, ml)
            + masked_mel_loss(out.mel_after, mel, ml)
            + stop_loss(out.stop_logits, stop, ml)
            + 0.5 * alignment_kl(out.attention, tl, dec_lengths)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return steps / (time.perf_counter() - start), (time.process_time() - cpu_start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--norm", default="post", choices=("post", "pre"))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40, help="timed steps (40 = each of 20 batches twice)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, help="LJSpeech-style folder instead of random tensors")
    source.add_argument("--corpus", action="store_true", help="the embedded corpus (built on first use)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    cfg = model_config(args.size, norm=args.norm)
    model = TransformerTTS(cfg, N_SYMBOLS, N_MELS).train()
    if args.corpus:
        from tts_model.corpus import ensure_corpus

        args.data = ensure_corpus().train
    if args.data is not None:
        batches = real_batches(args.data, args.batch_size, cfg.reduction_factor)
        source_name = str(args.data)
    else:
        batches = synthetic_batches(args.batch_size, 20, cfg.reduction_factor, seed=0)
        source_name = "random tensors"
    frames = statistics.mean(int(b[3].float().mean()) for b in batches)
    print(
        f"size={args.size} norm={args.norm} params={count_parameters(model):,} batch={args.batch_size} "
        f"threads={torch.get_num_threads()} data={source_name} ({len(batches)} batches, mean {frames:.0f} frames)"
    )
    rates = []
    for k in range(args.repeats):
        rate, cpu = time_steps(model, batches, args.steps, args.warmup)
        rates.append(rate)
        print(f"  run {k + 1}: {rate:.2f} steps/s ({cpu * 1e3:.0f} ms CPU per step)")
    print(f"median: {statistics.median(rates):.2f} steps/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
