"""Every diverged run is diagnosed, not only trials: a margin rung (stored with its margin, listed in the
report's table) and a full training (each divergence it rolled back from and the one that ended it,
kept in its run folder and printed in its closing lines). Real short runs of the tiny model on CPU,
forced to diverge by an lr far above the edge or a NaN clip (each divergence after a rollback replayed
from the state the rollback left)."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import optuna
import pytest
import torch
from corpus_fixture import cache_env, corpus_paths, train_data  # noqa: F401  (pytest fixtures)
from rich.console import Console
from test_diagnosis import probe_fields

from studies.evidence import diagnoses, lr_probe, margin
from studies.evidence.lr_probe import ProbeResult
from studies.execution.margin_runs import MarginJob, run_rung
from studies.execution.runs import RunSetup
from studies.paths import StudyPaths
from studies.registry import get_study
from trainer.checkpoints import REPLAY_DIR, checkpoint_name
from trainer.cli import cli, why_diverged
from trainer.config import config_to_dict, with_overrides
from trainer.data import TrainData
from trainer.diagnosis import Cause, Edge
from trainer.diagnosis_controls import BASE
from trainer.diagnosis_full import DIAGNOSES_FILE, diagnose_run, read_diagnoses
from trainer.faults import corrupt_clip, loader_lets_through
from trainer.guards import Verdict
from trainer.loop import RunPlan, train
from trainer.outcome import Outcome
from trainer.presets import preset
from trainer.results import TrainResult
from trainer.summary import summarize
from tts_model.batching import BucketBatchSampler
from tts_model.corpus import CorpusPaths
from tts_model.dataset import load_dataset

CPU = torch.device("cpu")
SMOKE = get_study("stability-smoke")
# A recipe of the smoke study's space with nothing to hold a high lr: no warmup, no clip.
BARE = {
    **SMOKE.space.preset_params(config_to_dict(preset("basic"))),
    "lr": 1e-3,
    "warmup_steps": 0,
    "grad_clip": 0.0,
}
# Past the NaN clip of `_with_nan_clip` a run rolls back once (to its step-2 checkpoint, kept for the replay
# while the step files are pruned to 1) and ends at the next divergence.
ROLLS_BACK_ONCE = with_overrides(BASE, checkpoint_every=2, keep_checkpoints=1, max_recoveries=1)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- margin rungs ---------------------------------------------------------------------------------------
def test_a_diverged_margin_rung_is_diagnosed_stored_and_listed(train_data, tmp_path: Path):  # noqa: F811
    setup = RunSetup(SMOKE, train_data, CPU, StudyPaths(tmp_path, SMOKE.name), 0)
    job = MarginJob("bare", dict(BARE), None, 12, edge=Edge(0.05, "lr probe"))
    lines = Console(record=True, width=400)
    # lr 0.512: far above the edge (the smoke study's guards judge from step 10 on)
    rung = run_rung(setup, job, 512.0, lines)
    d = rung.diagnosis
    assert rung.diverged and d is not None, rung
    assert d.reproduced and d.step == rung.divergence_step
    # the ladder measures its own edge: its lr-edge rests on the replay at a lower lr, and names the
    # edge measured outside the ladder beside it
    assert d.cause is Cause.LR_EDGE, d.line()
    assert "the same last steps replayed at lr" in d.evidence and "lr 0.05 (lr probe)" in d.evidence
    assert f"margin bare x512: why: {d.line()}" in lines.export_text()

    # stored with the margin in the study, listed in the report's table; a margin stored before the
    # diagnosis existed still loads, and its diverged rung says it was not diagnosed
    healthy = margin.Rung(multiplier=1.0, lr=1e-3, outcome=Outcome.STABLE, steps_run=12)
    study = optuna.create_study()
    margin.store(study, margin.Margin(name="bare", trial=None, base_lr=1e-3, steps=12, rungs=(healthy, rung)))
    back = margin.stored(study)
    assert back["bare"].rungs[1].diagnosis == d and back["bare"].rungs[0].diagnosis is None
    rows = diagnoses.why_diverged([], None, None, back).rows
    assert rows == (("margin bare x512", str(d.step), "lr-edge", d.evidence),)
    old = margin.Rung.from_attr({k: v for k, v in rung.to_attr().items() if k != "diagnosis"})
    stored_before = margin.Margin(name="bare", trial=None, base_lr=1e-3, steps=12, rungs=(old,))
    (row,) = diagnoses.why_diverged([], None, None, {"bare": stored_before}).rows
    guard = f"{rung.divergence_kind} at step {d.step}"
    assert row[2:] == ("not diagnosed", f"no diagnosis stored; the guard said: {guard}")


def test_a_margin_rung_is_compared_with_the_edge_measured_outside_its_own_ladder():
    study = optuna.create_study()
    assert diagnoses.measured_edge(study, besides="basic") is None
    rungs = (
        margin.Rung(multiplier=8.0, lr=0.008, outcome=Outcome.STABLE, steps_run=50),
        margin.Rung(multiplier=16.0, lr=0.016, outcome=Outcome.EXPLOSION, steps_run=20, divergence_step=20),
    )
    margin.store(study, margin.Margin(name="basic", trial=None, base_lr=1e-3, steps=50, rungs=rungs))
    assert diagnoses.measured_edge(study) == Edge(0.016, "margin of basic")
    assert diagnoses.measured_edge(study, besides="basic") is None  # its own ladder: no edge to compare
    assert diagnoses.measured_edge(study, besides="enhanced") == Edge(0.016, "margin of basic")
    fields = probe_fields(divergence_lr=0.4)
    lr_probe.store(study, ProbeResult(**fields))
    assert diagnoses.measured_edge(study, besides="basic") == Edge(0.4, "lr probe")


# -- full training ----------------------------------------------------------------------------------------
HOT = with_overrides(
    BASE,
    lr=0.1,
    warmup_steps=0,
    scheduler="constant",
    grad_clip=0.0,
    guards={"ceiling_min_steps": 0},
    max_recoveries=1,
    recovery_lr_factor=0.9,  # still far above the edge after the rollback: it diverges again
    checkpoint_every=1000,
)


def test_a_full_training_diagnoses_its_first_divergence_by_replay_and_the_rolled_back_one_from_its_start(
    train_data,  # noqa: F811
    tmp_path: Path,
):
    result = train(
        HOT, train_data, device=CPU, plan=RunPlan(mode="full", out_dir=tmp_path, decode_sentences=0)
    )
    assert len(result.recoveries) == 1 and result.verdict is not None, result
    found = diagnose_run(HOT, train_data, result, device=CPU)
    first, last = found
    assert first.recovery == 1 and first.verdict == result.recoveries[0].verdict
    d = first.diagnosis
    # up to its first divergence a full training is the run its seed rebuilds: replayed, reproduced
    assert d.reproduced and d.cause is Cause.LR_EDGE and d.step == first.verdict.step, d.line()
    assert first.line() == f"why it diverged (rolled back: recovery 1): {d.line()}"
    # after the rollback (to its initial state: no checkpoint yet) it is the run from that state, at the
    # data position the heal kept and x0.9 the lr: replayed from there, the cause named
    assert last.recovery is None and last.verdict == result.verdict
    d = last.diagnosis
    assert d.reproduced and d.cause is Cause.LR_EDGE and d.step == result.verdict.step, d.line()
    assert d.lr == pytest.approx(0.09)
    assert d.evidence.endswith(
        "replayed from recovery 1's rollback (to its initial state, the data position kept, "
        "x0.9 the schedule's lr)"
    )


def test_a_divergence_after_a_rollback_to_a_pruned_checkpoint_is_replayed_and_so_is_a_resumed_run(
    train_data,  # noqa: F811
    tmp_path: Path,
):
    # a NaN clip let through by the loader (the data control's fault): the run rolls back to step 2 past
    # its batch at step 3, and diverges again when the next epoch brings it back; by then the checkpoint
    # of step 2 is pruned (keep 1), its copy kept for the replay
    run_data, victim = _with_nan_clip(train_data, tmp_path)
    cfg = ROLLS_BACK_ONCE
    full = RunPlan(mode="full", out_dir=tmp_path / "run", decode_sentences=0)
    ckpts = tmp_path / "run" / "checkpoints"
    with loader_lets_through():
        result = train(cfg, run_data, device=CPU, plan=full)
        (rec,) = result.recoveries
        assert rec.rolled_back_to == 2 and result.verdict is not None and result.verdict.step > 6, result
        assert not (ckpts / checkpoint_name(2)).exists() and rec.restart is not None
        first, last = diagnose_run(cfg, run_data, result, device=CPU)
        for d in (first.diagnosis, last.diagnosis):
            assert d.reproduced and d.cause is Cause.DATA and d.items == (victim,), d.line()
        assert last.diagnosis.step == result.verdict.step
        assert "replayed from recovery 1's rollback (to step 2, the data" in last.diagnosis.evidence
        # the copies are removed once diagnosed; a replay whose checkpoint is gone says so, names nothing
        assert not (ckpts / REPLAY_DIR).exists()
        _, gone = diagnose_run(cfg, run_data, result, device=CPU)
        d = gone.diagnosis
        assert d.cause is Cause.UNKNOWN and not d.reproduced and math.isnan(d.replay_s)
        assert d.evidence.startswith(
            "not replayed: recovery 1 had rolled the run back to step 2 at x0.5 the schedule's lr, "
            f"and checkpoint {rec.restart.checkpoint} is missing; the guard said: loss is nan"
        )

        # stopped before the clip comes back, then resumed: the checkpoint it resumes from was written
        # after the rollback, and its divergence is replayed from there
        shutil.rmtree(tmp_path / "run")
        resumed = _stopped_after_the_rollback(run_data, full)
        result = train(cfg, run_data, device=CPU, plan=resumed)
        assert result.earlier_recoveries == 1 and result.resumed is not None and len(result.recoveries) == 1
        (only,) = diagnose_run(cfg, run_data, result, device=CPU)  # this process's own max_recoveries
        d = only.diagnosis
        assert only.recovery == 2 and d.step == result.recoveries[0].step
        assert d.reproduced and d.cause is Cause.DATA and d.items == (victim,), d.line()
        assert d.evidence.endswith(
            "replayed from the checkpoint it resumed from (step 6, written after 1 recovery, x0.5 the "
            "schedule's lr)"
        )


def _with_nan_clip(data: TrainData, tmp_path: Path) -> tuple[TrainData, str]:
    """A copy of the training set whose item in the batch of step 3 has NaN audio, and that item's id."""
    folder = tmp_path / "train"
    shutil.copytree(data.train_dir, folder)
    lengths = [ex.mel.shape[0] for ex in data.train.items]
    batch = BucketBatchSampler(lengths, batch_size=BASE.batch_size, seed=BASE.seed).batches(0)[2]
    victim = data.train[batch[0]].id
    corrupt_clip(folder / "wavs" / f"{victim}.wav", "nan")
    with loader_lets_through():
        train_set = load_dataset(folder, data.data_cfg, cache_dir=tmp_path / "cache")
    return dataclasses.replace(data, train=train_set, train_dir=folder), victim


