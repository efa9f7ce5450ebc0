"""trainer/adapters/hf.py: a real ``transformers.Trainer`` run, guarded through the callback.

docs/hf.md's three blocks (``space.toml``, ``model.py``, ``train.py``) are cut out of the page and
run as a user would (``python train.py``): a 3-trial study of a 17-parameter regression on CPU, where the
huge-lr preset diverges and is stopped at its step. The pre-clip norm is checked against the gradient
itself, and a missing extra is one line.

They need the ``hf`` extra (``make test`` installs it); elsewhere they skip, except under CI.
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
from trainer.adapters import hf as adapter
from trainer.config import GuardConfig
from trainer.reporter import ReportedStep, Reporter, StopRun

HAS_HF = all(importlib.util.find_spec(name) is not None for name in ("transformers", "accelerate"))
if not HAS_HF and os.environ.get("CI"):
    raise RuntimeError("CI: the hf extra is not installed: pip install -e '.[hf]'")
needs_hf = pytest.mark.skipif(not HAS_HF, reason="pip install -e '.[hf]' (make test does)")

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "hf.md"
STEPS = 140  # 10 epochs of 14 batches

optuna.logging.set_verbosity(optuna.logging.WARNING)


def block(first_line: str) -> str:
    """The fenced block of the page whose first line is ``first_line``."""
    for body in re.findall(r"```[a-z]*\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S):
        if body.startswith(first_line):
            return body
    raise AssertionError(f"{PAGE.name} has no block starting {first_line!r}")


@needs_hf
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
    db = tmp_path / "runs" / "toy-hf" / "study.db"
    records = load_records(optuna.load_study(study_name="toy-hf", storage=f"sqlite:///{db}"))
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
    print(f"\nhf example: {[(r.number, r.preset, r.outcome, r.steps_run) for r in records]}")


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": torch.nn.functional.mse_loss(self.net(x), labels)}


@needs_hf
def test_the_grad_norm_is_the_trainers_pre_clip_norm(tmp_path: Path) -> None:
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    x = 10 * torch.randn(64, 4)
    y = x.sum(1, keepdim=True)
    model = Tiny()
    net = Tiny()
    net.load_state_dict(model.state_dict())
    net(x, y)["loss"].backward()  # one batch of all 64: the Trainer's shuffle does not change it
    expected = torch.nn.utils.get_total_norm([p.grad for p in net.parameters()]).item()
    seen: list[ReportedStep] = []
    reporter = Reporter(GuardConfig(), on_step=seen.append, note=lambda _: None)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=64,
        optim="sgd",
        learning_rate=0.01,
        max_grad_norm=0.01,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    rows = [{"x": a, "labels": b} for a, b in zip(x, y, strict=True)]
    Trainer(model, args, train_dataset=rows, callbacks=[adapter.guard_callback(reporter)]).train()
    assert [s.step for s in seen] == [1, 2, 3]  # every step, though logging_steps is 500
    assert seen[0].grad_norm == pytest.approx(expected, rel=1e-5) and expected > 1.0  # not the clipped 0.01
    assert seen[0].loss == pytest.approx(net(x, y)["loss"].item(), rel=1e-5)


@needs_hf
def test_a_trainer_that_logs_no_norm_gets_the_callbacks_when_unclipped_and_the_scale() -> None:
    from types import SimpleNamespace

    from transformers import TrainerControl

    model = Tiny()
    model(torch.ones(2, 4), torch.zeros(2, 1))["loss"].backward()
    norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item()
    for clip, expected in ((0.0, norm), (1.0, None)):
        seen: list[ReportedStep] = []
        cb = adapter.guard_callback(Reporter(GuardConfig(), on_step=seen.append, note=lambda _: None))
        args, state, control = SimpleNamespace(max_grad_norm=clip), SimpleNamespace(), TrainerControl()
        scaler = SimpleNamespace(get_scale=lambda: 1024.0)  # accelerate's optimizer carries it under fp16
        cb.on_pre_optimizer_step(args, state, control, model=model)
        cb.on_optimizer_step(args, state, control, optimizer=SimpleNamespace(scaler=scaler))
        cb.on_log(args, state, control, logs={"loss": 0.5})
        assert seen[0].grad_norm == (None if expected is None else pytest.approx(expected))
        assert seen[0].loss_scale == 1024.0


@needs_hf
def test_a_guard_that_fires_stops_the_trainer_and_nothing_is_reported_after() -> None:
    from types import SimpleNamespace

    from transformers import TrainerControl

    reporter = Reporter(GuardConfig(), note=lambda _: None)
    cb = adapter.guard_callback(reporter)
    args, state, control = SimpleNamespace(max_grad_norm=1.0), SimpleNamespace(), TrainerControl()
    cb.on_log(args, state, control, logs={"loss": 1.0, "grad_norm": 1.0})
    assert not control.should_training_stop
    cb.on_log(args, state, control, logs={"loss": float("nan"), "grad_norm": 1.0})
    assert control.should_training_stop and reporter.verdict is not None and reporter.steps == 2
    cb.on_evaluate(args, state, control, metrics={"eval_loss": 1.0})  # ignored: the run is over
    with pytest.raises(StopRun):
        cb.on_step_begin(args, state, control)


def test_without_the_extra_building_the_callback_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    adapter._callback_class.cache_clear()
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModuleNotFoundError) as e:
        adapter.guard_callback(Reporter(GuardConfig(), note=lambda _: None))
    assert str(e.value) == "trainer.adapters.hf needs Hugging Face transformers: pip install -e '.[hf]'"
    adapter._callback_class.cache_clear()
