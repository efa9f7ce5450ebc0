"""fp16 divergence diagnosed at its step, and out of memory as an outcome, on real (tiny, CPU) runs.

Under fp16 a non-finite *loss* is a forward overflow: the seed's NaN, which no loss scale cures, so the
run diverges at that step. Only a finite loss whose scaled gradients overflow is a GradScaler skip,
counted apart from NaN/Inf events, and 17 of them in a row still diverge (2^16 of scale gone).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from corpus_fixture import cache_env, corpus_paths, train_data  # noqa: F401  (pytest fixtures)

from trainer.config import TrainConfig, with_overrides
from trainer.data import TrainData
from trainer.hooks import RunHooks
from trainer.loop import StepMetrics, train
from trainer.telemetry import read_run
from tts_model.model import ModelOutput, TransformerTTS

CPU = torch.device("cpu")
FP16 = TrainConfig(
    model_size="tiny",
    batch_size=4,
    max_steps=6,
    eval_every=1000,
    lr=1e-3,
    warmup_steps=3,
    grad_clip=1.0,
    precision="fp16",
)
FP16_MAX = torch.finfo(torch.float16).max


def patch_training_forward(monkeypatch: pytest.MonkeyPatch, change) -> list[int]:
    """Run `change(step, out)` on every training forward's output (evals untouched); returns the calls."""
    real = TransformerTTS.forward
    calls: list[int] = []

    def forward(self, *args, **kwargs) -> ModelOutput:
        out = real(self, *args, **kwargs)
        if not self.training:
            return out
        calls.append(1)
        return change(len(calls), out)

    monkeypatch.setattr(TransformerTTS, "forward", forward)
    return calls


def overflow_gradients(out: ModelOutput) -> ModelOutput:
    """A finite forward whose backward overflows: the gradient reaching mel_after is inf."""
    out.mel_after.register_hook(lambda grad: grad * math.inf)
    return out


def run(cfg: TrainConfig, data: TrainData, **kwargs) -> tuple:
    steps: list[StepMetrics] = []
    warnings: list[str] = []
    hooks = RunHooks(on_step=steps.append, warn=warnings.append, **kwargs)
    result = train(cfg, data, device=CPU, hooks=hooks)
    return result, steps, warnings


def test_fp16_forward_overflow_diverges_at_its_step(train_data, monkeypatch) -> None:  # noqa: F811
    def overflow_at_3(step: int, out: ModelOutput) -> ModelOutput:
        if step != 3:
            return out
        assert out.mel_before.dtype == torch.float16  # the forward really runs under fp16 autocast
        # A value past fp16's range, computed in fp16: inf, as an activation that outgrew it would be.
        boost = torch.tensor(FP16_MAX, dtype=torch.float16)
        return dataclasses.replace(out, mel_before=out.mel_before * boost * 2)

    patch_training_forward(monkeypatch, overflow_at_3)
    result, steps, _ = run(with_overrides(FP16, max_steps=10), train_data)
    assert result.verdict is not None and (result.verdict.kind, result.verdict.step) == ("nonfinite", 3)
    assert result.verdict.detail.startswith("loss is ")
    assert result.verdict.detail.endswith("at step 3 (forward overflow under fp16)")
    assert result.steps == 3 == len(steps)
    assert not math.isfinite(steps[-1].loss) and not steps[-1].skipped  # a divergence, not a skip
    assert result.summary.nonfinite_events == 1


def test_finite_loss_with_overflowing_gradients_is_a_skip(train_data, monkeypatch) -> None:  # noqa: F811
    patch_training_forward(monkeypatch, lambda step, out: overflow_gradients(out) if step == 3 else out)
    result, steps, _ = run(FP16, train_data)
    assert result.verdict is None and result.steps == 6
    third = steps[2]
    assert third.skipped and math.isfinite(third.loss) and not math.isfinite(third.grad_norm)
    assert steps[3].loss_scale == third.loss_scale / 2  # the scaler backed off and training went on
    assert result.summary.scaler_skips == sum(m.skipped for m in steps) >= 1
    assert result.summary.nonfinite_events == 0  # a skip is not a NaN/Inf event


def test_seventeen_skips_in_a_row_diverge(train_data, monkeypatch) -> None:  # noqa: F811
    patch_training_forward(monkeypatch, lambda step, out: overflow_gradients(out))
    result, steps, _ = run(with_overrides(FP16, max_steps=30), train_data)
    limit = FP16.guards.max_consecutive_skips
    assert result.verdict is not None and (result.verdict.kind, result.verdict.step) == (
        "nonfinite",
        limit + 1,
    )
    assert f"GradScaler skipped {limit + 1} steps in a row" in result.verdict.detail
    assert all(m.skipped and math.isfinite(m.loss) for m in steps)
    assert result.summary.scaler_skips == limit + 1 and result.summary.nonfinite_events == 0


def test_out_of_memory_ends_the_run_as_an_outcome(train_data, monkeypatch, tmp_path) -> None:  # noqa: F811
    message = "CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 139.80 GiB"

    def oom_at_3(step: int, out: ModelOutput) -> ModelOutput:
        if step == 3:
            raise torch.cuda.OutOfMemoryError(message + "\nOf the allocated memory ...")
        return out

    patch_training_forward(monkeypatch, oom_at_3)
    result, steps, warnings = run(FP16, train_data, telemetry=tmp_path / "t.db", run_id="oom")
    assert result.oom is not None and (result.oom.step, result.oom.detail) == (3, message)
    assert result.verdict is None and result.steps == 2 == len(steps)
    assert any("out of memory at step 3" in w for w in warnings)
    record = read_run(tmp_path / "t.db", "oom")
    assert record is not None and record["status"] == "oom"
    assert (record["verdict_kind"], record["verdict_step"], record["verdict_detail"]) == (None, 3, message)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.oom.step = 4  # type: ignore[misc]


def test_out_of_memory_at_eval_is_booked_at_that_step(train_data, monkeypatch) -> None:  # noqa: F811
    real = TransformerTTS.forward
    evals = []

    def forward(self, *args, **kwargs) -> ModelOutput:
        if not self.training:
            evals.append(1)
            if len(evals) > 2:  # the baseline eval's two batches pass; the step-4 eval fails
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 96.00 MiB.")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TransformerTTS, "forward", forward)
    result, steps, _ = run(with_overrides(FP16, precision="fp32", eval_every=4), train_data)
    assert result.oom is not None and result.oom.step == 4 and "96.00 MiB" in result.oom.detail
    assert result.steps == 4 == len(steps) and result.evals == ()


def test_device_settings_turn_on_tf32_for_cuda_and_hand_memory_back(monkeypatch) -> None:
    """Checked without a GPU: the settings are plain torch state and empty_cache is observed."""
    from trainer.loop import device_settings

    emptied: list[int] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    before = torch.get_float32_matmul_precision()
    with device_settings(torch.device("cuda")):
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cuda.matmul.allow_tf32
    assert torch.get_float32_matmul_precision() == before and emptied == [1]
    with device_settings(CPU):
        assert torch.get_float32_matmul_precision() == before
    assert emptied == [1]
