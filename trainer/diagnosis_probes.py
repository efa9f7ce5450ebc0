"""The replay's instruments: a hook on every module, each loss term on the host, and single-step probes.

Each reads values back on the host, the cost a healthy run never pays: they run only while
``trainer.diagnosis_replay`` replays a diverged run's last steps, and at the weights just before its
divergent step.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from trainer.config import TrainConfig
from trainer.diagnosis import ModuleEvent, TermValues
from trainer.guards import StepHistory
from trainer.results import StepMetrics

if TYPE_CHECKING:
    from trainer.diagnosis_replay import _Replay

_ALIGN_WORDS = {"kl": "KL", "guided": "guided", "prior": "forward-sum"}


class Watch:
    """A forward hook on every module: during a watched forward, the first module (innermost first, as
    hooks fire on completion) whose output turned NaN or Inf from inputs without NaN or +Inf, and whether
    every output stayed finite. Reads values back on every module: a replay's cost, never a run's."""

    def __init__(self, model: nn.Module) -> None:
        self.on = False
        self.step = 0
        self.first: ModuleEvent | None = None
        self.all_finite = True
        self._handles = [
            module.register_forward_hook(self._hook(name), with_kwargs=True)
            for name, module in model.named_modules()
            if name
        ]

    def start(self, step: int) -> None:
        self.on, self.step, self.all_finite = True, step, True

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            if not self.on:
                return
            outs = list(_floats(output))
            if not outs or all(bool(torch.isfinite(o).all()) for o in outs):
                return
            self.all_finite = False
            if self.first is not None:
                return
            ins = list(_floats(args)) + list(_floats(kwargs))
            if all(not bool((torch.isnan(x) | torch.isposinf(x)).any()) for x in ins):
                peaks = [float(o.detach().abs().float().max()) for o in outs]
                peak = next((v for v in peaks if not math.isfinite(v)), max(peaks))  # inf / NaN as found
                self.first = ModuleEvent(module=name, step=self.step, peak=peak)

        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def _floats(x: object) -> Iterator[Tensor]:
    """The floating-point tensors in a module's inputs or output (tensors, tuples, lists, dicts, records)."""
    if isinstance(x, Tensor):
        if x.is_floating_point():
            yield x.detach()
    elif isinstance(x, tuple | list):
        for y in x:
            yield from _floats(y)
    elif isinstance(x, Mapping):
        for y in x.values():
            yield from _floats(y)
    elif dataclasses.is_dataclass(x) and not isinstance(x, type):
        for f in dataclasses.fields(x):
            yield from _floats(getattr(x, f.name))


class Probes:
    """Single steps at the weights before the divergent step, each from the same restored state."""

    def __init__(self, replay: _Replay, snap: tuple[dict, Tensor, StepHistory]) -> None:
        self.replay, self.snap = replay, snap

    def finite(self, indices: list[int], *, cfg: TrainConfig | None = None) -> bool:
        """The step on these items: finite loss and gradient norm."""
        replay = self.replay
        pos, mean, _ = replay.restore(self.snap)
        scaler = replay.parts.scaler
        if cfg is not None and cfg.precision == "fp32" and scaler.is_enabled():
            replay.parts = dataclasses.replace(
                replay.parts, scaler=torch.amp.GradScaler(replay.device.type, enabled=False)
            )
        try:
            m, _ = replay.step(pos.step + 1, replay.batch(indices), replay.lr(pos.step + 1, pos), mean, cfg)
        finally:
            replay.parts = dataclasses.replace(replay.parts, scaler=scaler)
        return math.isfinite(m.loss) and math.isfinite(m.grad_norm)

    def other_batches(self, n: int) -> list[bool]:
        """The next ``n`` batches of the run's order after the divergent one, each at the same weights."""
        replay = self.replay
        pos = replay.parts.restore(copy.deepcopy(self.snap[0]))
        replay.indices(pos)  # the divergent batch itself
        found = []
        for _ in range(min(n, len(replay.stream) - 1)):
            found.append(self.finite(replay.indices(pos)))
        return found


def term_values(log: list[StepMetrics], cfg: TrainConfig) -> tuple[TermValues, ...]:
    """Each unweighted loss term at the last replayed step and the step before it."""
    if not log:
        return ()
    at, prev = log[-1], (log[-2] if len(log) > 1 else None)
    align = f"align ({_ALIGN_WORDS.get(cfg.alignment_loss, cfg.alignment_loss)})"
    names = (("mel", "mel"), (align, "kl"), ("stop", "stop"))
    return tuple(
        TermValues(name=name, before=math.nan if prev is None else getattr(prev, key), at=getattr(at, key))
        for name, key in names
    )


def bad_features(mel: Tensor) -> str | None:
    """What is wrong with an item's (T, n_mels) features, in words; None when nothing is."""
    bad = int((~torch.isfinite(mel)).sum())
    if bad:
        return f"{bad} of {mel.numel()} feature values are NaN or Inf"
    if mel.numel() and float(mel.max() - mel.min()) == 0.0:
        return f"every feature value is {float(mel.flatten()[0]):.4g} (a silent or all-zero clip)"
    return None
