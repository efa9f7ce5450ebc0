"""Step checkpoints that survive crashes: atomic writes, a checksum beside each file, last K plus best.

Layout of a checkpoint directory:
    step_00001000.pt    torch.save of the loop's state dict (plain tensors, numbers, strings, containers)
    step_00001000.json  {"file", "step", "bytes", "sha256", "val_mel"}: written after the .pt, so a
                        .pt without its sidecar is an interrupted save
    best.pt / best.json the checkpoint with the lowest validation mel so far; never pruned
    replay/             the checkpoints a full training went on from after a heal or a resume, kept
                        until its divergences were diagnosed (a replay starts there); never pruned

Files hold only plain types, so they load with `torch.load(weights_only=True)`: a checkpoint from
elsewhere cannot run code. `save_checkpoint` checks that rule up front, so a bad state fails at the
first save, not at resume time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import shutil
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.errors import UserError
from tts_model.cache import atomic_write, atomic_write_text

BEST = "best"
REPLAY_DIR = "replay"  # copies of the checkpoints a diagnosis replay starts from, never pruned
_STEP_RE = re.compile(r"^step_(\d{8,})\.pt$")
_PLAIN = (int, float, str, bool, bytes, type(None), torch.dtype, torch.device)


class CheckpointError(UserError):
    """A checkpoint directory holds checkpoints, but none of them can be used."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def save_checkpoint(
    dir: Path, step: int, state: dict[str, Any], *, keep: int, val_mel: float | None = None
) -> Path:
    """Write `dir/step_XXXXXXXX.pt` atomically with its checksum, prune to the last `keep`, update best.

    `val_mel` is the validation mel loss measured at this step, if any; when it is lower than the
    best so far (kept in best.json, so it survives a resume) the new file becomes best.pt.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    _check_plain(state, "state")
    dir.mkdir(parents=True, exist_ok=True)
    path = dir / checkpoint_name(step)
    digest: dict[str, Any] = {}

    def write(tmp: Path) -> None:
        torch.save(state, tmp)
        digest.update(_digest(tmp))

    atomic_write(path, write)
    meta = {"file": path.name, "step": step, **digest, "val_mel": val_mel}
    atomic_write_text(_sidecar(path), json.dumps(meta, indent=1))
    if val_mel is not None and math.isfinite(val_mel) and val_mel < _best_val_mel(dir):
        _update_best(path, meta)
    _prune(dir, keep)
    return path


def load_latest(
    dir: Path, *, warn: Callable[[str], None], map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], Path] | None:
    """The newest checkpoint that passes its checksum and loads, or None when `dir` has none.

    Each newer checkpoint that fails is reported through `warn` (one line naming the file, the reason
    and the one used instead), never skipped silently. best.pt is the last resort, ordered by its step.
    Raises CheckpointError when checkpoints exist but every one of them is bad.
    """
    candidates = _candidates(dir)
    if not candidates:
        return None
    bad: list[tuple[Path, str]] = []
    for path in candidates:
        state, reason = _load(path, map_location)
        if state is not None:
            for bad_path, why in bad:
                warn(f"checkpoint {bad_path.name} is {why}; using {path.name}")
            return state, path
        bad.append((path, reason))
    newest, why = bad[0]
    raise CheckpointError(
        f"all {len(bad)} checkpoints in {dir} are unusable (newest, {newest.name}: {why}); "
        "delete the directory or run without --resume to start over"
    )


def copy_checkpoint(path: Path, dir: Path) -> Path:
    """Put checkpoint ``path`` and its checksum file in ``dir`` (a hard link where the file system allows
    it, else a copy), so a run can resume from it there and leave the original as it was."""
    dir.mkdir(parents=True, exist_ok=True)
    for src in (path, _sidecar(path)):
        dst = dir / src.name
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return dir / path.name


def keep_for_replay(path: Path, dir: Path, name: str) -> Path:
    """Checkpoint ``path`` and its checksum file kept as ``dir/replay/<name>.pt``, out of reach of the
    pruning of step files, until the diagnosis that may replay from it has run (``release_kept``). A
    hard link where the file system allows it (no copy of a large state), else a copy."""
    kept = dir / REPLAY_DIR / f"{name}.pt"
    kept.parent.mkdir(parents=True, exist_ok=True)
    for src, dst in ((path, kept), (_sidecar(path), _sidecar(kept))):
        dst.unlink(missing_ok=True)  # a copy left by an earlier process of the same run
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return kept


def release_kept(path: Path) -> None:
    """Remove a checkpoint ``keep_for_replay`` kept, and its folder once empty."""
    path.unlink(missing_ok=True)
    _sidecar(path).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # other copies are still kept there
        path.parent.rmdir()


def load_checkpoint(path: Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state in checkpoint ``path``, checked against its checksum; CheckpointError (one line saying
    why) when it is missing, truncated or cannot be loaded."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} is missing")
    state, reason = _load(path, map_location)
    if state is None:
        raise CheckpointError(f"checkpoint {path} is {reason}")
    return state


def rng_state() -> dict[str, Any]:
    """Every RNG a training step draws from, as plain types (numpy's key as a tensor)."""
    _, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": _to_lists(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured. CUDA states are restored only on a machine with the same
    number of GPUs; resuming a GPU run on CPU (or vice versa) cannot replay the same random stream."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    np_state = state["numpy"]
    key = np_state["key"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    random.setstate(_to_tuples(state["python"]))


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


def _check_plain(value: Any, where: str) -> None:
    """Reject anything `torch.load(weights_only=True)` would refuse, naming where it sits."""
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN:
        return
    if type(value) in (dict, OrderedDict):
        for k, v in value.items():
            if type(k) not in _PLAIN:
                raise TypeError(f"checkpoint {where} has a key of type {type(k).__name__}: use plain types")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if type(value) in (list, tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint {where} is a {type(value).__name__}: store tensors, numbers, strings, lists or dicts "
        "(e.g. float(x), dataclasses.asdict(x))"
    )


def _load(path: Path, map_location: str | torch.device) -> tuple[dict[str, Any] | None, str]:
    """(the state, "") when ``path`` passes its checksum and loads, else (None, why not)."""
    reason = _verify(path)
    if reason is not None:
        return None, reason
    try:
        return torch.load(path, map_location=map_location, weights_only=True), ""
    except Exception as exc:  # any unpickling failure means the file is unusable
        return None, f"cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"


def _digest(path: Path) -> dict[str, Any]:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _read_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(_sidecar(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and {"bytes", "sha256", "step"} <= meta.keys() else None


def _verify(path: Path) -> str | None:
    """Why `path` cannot be trusted, or None when its size and sha256 match its sidecar."""
    meta = _read_meta(path)
    if meta is None:
        return "incomplete (its checksum file is missing or unreadable; the save was interrupted)"
    size = path.stat().st_size
    if size != meta["bytes"]:
        return f"truncated or corrupt ({size} bytes, expected {meta['bytes']})"
    if _digest(path)["sha256"] != meta["sha256"]:
        return "truncated or corrupt (checksum mismatch)"
    return None


def _step_files(dir: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in dir.iterdir() if (m := _STEP_RE.match(p.name))]
    return sorted(found)


def _candidates(dir: Path) -> list[Path]:
    """Step checkpoints newest first; best.pt after every step file at or above its own step."""
    if not dir.is_dir():
        return []
    ranked = [(step, 1, p) for step, p in _step_files(dir)]
    best = dir / f"{BEST}.pt"
    if best.exists():
        meta = _read_meta(best)
        ranked.append((meta["step"] if meta else -1, 0, best))
    return [p for _, _, p in sorted(ranked, reverse=True)]


def _best_val_mel(dir: Path) -> float:
    meta = _read_meta(dir / f"{BEST}.pt")
    value = meta.get("val_mel") if meta else None
    return float(value) if isinstance(value, int | float) else float("inf")


def _update_best(path: Path, meta: dict[str, Any]) -> None:
    """best.pt is a hard link to the step file when the file system allows it (no copy of a large
    state), else a copy; either way it is put in place by rename, then its sidecar."""
    best = path.with_name(f"{BEST}.pt")

    def link(tmp: Path) -> None:
        tmp.unlink()
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)

    atomic_write(best, link)
    atomic_write_text(_sidecar(best), json.dumps(meta, indent=1))


def _prune(dir: Path, keep: int) -> None:
    for _, old in _step_files(dir)[:-keep]:
        old.unlink(missing_ok=True)
        _sidecar(old).unlink(missing_ok=True)