def _stopped_after_the_rollback(run_data: TrainData, full: RunPlan) -> RunPlan:
    """Train `full` to step 6 (one rollback past the NaN clip at step 3, stopped before the next epoch
    brings it back) and return the plan that resumes it. Call inside `loader_lets_through()`."""
    early = train(with_overrides(ROLLS_BACK_ONCE, max_steps=6), run_data, device=CPU, plan=full)
    assert len(early.recoveries) == 1 and early.verdict is None, early
    return dataclasses.replace(full, resume=True)


def test_a_healthy_full_training_replays_nothing_and_a_resumed_one_without_its_start_says_so():
    healthy = TrainResult(
        steps=5, verdict=None, evals=(), recoveries=(), stopped_by_callback=False, summary=summarize([], 0)
    )
    assert diagnose_run(BASE, None, healthy, device=CPU) == ()  # type: ignore[arg-type]  (never read)
    v = Verdict(kind="nonfinite", step=9, detail="loss is nan at step 9")
    resumed = TrainResult(
        steps=9,
        verdict=v,
        evals=(),
        recoveries=(),
        stopped_by_callback=False,
        summary=summarize([], 0),
        earlier_recoveries=2,
    )
    (only,) = diagnose_run(BASE, None, resumed, device=CPU)  # type: ignore[arg-type]
    d = only.diagnosis
    assert d.cause is Cause.UNKNOWN and not d.reproduced
    assert d.evidence == (
        "not replayed: the run resumed from a checkpoint written after 2 recoveries, and no record of the "
        "state it went on from was kept; the guard said: loss is nan at step 9"
    )


