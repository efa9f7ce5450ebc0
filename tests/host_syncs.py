"""Count the places a training step would make the host wait for a GPU, on a CPU.

torch's own sync debug mode (`torch.cuda.set_sync_debug_mode`) needs CUDA, so the calls that force a
device-to-host read are counted instead: `Tensor.item`, `tolist`, `float()`, `int()`, `bool()`, an index
from a tensor, `.numpy()`, `.cpu()`, and `torch.tensor(..., device=...)` (a blocking host-to-device copy).
Calls from inside `torch.optim` are left out: the non-fused optimizers read their step counter, a CPU
tensor even on a GPU, and the fused CUDA kernel the trainer uses there reads nothing.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import torch

_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "numpy", "cpu")
_OPTIM = os.path.join("torch", "optim", "")


@contextlib.contextmanager
def counting_host_syncs() -> Iterator[list[str]]:
    """Within the block, every counted call is appended as "what at file:line" to the yielded list."""
    calls: list[str] = []

    def counted(name: str, original):
        def call(*args, **kwargs):
            frame = sys._getframe(1)
            where = frame.f_code.co_filename
            if _OPTIM not in where and (name != "torch.tensor" or kwargs.get("device") is not None):
                calls.append(f"{name} at {where}:{frame.f_lineno}")
            return original(*args, **kwargs)

        return call

    patched = {name: torch.Tensor.__dict__.get(name) for name in _READS}
    real_tensor = torch.tensor
    for name in _READS:
        setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    torch.tensor = counted("torch.tensor", real_tensor)
    try:
        yield calls
    finally:
        torch.tensor = real_tensor
        for name, own in patched.items():
            if own is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, own)
