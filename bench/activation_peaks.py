"""Which tensor overflows first under fp16? Every tensor the model makes, its largest |value| per step.

Trains one recipe in fp32 (the study's knobs, any lr) and records, per step, the largest absolute value
of every module's output, of every LayerNorm's input (the post-norm residual sum x + sublayer(x)) and
of the cross-attention scores q.k^T as the model materialises them (before the 1/sqrt(d) scale). It
prints the tensors that came nearest to fp16's 65,504 and how fast each grew, so the trainer's
per-step headroom (trainer/headroom.py) watches the tensors that overflow first, not a guess.
A measurement tool: it hooks every module and reads each max back, so it is slow; the trainer keeps
two figures, read once a step (bench/bench_telemetry_overhead.py measures what they cost).

    python bench/activation_peaks.py --lr 2e-2 --steps 300 [--clip 3.5 --mel-weight 0.74 ...] [--json F]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import apply_overrides  # noqa: E402
from trainer.data import load_train_data  # noqa: E402
from trainer.hooks import RunHooks  # noqa: E402
from trainer.loop import RunPlan, train  # noqa: E402
from trainer.presets import preset  # noqa: E402
from tts_model import model as model_module  # noqa: E402
from tts_model.dataset import DataConfig  # noqa: E402

FP16_MAX = 65504.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--clip", type=float, default=0.5)
    ap.add_argument("--mel-weight", type=float, default=1.0)
    ap.add_argument("--kl-weight", type=float, default=0.5)
    ap.add_argument("--warmup", type=int, default=90)
    ap.add_argument("--norm", choices=["post", "pre"], default="post")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", type=Path, default=None, help="write every tensor's per-step peaks here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_train_data(None, None, DataConfig())
    overrides = {
        "model_size": "tiny",
        "batch_size": 16,
        "max_steps": args.steps,
        "eval_every": 10**6,
        "lr": args.lr,
        "grad_clip": args.clip,
        "mel_weight": args.mel_weight,
        "kl_weight": args.kl_weight,
        "warmup_steps": args.warmup,
        "norm": args.norm,
    }
    cfg = apply_overrides(preset("basic"), overrides, where="activation peaks")
    peaks: dict[str, list[float]] = defaultdict(list)  # tensor -> its max |value| at each step
    current: dict[str, float] = {}

    def note(name: str, t: torch.Tensor) -> None:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
            v = float(t.detach().abs().amax())
            current[name] = max(current.get(name, 0.0), v)

    real_build = model_module.TransformerTTS.__init__

    def build(self, *a, **k):  # hook the model the trainer builds
        real_build(self, *a, **k)
        for name, mod in self.named_modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.register_forward_pre_hook(
                    lambda m, inp, n=name: note(f"{n} (input: residual sum)", inp[0])
                )
            if isinstance(mod, model_module.Attention):
                mod.register_forward_hook(lambda m, inp, out, n=name: note(n, out[0]))
            elif len(list(mod.children())) == 0:
                mod.register_forward_hook(lambda m, inp, out, n=name: note(n, out))

    real_forward = model_module.Attention.forward

    def attention(self, x, kv, *, key_mask, causal=False, weights=False):
        if weights and self.training:  # the scores the model materialises, before the 1/sqrt(d) scale
            q = self._split(self.q(x))
            k, _ = (self._split(t) for t in self.kv(kv).chunk(2, dim=-1))
            note("decoder cross-attention q.k^T (scores)", q @ k.transpose(-2, -1))
        return real_forward(self, x, kv, key_mask=key_mask, causal=causal, weights=weights)

    def on_step(metrics) -> None:
        for name, v in current.items():
            peaks[name].append(v)
        current.clear()

    model_module.TransformerTTS.__init__ = build
    model_module.Attention.forward = attention
    try:
        result = train(cfg, data, device=torch.device("cpu"), plan=RunPlan(), hooks=RunHooks(on_step=on_step))
    finally:
        model_module.TransformerTTS.__init__ = real_build
        model_module.Attention.forward = real_forward
    print(f"lr {args.lr:g}, clip {args.clip:g}, {result.steps} steps; verdict {result.verdict}")
    ranked = sorted(peaks.items(), key=lambda kv: -max(kv[1]))
    print(f"{'tensor':60s} {'step 1':>10s} {'max':>12s} {'at step':>8s} {'last':>12s} {'headroom':>8s}")
    for name, series in ranked[: args.top]:
        top = max(series)
        print(
            f"{name:60s} {series[0]:10.3g} {top:12.4g} {series.index(top) + 1:8d} {series[-1]:12.4g} "
            f"{math.log2(FP16_MAX / top) if top > 0 else math.inf:8.2f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(peaks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