def test_the_trainer_cli_prints_and_keeps_each_divergences_diagnosis(
    corpus_paths: CorpusPaths,  # noqa: F811
    train_data,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
):
    out = tmp_path / "run"
    argv = ["--model-size", "tiny", "--batch-size", "4", "--max-steps", "12", "--device", "cpu"]
    argv += ["--out", str(out)]
    argv += ["--train-data", str(corpus_paths.train), "--val-data", str(corpus_paths.eval)]
    hot = tmp_path / "hot.json"
    hot.write_text(
        '{"lr": 0.1, "warmup_steps": 0, "scheduler": "constant", "grad_clip": 0, "max_recoveries": 0, '
        '"guards": {"ceiling_min_steps": 0}}',
        encoding="utf-8",
    )
    assert cli([*argv, "--preset", str(hot)]) == 1
    err = capsys.readouterr().err
    (found,) = read_diagnoses(out)
    d = found.diagnosis
    assert found.recovery is None and d.cause is Cause.LR_EDGE and d.reproduced, d.line()
    assert f"why it diverged (ended the run): step {d.step}: lr-edge:" in " ".join(err.split())
    assert err.strip().splitlines()[-1].startswith("does not speak")  # the speech line stays the last
    # a fresh run in the same folder does not keep the earlier run's diagnoses
    healthy = tmp_path / "calm.json"
    healthy.write_text('{"max_recoveries": 0}', encoding="utf-8")
    assert cli([*argv, "--max-steps", "2", "--preset", str(healthy)]) == 0
    assert not (out / DIAGNOSES_FILE).exists() and read_diagnoses(out) == ()


