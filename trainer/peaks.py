"""The largest values a training step's forward pass makes, per step, for its fp16 headroom.

Under fp16 autocast the tensors held in fp16 are the outputs of the model's Linear and Conv1d layers
and the explicit cross-attention scores q.k^T (``tts_model.model.Scores``); everything else either stays
fp32 (LayerNorm, softmax, the losses; a post-norm residual sum adds an fp16 sublayer output to an fp32
LayerNorm output, so it is fp32) or, like SDPA's self-attention scores, is held in fp32 inside the
kernel (SDPA under CPU fp16 autocast returns finite outputs from logits far past 65,504, where a plain
fp16 q.k^T is Inf). So two figures say when an fp16 run would overflow: ``attn_logit`` (the
cross-attention scores) and ``activation`` (every Linear and Conv1d output). On the tiny model the
largest of all are the first decoder layer's self-attention q and k/v projections (their input, the
decoder prenet's projection, is the one activation no LayerNorm bounds), then that projection and the
cross-attention scores; the largest residual sum is fp32 (figures: docs/measurements.md).

Forward hooks, registered once per run, take a max over each tensor on the device and keep it as a
0-dim tensor; nothing is read back here (``trainer/step.py`` reads the two maxima with the step's other
numbers, in its one host sync). They record only inside ``watch()``: evals and decodes are not counted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from tts_model.model import Scores


class PeakMeter:
    """Hooks on a model's fp16-held tensors; ``read()`` gives this forward pass's two maxima."""

    def __init__(self, model: nn.Module) -> None:
        # per kind, each hooked output's (min, max): max |x| = max(max x, -min x), folded in read()
        self._logits: list[tuple[Tensor, Tensor]] = []
        self._activations: list[tuple[Tensor, Tensor]] = []
        self._on = False
        self._handles = []
        for module in model.modules():
            if isinstance(module, Scores):
                self._handles.append(module.register_forward_hook(self._keep(self._logits)))
            elif isinstance(module, nn.Linear | nn.Conv1d):
                self._handles.append(module.register_forward_hook(self._keep(self._activations)))

    def _keep(self, into: list[tuple[Tensor, Tensor]]):
        def hook(module: nn.Module, inputs: object, output: Tensor) -> None:
            if self._on:
                # One pass, one kernel a tensor: on a CPU aminmax is faster than vector_norm(x, inf) and
                # x.abs().amax() (figures: docs/measurements.md). NaN and Inf come through as they are.
                into.append(torch.aminmax(output.detach()))

        return hook

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        self._logits.clear()
        self._activations.clear()
        self._on = True
        try:
            yield
        finally:
            self._on = False

    def read(self, empty: Tensor) -> tuple[Tensor, Tensor]:
        """(largest |cross-attention score|, largest |activation|) of the last watched pass, as 0-dim
        float32 tensors on the device; ``empty`` (NaN: not measured) for a kind the model has none of."""
        return _max(self._logits, empty), _max(self._activations, empty)

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def _max(ranges: list[tuple[Tensor, Tensor]], empty: Tensor) -> Tensor:
    if not ranges:
        return empty
    lows = torch.stack([low for low, _ in ranges])  # mixed fp16 / fp32 promote to fp32
    highs = torch.stack([high for _, high in ranges])
    return torch.maximum(highs.amax(), -lows.amin()).float()
