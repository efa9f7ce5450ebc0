"""The diagnosis of a divergence: the cause-deciding rules on hand-written evidence, then the positive
controls (known faults injected into the real trainer, trainer/faults.py) on the small real corpus."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import torch
from corpus_fixture import cache_env, corpus_paths, train_data  # noqa: F401  (pytest fixtures)

from studies.evidence import diagnoses, lr_probe, margin
from studies.evidence.lr_probe import ProbeResult
from studies.evidence.validate import Validation, ValidationRun
from studies.execution.runs import RunSetup, run_config
from studies.paths import StudyPaths
from studies.record import Divergence, TrialRecord, load_records
from studies.registry import get_study
from studies.scoring import record_of
from trainer import faults
from trainer.config import with_overrides
from trainer.diagnosis import Cause, Diagnosis, Edge, Evidence, ModuleEvent, TermValues, decide
from trainer.diagnosis_controls import BASE, CONTROLS, NO_DECODE, run_control
from trainer.outcome import Outcome
from tts_model.model import Attention

NAN, INF = math.nan, math.inf


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def evidence(**changes) -> Evidence:
    """A reproduced nonfinite divergence at step 7 whose evidence points nowhere, changed by ``changes``."""
    base = {
        "step": 7,
        "kind": "nonfinite",
        "reproduced": True,
        "lr": 1e-3,
        "lower_lr": 1e-3 / 16,
        "lower_lr_survived": False,
        "items": ("a", "b"),
        "batch_finite": False,
        "other_batches": 3,
        "other_batches_finite": 1,
        "forward_finite": False,
        "terms": (
            TermValues("mel", 3.0, NAN),
            TermValues("align (KL)", 0.5, NAN),
            TermValues("stop", 0.3, NAN),
        ),
    }
    return Evidence(**{**base, **changes})


# -- the rules -----------------------------------------------------------------------------------------
def test_nothing_points_anywhere_is_unknown_said_plainly():
    d = decide(evidence())
    assert d.cause is Cause.UNKNOWN and not d.named
    assert d.evidence.startswith("the evidence points to no cause")
    assert "1 of 3 other batches finite" in d.evidence and "diverged too" in d.evidence


def test_bad_features_are_data_and_win_over_everything_else():
    d = decide(
        evidence(
            bad_items={"b": "12 of 800 feature values are NaN or Inf"},
            fp16=True,
            fp32_finite=True,
            first_module=ModuleEvent("decoder.0.ff.0", 7, INF),
            lower_lr_survived=True,
        )
    )
    assert d.cause is Cause.DATA and d.items == ("b",) and "NaN" in d.evidence


def test_fp16_overflow_needs_fp16_a_finite_fp32_step_and_a_module():
    found = evidence(fp16=True, fp32_finite=True, first_module=ModuleEvent("decoder.0.cross_attn", 7, INF))
    d = decide(found)
    assert d.cause is Cause.FP16_OVERFLOW and d.module == "decoder.0.cross_attn"
    # the same module event in an fp32 run, or with the fp32 step broken too, is not an fp16 overflow
    assert (
        decide(evidence(fp16=False, fp32_finite=True, first_module=found.first_module)).cause is Cause.UNKNOWN
    )
    assert (
        decide(evidence(fp16=True, fp32_finite=False, first_module=found.first_module)).cause is Cause.UNKNOWN
    )


def test_gradients_that_overflow_fp16_at_every_scale_are_an_fp16_overflow_without_a_module():
    finite = tuple(TermValues(n, 1.0, 1.0) for n in ("mel", "align (KL)", "stop"))
    found = evidence(fp16=True, fp32_finite=True, forward_finite=True, skipped_in_a_row=17, terms=finite)
    d = decide(found)
    assert d.cause is Cause.FP16_OVERFLOW and d.module is None and "skipped 17 steps in a row" in d.evidence
    assert (
        decide(
            evidence(fp16=True, fp32_finite=False, forward_finite=True, skipped_in_a_row=17, terms=finite)
        ).cause
        is Cause.UNKNOWN
    )


def test_a_term_that_breaks_alone_over_a_finite_forward_is_the_loss_term():
    terms = (
        TermValues("mel", 3.0, 2.9),
        TermValues("align (forward-sum)", 2.0, INF),
        TermValues("stop", 0.3, 0.3),
    )
    d = decide(evidence(forward_finite=True, terms=terms, breaking_items=("b",)))
    assert d.cause is Cause.LOSS_TERM and d.term == "align (forward-sum)" and d.items == ("b",)
    assert "2 -> inf" in d.evidence
    # a finite jump of more than TERM_JUMP x counts too; every term broken at once is no single term
    jumped = (TermValues("mel", 3.0, 2.9), TermValues("stop", 0.01, 5.0))
    assert decide(evidence(forward_finite=True, terms=jumped)).term == "stop"
    all_broken = tuple(TermValues(t.name, 1.0, NAN) for t in terms)
    assert decide(evidence(forward_finite=True, terms=all_broken)).cause is Cause.UNKNOWN
    # a non-finite forward: the term only passes the forward's NaN on
    assert decide(evidence(forward_finite=False, terms=terms)).cause is Cause.UNKNOWN


def test_lr_edge_by_the_lower_lr_replay_or_by_the_measured_edge():
    d = decide(evidence(lower_lr_survived=True))
    assert d.cause is Cause.LR_EDGE and "replayed at lr 6.25e-05" in d.evidence and d.edge_lr is None
    on_edge = decide(evidence(lr=0.02, edge=Edge(0.03, "lr probe")))
    assert on_edge.cause is Cause.LR_EDGE and on_edge.edge_lr == 0.03 and "lr probe" in on_edge.evidence
    far_below = decide(evidence(lr=0.001, edge=Edge(0.03, "lr probe")))
    assert far_below.cause is Cause.UNKNOWN


def test_a_batch_that_breaks_alone_is_data_naming_the_item():
    d = decide(evidence(other_batches_finite=3, breaking_items=("b",)))
    assert d.cause is Cause.DATA and d.items == ("b",) and "3 other batches stay finite" in d.evidence
    # other batches breaking too, or no single item to blame: not the data's fault
    assert decide(evidence(other_batches_finite=2, breaking_items=("b",))).cause is Cause.UNKNOWN
    assert decide(evidence(other_batches_finite=3)).cause is Cause.UNKNOWN


def test_a_replay_that_did_not_reproduce_says_so():
    d = decide(evidence(reproduced=False, lower_lr_survived=True))
    assert not d.reproduced and "did not diverge at the same step" in d.evidence


def test_the_record_round_trips_through_a_user_attribute():
    d = Diagnosis(step=3, cause=Cause.DATA, evidence="x", items=("a",), lr=1e-3, replay_s=1.5)
    assert Diagnosis.from_attr(d.to_attr()) == d
    nan = Diagnosis(step=1, cause=Cause.UNKNOWN, evidence="y", lr=NAN)
    back = Diagnosis.from_attr(nan.to_attr())
    assert back.lr is None and math.isnan(back.replay_s)
    assert Diagnosis.from_attr({"cause": "a word from later"}).cause is Cause.UNKNOWN


def test_fault_switches_restore_the_real_code():
    real = Attention.forward
    with faults.double_mask():
        assert Attention.forward is not real
    assert Attention.forward is real


# -- the positive controls: real runs, real faults ----------------------------------------------------
@pytest.mark.parametrize("name", CONTROLS)
def test_each_positive_control_is_diagnosed_right(name: str, train_data, tmp_path: Path):  # noqa: F811
    result = run_control(name, train_data, tmp_path)
    if name == "no-fault":
        assert result.diverged_at is None and result.diagnosis is None
        assert (
            result.forced is not None
            and result.forced.cause is Cause.UNKNOWN
            and not result.forced.reproduced
        )
        return
    d = result.diagnosis
    assert d is not None and result.diverged_at is not None
    assert d.reproduced, f"the replay did not reproduce the run: {d.line()}"
    assert result.right, f"{name}: named {d.line()}, expected {result.expected} {result.target}"


# -- stored with the trial, shown in the report and the summary --------------------------------------
def test_a_diverged_study_run_carries_its_diagnosis_into_the_trial_record(train_data, tmp_path: Path):  # noqa: F811
    setup = RunSetup(
        get_study("stability-smoke"), train_data, torch.device("cpu"), StudyPaths(tmp_path, "s"), 0
    )
    cfg = with_overrides(
        BASE, lr=0.1, warmup_steps=0, scheduler="constant", grad_clip=0.0, guards={"ceiling_min_steps": 0}
    )
    run = run_config(
        setup, cfg, "s/trial-0", plan=NO_DECODE, with_diagnosis=True, edge=Edge(0.05, "lr probe")
    )
    d = run.verdict.diagnosis
    assert d is not None and d.cause is Cause.LR_EDGE and d.reproduced
    assert "lr probe" in d.evidence  # the study's measured edge is named beside the lower-lr replay
    healthy = run_config(setup, BASE, "s/trial-1", plan=NO_DECODE, with_diagnosis=True)
    assert healthy.verdict.diagnosis is None
    # a run that asks for no diagnosis (the transfer check's long runs) is not replayed
    assert run_config(setup, cfg, "s/rung-0", plan=NO_DECODE).verdict.diagnosis is None

    record = record_of(run.verdict, run.result.summary)
    study = optuna.create_study()
    for r in (record, record_of(healthy.verdict, healthy.result.summary)):
        study.add_trial(
            optuna.trial.create_trial(
                state=r.state,
                value=r.value,
                user_attrs=r.to_attrs(),
                constraints=dict(r.constraints),
            )
        )
    stored = load_records(study)
    assert stored[0].diagnosis == d and stored[1].diagnosis is None
    why = diagnoses.why_diverged(stored)
    assert why.rows == (("trial 0", str(d.step), "lr-edge", d.evidence),)
    assert diagnoses.cause_lines(stored) == ["diverged from the lr edge (lr-edge): 1 trial (0)"]


def test_cause_lines_count_each_class_and_the_undiagnosed():
    def diverged(n: int, cause: Cause | None) -> TrialRecord:
        d = None if cause is None else Diagnosis(step=3, cause=cause, evidence="e")
        return TrialRecord(
            number=n,
            state=optuna.trial.TrialState.PRUNED,
            verdict=Outcome.NONFINITE,
            divergence=Divergence(kind="nonfinite", step=3, detail="loss is nan at step 3"),
            diagnosis=d,
        )

    records = [
        diverged(0, Cause.DATA),
        diverged(1, Cause.DATA),
        diverged(2, None),
        diverged(3, Cause.UNKNOWN),
    ]
    assert diagnoses.cause_lines(records) == [
        "diverged from a data item (data): 2 trials (0, 1)",
        "diverged from not diagnosed (no replay recorded) (not diagnosed): 1 trial (2)",
        "diverged from no cause the evidence points to (unknown): 1 trial (3)",
    ]
    rows = diagnoses.why_diverged(records).rows
    assert rows[2][2] == "not diagnosed" and "loss is nan at step 3" in rows[2][3]


def test_a_validation_seed_keeps_its_diagnosis_and_the_report_table_lists_it():
    d = Diagnosis(step=9, cause=Cause.FP16_OVERFLOW, evidence="e", module="decoder.0.cross_attn")
    run = ValidationRun(
        seed=1,
        run_id="v/1",
        verdict=Outcome.NONFINITE,
        steps_run=9,
        divergence_step=9,
        detail="x",
        diagnosis=d,
    )
    assert ValidationRun.from_attr(run.to_attr()) == run
    old = ValidationRun(
        seed=2, run_id="v/2", verdict=Outcome.EXPLOSION, steps_run=5, divergence_step=5, detail="y"
    )
    v = Validation(name="basic", trial=None, params={}, steps=10, runs=(run, old))
    rows = diagnoses.why_diverged([], {"basic": v}).rows
    assert rows == (
        ("validation basic, seed 1", "9", "fp16-overflow (decoder.0.cross_attn)", "e"),
        ("validation basic, seed 2", "5", "not diagnosed", "no diagnosis stored; the guard said: y"),
    )


def probe_fields(*, divergence_lr: float) -> dict:
    """A stored lr probe that diverged at step 40 (``ProbeResult``'s fields, no diagnosis)."""
    return {
        "steps": 50,
        "steps_run": 40,
        "start_lr": 1e-7,
        "end_lr": 10.0,
        "diverged": True,
        "verdict": "explosion",
        "divergence_step": 40,
        "divergence_lr": divergence_lr,
        "detail": "x",
        "min_loss_lr": 0.01,
        "grad_clip": 1.0,
        "mel_weight": 1.0,
        "kl_weight": 0.5,
    }


def test_the_lr_probe_keeps_its_diagnosis_and_old_probes_still_load():
    d = Diagnosis(step=40, cause=Cause.LR_EDGE, evidence="lr 2 at step 40: ...", lr=2.0)
    fields = probe_fields(divergence_lr=2.0)
    probe = ProbeResult(**fields, diagnosis=d)
    assert ProbeResult.from_attr(probe.to_attr()) == probe
    assert ProbeResult.from_attr(fields).diagnosis is None  # stored before the diagnosis existed
    assert diagnoses.why_diverged([], None, probe).rows == (("lr probe", "40", "lr-edge", d.evidence),)


def test_the_measured_edge_is_the_lowest_lr_the_study_saw_break():
    study = optuna.create_study()
    assert diagnoses.measured_edge(study) is None
    fields = probe_fields(divergence_lr=0.4)
    lr_probe.store(study, ProbeResult(**fields))
    assert diagnoses.measured_edge(study) == Edge(0.4, "lr probe")
    rungs = (
        margin.Rung(multiplier=8.0, lr=0.008, outcome=Outcome.STABLE, steps_run=50),
        margin.Rung(multiplier=16.0, lr=0.016, outcome=Outcome.EXPLOSION, steps_run=20, divergence_step=20),
    )
    margin.store(study, margin.Margin(name="basic", trial=None, base_lr=1e-3, steps=50, rungs=rungs))
    assert diagnoses.measured_edge(study) == Edge(0.016, "margin of basic")