def test_a_resumed_run_that_never_diverges_again_removes_the_checkpoint_kept_for_a_replay(
    train_data,  # noqa: F811
    tmp_path: Path,
):
    # a run that rolled back once (the NaN clip at step 3) and stopped at step 6; resumed to step 8, before
    # the next epoch brings the clip back: the checkpoint it resumed from was kept for a replay that never
    # comes, and the trainer's closing diagnosis (the one the CLI runs) removes it
    run_data, _ = _with_nan_clip(train_data, tmp_path)
    full = RunPlan(mode="full", out_dir=tmp_path / "run", decode_sentences=0)
    with loader_lets_through():
        resumed = _stopped_after_the_rollback(run_data, full)
        result = train(with_overrides(ROLLS_BACK_ONCE, max_steps=8), run_data, device=CPU, plan=resumed)
    assert result.verdict is None and not result.recoveries and result.resumed is not None, result
    kept = result.resumed.checkpoint
    assert kept is not None and kept.exists() and kept.parent.name == REPLAY_DIR
    why_diverged(ROLLS_BACK_ONCE, run_data, result, CPU, Console(quiet=True), tmp_path / "run")
    assert not kept.exists() and not kept.with_suffix(".json").exists()
    assert not (tmp_path / "run" / DIAGNOSES_FILE).exists()
