"""trainer/adapters/lightning.py: a real ``lightning.Trainer`` run, guarded through the callback.

docs/lightning.md's three blocks (``space.toml``, ``model.py``, ``train.py``) are cut out of the page and
run as a user would (``python train.py``): a 3-trial study of a 17-parameter regression on CPU, where the
huge-lr preset diverges and is stopped at its step. The pre-clip norm is checked against the gradient
itself, and a missing extra is one line.

They need the ``lightning`` extra (``make test`` installs it); elsewhere they skip, except under CI.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from studies.record import load_records
from studies.record_keys import C_DIVERGED
from trainer.adapters import lightning as adapter
from trainer.config import GuardConfig
from trainer.reporter import ReportedStep, Reporter

HAS_LIGHTNING = importlib.util.find_spec("lightning") is not None
if not HAS_LIGHTNING and os.environ.get("CI"):
    raise RuntimeError("CI: the lightning extra is not installed: pip install -e '.[lightning]'")
needs_lightning = pytest.mark.skipif(
    not HAS_LIGHTNING, reason="pip install -e '.[lightning]' (make test does)"
)

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "lightning.md"
STEPS = 140  # 10 epochs of 14 batches

optuna.logging.set_verbosity(optuna.logging.WARNING)


def block(first_line: str) -> str:
    """The fenced block of the page whose first line is ``first_line``."""
    for body in re.findall(r"```[a-z]*\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S):
        if body.startswith(first_line):
            return body
    raise AssertionError(f"{PAGE.name} has no block starting {first_line!r}")


@needs_lightning
def test_the_example_runs_as_written_and_the_huge_lr_is_stopped_at_its_step(tmp_path: Path) -> None:
    code = block("# train.py")
    lines = [x for x in code.splitlines() if x.strip() and not x.lstrip().startswith("#")]
    assert len(lines) <= 20, f"the example is {len(lines)} lines"
    for name in ("space.toml", "model.py", "train.py"):
        (tmp_path / name).write_text(block(f"# {name}"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "train.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    db = tmp_path / "runs" / "toy-lightning" / "study.db"
    records = load_records(optuna.load_study(study_name="toy-lightning", storage=f"sqlite:///{db}"))
    assert len(records) == 3 and all(r.finished for r in records), [(r.number, r.state) for r in records]
    enhanced = next(r for r in records if r.preset == "enhanced")  # lr 5.0: SGD diverges above ~0.8
    assert enhanced.state == TrialState.PRUNED and enhanced.outcome.startswith("diverged:")
    assert enhanced.constraints[C_DIVERGED] > 0 and not enhanced.feasible
    assert enhanced.divergence is not None and enhanced.divergence.step is not None
    assert enhanced.divergence.step <= STEPS // 4, enhanced.divergence  # stopped at its step, not the end
    assert enhanced.steps_run == enhanced.divergence.step  # nothing reported after the stop
    page = PAGE.read_text(encoding="utf-8")
    assert f"at step {enhanced.divergence.step} of {STEPS}" in page, "the page says another step"
    basic = next(r for r in records if r.preset == "basic")
    assert basic.state == TrialState.COMPLETE and basic.outcome == "stable" and basic.feasible
    assert basic.steps_run == STEPS and basic.value is not None
    sampled = next(r for r in records if r.preset is None)  # whatever the sampler drew: judged, not FAIL
    assert sampled.state in (TrialState.COMPLETE, TrialState.PRUNED) and sampled.outcome is not None
    print(f"\nlightning example: {[(r.number, r.preset, r.outcome, r.steps_run) for r in records]}")


@needs_lightning
def test_the_grad_norm_is_taken_before_lightning_clips() -> None:
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
            return torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(0)
    x = 10 * torch.randn(64, 4)
    y = x.sum(1, keepdim=True)
    model = Tiny()
    net = torch.nn.Linear(4, 1)
    net.load_state_dict(model.net.state_dict())
    torch.nn.functional.mse_loss(net(x[:16]), y[:16]).backward()
    expected = torch.nn.utils.get_total_norm([p.grad for p in net.parameters()]).item()
    seen: list[ReportedStep] = []
    reporter = Reporter(GuardConfig(), on_step=seen.append, note=lambda _: None)
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        gradient_clip_val=0.01,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[adapter.guard_callback(reporter)],
    )
    trainer.fit(model, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16))
    assert [s.step for s in seen] == [1, 2, 3]
    assert seen[0].grad_norm == pytest.approx(expected, rel=1e-5) and expected > 1.0  # not the clipped 0.01
    assert seen[0].loss == pytest.approx(torch.nn.functional.mse_loss(net(x[:16]), y[:16]).item(), rel=1e-5)


@needs_lightning
def test_a_trainer_that_does_not_stop_gets_the_stop_raised_at_its_next_batch() -> None:
    import lightning as L

    from trainer.reporter import Diverged

    class Boom(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(1, 1)

        def training_step(self, batch: torch.Tensor, _: int) -> torch.Tensor:
            loss = self.net(batch).mean()
            return loss * float("nan") if self.global_step == 2 else loss  # the 3rd step's loss is NaN

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    reporter = Reporter(GuardConfig(), note=lambda _: None)
    trainer = L.Trainer(
        max_steps=20,
        min_steps=10,  # Lightning does not stop early before this: the callback raises instead
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[adapter.guard_callback(reporter)],
    )
    with pytest.raises(Diverged):
        trainer.fit(Boom(), torch.utils.data.DataLoader(torch.ones(32, 1), batch_size=4))
    assert trainer.should_stop and trainer.global_step == 3 and reporter.steps == 3
    assert reporter.verdict is not None and reporter.verdict.kind == "nonfinite"


@needs_lightning
def test_under_fp16_a_gradscaler_skip_is_counted_not_a_divergence() -> None:
    import lightning as L
    from lightning.pytorch.plugins import MixedPrecision

    class Overflow(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(1, 1)

        def training_step(self, batch: torch.Tensor, _: int) -> torch.Tensor:
            scale = (
                1e4 if self.global_step == 2 else 1.0
            )  # the 3rd step: finite loss, its scaled grads overflow
            return self.net(batch * scale).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    seen: list[ReportedStep] = []
    reporter = Reporter(GuardConfig(), on_step=seen.append, note=lambda _: None)
    fp16 = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=256.0))
    trainer = L.Trainer(
        max_steps=5,
        accelerator="cpu",
        plugins=[fp16],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[adapter.guard_callback(reporter)],
    )
    trainer.fit(Overflow(), torch.utils.data.DataLoader(torch.ones(32, 1), batch_size=4))
    assert [s.loss_scale for s in seen] == [256.0, 256.0, 128.0, 128.0, 128.0]
    assert [s.skipped for s in seen] == [False, False, True, False, False]
    assert seen[2].grad_norm == float("inf") and reporter.verdict is None and reporter.steps == 5


def test_without_the_extra_building_the_callback_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    adapter._callback_class.cache_clear()
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    with pytest.raises(ModuleNotFoundError) as e:
        adapter.guard_callback(Reporter(GuardConfig(), note=lambda _: None))
    assert str(e.value) == "trainer.adapters.lightning needs PyTorch Lightning: pip install -e '.[lightning]'"
    adapter._callback_class.cache_clear()
