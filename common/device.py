"""Which device a command trains on, and how it is said before any training starts."""

from __future__ import annotations

import torch

from common.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``--device auto|cpu|cuda`` as a torch device; ``cuda`` where none is visible is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible here; use --device cpu or auto")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """The device in words, said before any training ("cpu (2 threads)", "cuda:0 NVIDIA H200, 139.8 GiB"):
    `--device auto` picks one, and a 78M fp16 study silently on a CPU takes hours to show it."""
    if device.type != "cuda":
        threads = torch.get_num_threads()
        return f"{device.type} ({threads} thread{'' if threads == 1 else 's'})"
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return f"{device.type}:{index} {props.name}, {props.total_memory / 2**30:.1f} GiB"
