"""Why a full training diverged: a diagnosis for each divergence, those it healed and the one that ended it.

A full training (``python -m trainer``, ``search.py --train-best``) heals: a guard that fires rolls the
run back to its last checkpoint, lowers its lr and goes on past the batches that diverged
(``trainer.run_state.heal``), up to ``max_recoveries`` times; the next divergence ends it. Each of them
gets a diagnosis here, after the run, so a run that never diverged pays nothing.

The replay (``trainer.diagnosis_replay``) rebuilds a run from its seed, and up to its first divergence
a full training *is* that run: the weights, batches, lr and guards of a trial of its config (its evals
fork the random streams, its checkpoints only read them). So its first divergence is replayed and
diagnosed as a trial's is. After a rollback the run trains a checkpoint's weights on later batches at a
lower lr, which no run from the seed does; each heal records the state it left (``Recovery.restart``:
the checkpoint, kept out of the pruning until this diagnosis ran, and the position it set), and the
divergence after it is replayed from there, as is the first divergence of a run resumed from a
checkpoint written after a rollback (``TrainResult.resumed``). Where that checkpoint is gone, the record
says so, names the rollback it came after, and names no cause.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.checkpoints import CheckpointError, release_kept
from trainer.config import TrainConfig
from trainer.data import TrainData
from trainer.diagnosis import Cause, Diagnosis
from trainer.diagnosis_replay import ReplayPlan, diagnose
from trainer.guards import Verdict
from trainer.results import Restart, TrainResult
from tts_model.cache import atomic_write_text

DIAGNOSES_FILE = "diagnoses.json"  # in the run folder, beside its checkpoints and telemetry


@dataclass(frozen=True, kw_only=True, slots=True)
class RunDivergence:
    """One divergence of a full training: what the guard said, what it led to, and why it happened."""

    verdict: Verdict
    recovery: int | None  # the run's recovery it led to (1, 2, ...); None: it ended the run
    diagnosis: Diagnosis

    def line(self) -> str:
        """One line for the run's closing report: what it led to, then the cause and its evidence."""
        led = "ended the run" if self.recovery is None else f"rolled back: recovery {self.recovery}"
        return f"why it diverged ({led}): {self.diagnosis.line()}"

    def to_json(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "kind": v.kind,
            "step": v.step,
            "detail": v.detail,
            "recovery": self.recovery,
            "diagnosis": self.diagnosis.to_attr(),
        }


def diagnose_run(
    cfg: TrainConfig, data: TrainData, result: TrainResult, *, device: torch.device
) -> tuple[RunDivergence, ...]:
    """Every divergence of the full training ``result`` of ``cfg`` on ``data``, in the order they
    happened, each with its diagnosis; () for a run that never diverged (nothing is replayed). The
    checkpoints kept for the replays are removed afterwards."""
    found = []
    earlier = result.earlier_recoveries
    for i, rec in enumerate(result.recoveries):
        found.append(
            RunDivergence(
                verdict=rec.verdict,
                recovery=earlier + i + 1,
                diagnosis=_diagnosis(cfg, data, result, i, rec.verdict, device),
            )
        )
    if result.verdict is not None:
        n = len(result.recoveries)
        diagnosis = _diagnosis(cfg, data, result, n, result.verdict, device)
        found.append(RunDivergence(verdict=result.verdict, recovery=None, diagnosis=diagnosis))
    for start in (result.resumed, *(rec.restart for rec in result.recoveries)):
        if start is not None and start.checkpoint is not None:
            release_kept(start.checkpoint)
    return tuple(found)


def _diagnosis(
    cfg: TrainConfig, data: TrainData, result: TrainResult, i: int, verdict: Verdict, device: torch.device
) -> Diagnosis:
    """The ``i``-th divergence of this process: replayed from the seed when no rollback came before it,
    else from the state the rollback (or the resume) left."""
    earlier = result.earlier_recoveries
    if i == 0 and result.resumed is None and earlier == 0:
        return diagnose(cfg, data, verdict, device=device)
    start: Restart | None
    if i == 0:
        start, n = result.resumed, f"{earlier} recover{'y' if earlier == 1 else 'ies'}"
        after = f"the run resumed from a checkpoint written after {n}"
        source = (
            "" if start is None else f"the checkpoint it resumed from (step {start.step}, written after {n}"
        )
    else:
        back = result.recoveries[i - 1]
        start = back.restart
        after = (
            f"recovery {earlier + i} had rolled the run back to step {back.rolled_back_to} "
            f"at x{back.lr_scale:g} the schedule's lr"
        )
        state = "its initial state" if start is None or start.checkpoint is None else f"step {start.step}"
        source = f"recovery {earlier + i}'s rollback (to {state}, the data position kept"
    if start is None:
        return _not_replayed(verdict, f"{after}, and no record of the state it went on from was kept")
    try:
        found = diagnose(cfg, data, verdict, device=device, plan=ReplayPlan(start=start))
    except CheckpointError as exc:
        return _not_replayed(verdict, f"{after}, and {exc}")
    source = f"{source}, x{start.lr_scale:g} the schedule's lr)"
    return dataclasses.replace(found, evidence=f"{found.evidence}; replayed from {source}")


def _not_replayed(verdict: Verdict, why: str) -> Diagnosis:
    """A divergence whose start cannot be rebuilt: said plainly, no cause named."""
    return Diagnosis(
        step=verdict.step,
        cause=Cause.UNKNOWN,
        reproduced=False,
        evidence=f"not replayed: {why}; the guard said: {verdict.detail}",
    )


def write_diagnoses(out: Path, found: Sequence[RunDivergence]) -> Path:
    """The run's divergences and their diagnoses, as JSON in the run folder ``out``, after those an
    earlier process of the same run (before a resume) wrote there."""
    path = out / DIAGNOSES_FILE
    rows = [d.to_json() for d in (*read_diagnoses(out), *found)]
    atomic_write_text(path, json.dumps({"divergences": rows}, indent=1))
    return path


def read_diagnoses(out: Path) -> tuple[RunDivergence, ...]:
    """What ``write_diagnoses`` wrote in ``out``; () when the run never diverged (no file)."""
    path = out / DIAGNOSES_FILE
    if not path.exists():
        return ()
    rows = json.loads(path.read_text(encoding="utf-8")).get("divergences", [])
    return tuple(
        RunDivergence(
            verdict=Verdict(kind=r["kind"], step=int(r["step"]), detail=str(r.get("detail") or "")),
            recovery=r.get("recovery"),
            diagnosis=Diagnosis.from_attr(r["diagnosis"]),
        )
        for r in rows
    )
