from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import UserError
from trainer.checkpoints import (
    CheckpointError,
    checkpoint_name,
    load_latest,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _state(step: int) -> dict:
    torch.manual_seed(step)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict(),
        "data": {"epoch": 1, "batch": 7},
        "config": {"lr": 1e-3, "precision": "fp32"},
        "rng": rng_state(),
    }


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _no_warn(msg: str) -> None:
    raise AssertionError(f"unexpected warning: {msg}")


def test_round_trip(tmp_path: Path) -> None:
    state = _state(1000)
    path = save_checkpoint(tmp_path, 1000, state, keep=3)
    assert path == tmp_path / "step_00001000.pt"
    loaded, used = load_latest(tmp_path, warn=_no_warn)
    assert used == path and loaded["step"] == 1000 and loaded["data"] == {"epoch": 1, "batch": 7}
    for k, v in state["model"].items():
        assert torch.equal(loaded["model"][k], v)
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert torch.equal(loaded["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])


def test_empty_or_missing_directory_gives_none(tmp_path: Path) -> None:
    assert load_latest(tmp_path / "nope", warn=_no_warn) is None
    assert load_latest(tmp_path, warn=_no_warn) is None


def test_rng_state_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    _seed_all(3)
    save_checkpoint(tmp_path, 1, {"rng": rng_state()}, keep=1)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    _seed_all(99)
    set_rng_state(load_latest(tmp_path, warn=_no_warn)[0]["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_keeps_last_k(tmp_path: Path) -> None:
    for step in range(1000, 6000, 1000):
        save_checkpoint(tmp_path, step, {"step": step}, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["step_00004000.json", "step_00004000.pt", "step_00005000.json", "step_00005000.pt"]


def test_best_is_kept_and_survives_pruning(tmp_path: Path) -> None:
    for step, val in [(1000, 5.0), (2000, 3.0), (3000, 4.0), (4000, None), (5000, 3.5)]:
        save_checkpoint(tmp_path, step, {"step": step}, keep=1, val_mel=val)
    assert not (tmp_path / checkpoint_name(2000)).exists()
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["step"] == 2000
    save_checkpoint(tmp_path, 6000, {"step": 6000}, keep=1, val_mel=2.0)
    assert torch.load(tmp_path / "best.pt", weights_only=True)["step"] == 6000


def test_truncated_newest_falls_back_with_a_warning(tmp_path: Path) -> None:
    for step in (1000, 2000):
        save_checkpoint(tmp_path, step, _state(step), keep=3)
    newest = tmp_path / checkpoint_name(2000)
    newest.write_bytes(newest.read_bytes()[:-100])
    warnings: list[str] = []
    state, used = load_latest(tmp_path, warn=warnings.append)
    assert used.name == "step_00001000.pt" and state["step"] == 1000
    assert len(warnings) == 1
    assert warnings[0].startswith("checkpoint step_00002000.pt is truncated or corrupt")
    assert warnings[0].endswith("using step_00001000.pt")


def test_same_size_garbage_is_caught_by_the_checksum(tmp_path: Path) -> None:
    for step in (1000, 2000):
        save_checkpoint(tmp_path, step, _state(step), keep=3)
    newest = tmp_path / checkpoint_name(2000)
    newest.write_bytes(b"\0" * newest.stat().st_size)
    warnings: list[str] = []
    assert load_latest(tmp_path, warn=warnings.append)[1].name == "step_00001000.pt"
    assert warnings == [
        "checkpoint step_00002000.pt is truncated or corrupt (checksum mismatch); using step_00001000.pt"
    ]


def test_missing_sidecar_means_interrupted_save(tmp_path: Path) -> None:
    for step in (1000, 2000):
        save_checkpoint(tmp_path, step, {"step": step}, keep=3)
    (tmp_path / "step_00002000.json").unlink()
    warnings: list[str] = []
    assert load_latest(tmp_path, warn=warnings.append)[0]["step"] == 1000
    assert "incomplete" in warnings[0]


def test_all_corrupt_raises_one_line_user_error(tmp_path: Path) -> None:
    for step in (1000, 2000):
        save_checkpoint(tmp_path, step, {"step": step}, keep=3)
        (tmp_path / checkpoint_name(step)).write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as info:
        load_latest(tmp_path, warn=lambda _m: None)
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert "\n" not in message and "all 2 checkpoints" in message and "step_00002000.pt" in message


def test_best_is_the_last_resort(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1000, {"step": 1000}, keep=1, val_mel=1.0)
    save_checkpoint(tmp_path, 2000, {"step": 2000}, keep=1, val_mel=2.0)
    (tmp_path / checkpoint_name(2000)).write_bytes(b"garbage")
    warnings: list[str] = []
    state, used = load_latest(tmp_path, warn=warnings.append)
    assert used.name == "best.pt" and state["step"] == 1000 and len(warnings) == 1


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path, 1000, {"step": 1000}, keep=3)
    before = (tmp_path / checkpoint_name(1000)).read_bytes()

    def failing_save(obj: object, f: Path) -> None:
        Path(f).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 1000, {"step": 1000, "new": True}, keep=3)
    assert (tmp_path / checkpoint_name(1000)).read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert load_latest(tmp_path, warn=_no_warn)[0] == {"step": 1000}


def test_non_plain_state_fails_at_save_with_its_location(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"state\['adaptive'\]\['mean'\] is a float64"):
        save_checkpoint(tmp_path, 1, {"adaptive": {"mean": np.float64(1.0)}}, keep=1)
    assert not list(tmp_path.iterdir())


def _toy_run(tmp_path: Path, steps: range, *, resume: bool) -> list[float]:
    """A dropout model fed from the global RNG: the resumed losses match only if every RNG comes back."""
    _seed_all(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    if resume:
        state, _ = load_latest(tmp_path, warn=_no_warn)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
    losses = []
    for step in steps:
        x = torch.randn(8, 4) + float(np.random.rand()) + random.random()  # (B, 4)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        state = {"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state()}
        save_checkpoint(tmp_path, step, state, keep=2)
    return losses


def test_resumed_run_continues_the_uninterrupted_loss_sequence(tmp_path: Path) -> None:
    full = _toy_run(tmp_path / "a", range(1, 7), resume=False)
    first = _toy_run(tmp_path / "b", range(1, 4), resume=False)
    second = _toy_run(tmp_path / "b", range(4, 7), resume=True)
    assert first + second == full
