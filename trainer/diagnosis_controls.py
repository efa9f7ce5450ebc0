"""The diagnosis's positive controls: short real runs with a known fault, each diagnosed, each checked.

One function per control builds the run (a config, and for the data faults a corrupted *copy* of the
training set), runs the real trainer under the fault's switch (``trainer/faults.py``), diagnoses it
under the same switch, and says whether the diagnosis named the injected cause, and its module, item or
term. ``tests/test_diagnosis.py`` and ``bench/bench_diagnosis_controls.py`` run these; nothing else
should.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.config import TrainConfig, with_overrides
from trainer.data import TrainData
from trainer.diagnosis import Cause, Diagnosis
from trainer.diagnosis_replay import diagnose
from trainer.faults import corrupt_clip, cut_clip, double_mask, fragile_forward_sum, loader_lets_through
from trainer.guards import Verdict
from trainer.loop import RunPlan, train
from tts_model.batching import BucketBatchSampler
from tts_model.dataset import load_dataset
from tts_model.metadata import read_metadata

CPU = torch.device("cpu")
NO_DECODE = RunPlan(decode_sentences=0)  # the controls judge divergence, not speech
FAULT_STEP = 3  # the data faults sit in the batch of this step, so a step before it trains clean
# A short healthy run: the tiny model, batch 4, two epochs of the 24-utterance test corpus.
BASE = TrainConfig(
    model_size="tiny",
    batch_size=4,
    max_steps=12,
    eval_every=1000,
    lr=1e-3,
    warmup_steps=3,
    scheduler="noam",
    grad_clip=1.0,
    seed=0,
)
CONTROLS = ("lr-edge", "fp16-overflow", "data", "loss-term", "no-fault")


@dataclass(frozen=True, kw_only=True, slots=True)
class ControlResult:
    """One control: what was injected, where the run diverged, what the diagnosis named, and whether
    that is the injected cause (with its module, item or term)."""

    control: str
    expected: Cause | None  # None: the no-fault control, which must name nothing
    target: str  # the module, item or term the cause must name ("" where the cause alone is checked)
    diverged_at: int | None
    diagnosis: Diagnosis | None
    # the no-fault control: its healthy run replayed as if a guard had fired at its last step, which
    # must name no cause (unknown): the rules do not find a cause in a run that has none
    forced: Diagnosis | None = None
    right: bool
    train_s: float
    replay_s: float

    def row(self) -> tuple[str, str, str, str]:
        d = self.diagnosis
        named = "none" if d is None else d.cause.value + (f" ({_named(d)})" if _named(d) else "")
        if self.forced is not None:
            named += f"; forced replay: {self.forced.cause.value}"
        step = "-" if self.diverged_at is None else str(self.diverged_at)
        return (self.control, step, named, "yes" if self.right else "NO")


def _named(d: Diagnosis) -> str:
    return d.module or d.term or ", ".join(d.items)


def run_control(name: str, data: TrainData, work: Path, *, device: torch.device = CPU) -> ControlResult:
    """Run control ``name`` (one of CONTROLS) on ``data``; ``work``: a folder for corpus copies."""
    build = _CONTROLS.get(name)
    if build is None:
        raise ValueError(f"unknown control {name!r}; one of {', '.join(CONTROLS)}")
    cfg, run_data, switch, expected, target = build(data, work / name)
    with switch():
        t0 = time.perf_counter()
        result = train(cfg, run_data, device=device, plan=NO_DECODE)
        train_s = time.perf_counter() - t0
        found = forced = None
        if result.verdict is not None:
            found = diagnose(cfg, run_data, result.verdict, device=device)
        elif expected is None:
            fake = Verdict(kind="nonfinite", step=result.steps, detail="forced: no guard fired")
            forced = diagnose(cfg, run_data, fake, device=device)
    right = _right(found, expected, target) and (forced is None or not forced.named)
    return ControlResult(
        control=name,
        expected=expected,
        target=target,
        diverged_at=None if result.verdict is None else result.verdict.step,
        diagnosis=found,
        forced=forced,
        right=right,
        train_s=train_s,
        replay_s=next((d.replay_s for d in (found, forced) if d is not None), 0.0),
    )


def _right(found: Diagnosis | None, expected: Cause | None, target: str) -> bool:
    if expected is None:
        return found is None
    if found is None or found.cause is not expected:
        return False
    if expected is Cause.FP16_OVERFLOW:
        return found.module is not None and found.module.endswith(target)
    if expected is Cause.DATA:
        return found.items == (target,)
    if expected is Cause.LOSS_TERM:
        return found.term is not None and found.term.startswith(target)
    return True


Switch = Callable[[], contextlib.AbstractContextManager]
Built = tuple[TrainConfig, TrainData, Switch, Cause | None, str]


@contextlib.contextmanager
def _no_fault() -> Iterator[None]:
    yield


def _lr_edge(data: TrainData, work: Path) -> Built:
    # lr 0.1 with no warmup and no clip: the tiny model's mel climbs past the ceiling in a few steps
    cfg = with_overrides(
        BASE, lr=0.1, warmup_steps=0, scheduler="constant", grad_clip=0.0, guards={"ceiling_min_steps": 0}
    )
    return cfg, data, _no_fault, Cause.LR_EDGE, ""


def _fp16_overflow(data: TrainData, work: Path) -> Built:
    cfg = with_overrides(BASE, precision="fp16")
    return cfg, data, double_mask, Cause.FP16_OVERFLOW, "cross_attn"


def _data(data: TrainData, work: Path) -> Built:
    folder, victim = _copy_with_victim(data, work)
    corrupt_clip(folder / "wavs" / f"{victim}.wav", "nan")
    with loader_lets_through():
        train_set = load_dataset(folder, data.data_cfg, cache_dir=work / "cache")
    return (
        BASE,
        dataclasses.replace(data, train=train_set, train_dir=folder),
        loader_lets_through,
        Cause.DATA,
        victim,
    )


def _loss_term(data: TrainData, work: Path) -> Built:
    folder, victim = _copy_with_victim(data, work)
    cut_clip(folder / "wavs" / f"{victim}.wav", 0.15)
    train_set = load_dataset(folder, data.data_cfg, cache_dir=work / "cache")
    cfg = with_overrides(BASE, alignment_loss="prior")
    run_data = dataclasses.replace(data, train=train_set, train_dir=folder)
    return cfg, run_data, fragile_forward_sum, Cause.LOSS_TERM, "align"


def _no_fault_run(data: TrainData, work: Path) -> Built:
    return BASE, data, _no_fault, None, ""


_CONTROLS: dict[str, Callable[[TrainData, Path], Built]] = {
    "lr-edge": _lr_edge,
    "fp16-overflow": _fp16_overflow,
    "data": _data,
    "loss-term": _loss_term,
    "no-fault": _no_fault_run,
}


def _copy_with_victim(data: TrainData, work: Path) -> tuple[Path, str]:
    """A copy of the training folder, and the id of the longest item of the batch at FAULT_STEP in the
    clean run's order (a fault that changes its length may move it to another step)."""
    folder = work / "train"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(data.train_dir, folder)
    lengths = [ex.mel.shape[0] for ex in data.train.items]
    sampler = BucketBatchSampler(lengths, batch_size=BASE.batch_size, seed=BASE.seed)
    batch = sampler.batches(0)[FAULT_STEP - 1]
    victim = max(batch, key=lambda i: (lengths[i], data.train[i].id))
    ids = {row.id for row in read_metadata(folder)}
    assert data.train[victim].id in ids
    return folder, data.train[victim].id
