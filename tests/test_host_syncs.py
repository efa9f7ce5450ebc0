"""A training step reads the device once: the rule that lets a GPU run without waiting for the host.

Measured before the rule (same counter): 9 reads a step (10 with adaptive loss weights), 3 of them
before `backward`. A new `float(tensor)` in the hot loop fails here, naming its file and line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from corpus_fixture import cache_env, corpus_paths, train_data  # noqa: F401  (pytest fixtures)
from host_syncs import counting_host_syncs

from trainer.config import TrainConfig, with_overrides
from trainer.data import TrainData
from trainer.hooks import RunHooks
from trainer.loop import StepMetrics, train

BASE = TrainConfig(
    model_size="tiny", batch_size=4, max_steps=6, eval_every=1000, lr=1e-3, warmup_steps=3, grad_clip=1.0
)
CONFIGS = {
    "basic-like": BASE,
    "every-loss-switch": with_overrides(
        BASE, adaptive_loss_weights=True, label_smoothing=True, huber_loss=True
    ),
    "no-clip": with_overrides(BASE, grad_clip=0.0, alignment_loss="guided"),
    # The prior is built on the device from the batch's lengths. Not counted here because it happens in
    # C++: on CUDA, F.ctc_loss (the forward-sum loss) copies the two length tensors to the host.
    "prior": with_overrides(BASE, alignment_loss="prior", prior_anneal_start=2, prior_anneal_end=4),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_one_host_read_per_training_step(name: str, train_data: TrainData, tmp_path: Path) -> None:  # noqa: F811
    marks: list[int] = []
    with counting_host_syncs() as calls:

        def on_step(m: StepMetrics) -> None:
            marks.append(len(calls))

        # Between two on_step calls lie a whole step (batch, lr, forward, losses, backward, clip, optimizer
        # step, read-back, telemetry) and the guards of the step before; the only eval comes after the last.
        hooks = RunHooks(on_step=on_step, telemetry=tmp_path / "t.db")
        train(CONFIGS[name], train_data, device=torch.device("cpu"), hooks=hooks)
        per_step = [calls[a:b] for a, b in zip(marks, marks[1:], strict=False)]
    assert len(per_step) == 5
    for reads in per_step:
        assert len(reads) == 1 and reads[0].startswith("tolist at "), reads


def test_the_counter_sees_the_reads_it_names() -> None:
    """The rule above is only as good as the counter: each kind of read is counted once."""
    x = torch.ones(3)
    with counting_host_syncs() as calls:
        float(x.sum())
        x.sum().item()
        x.tolist()
        bool(x.sum() > 0)
        int(x.sum())
        torch.tensor(2.0, device="cpu")
        torch.tensor(2.0)  # built on the host: no copy, not counted
        _ = x + 1  # device work, not a read
    assert [c.split(" at ")[0] for c in calls] == [
        "__float__",
        "item",
        "tolist",
        "__bool__",
        "__int__",
        "torch.tensor",
    ]
    assert float(x.sum()) == 3.0 and "item" not in torch.Tensor.__dict__  # patches gone afterwards
