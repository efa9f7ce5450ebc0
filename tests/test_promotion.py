"""The speech rung: the promotion rule on hand-made screens, a run that ends at a rung, the record, the
rank agreement, and a real small study whose best screens go on to the long rung in the same trial."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from studies.evidence.rung_agreement import rung_agreement
from studies.execution.launch import SearchRun, run_search
from studies.execution.storage import default_storage_url
from studies.paths import trial_run
from studies.presets_seed import enqueue_presets
from studies.promotion import promote
from studies.ranking import screen_rank
from studies.record import DecodeFacts, TrialRecord, load_records
from studies.registry import ScoringSpec, SpeechRung, get_study
from studies.rung_facts import RungFacts
from studies.trial_writes import write_record
from tests.corpus_fixture import cache_env, corpus_paths, subset, train_data  # noqa: F401  (fixtures)
from tests.test_report import short_corpus
from trainer.checkpoints import checkpoint_name
from trainer.config import with_overrides
from trainer.data import TrainData
from trainer.hooks import RunHooks
from trainer.judge import Outcome, judge
from trainer.loop import RunPlan, train
from trainer.presets import preset
from trainer.results import StepMetrics
from trainer.schedules import lr_factor
from trainer.telemetry import read_run, step_series

RUNG = SpeechRung(horizon=1000, eta=3, min_peers=3)


def screen(val: float, verdict: str = Outcome.STABLE, speaks: bool = False) -> RungFacts:
    return RungFacts(step=300, val_mel=val, verdict=verdict, decode_ratio=0.9, speaks=speaks)


def test_the_top_third_of_aligned_screens_go_on_once_there_are_peers() -> None:
    peers = [screen(2.0), screen(2.5), screen(3.0)]
    assert not promote(screen(1.0), peers[:2], RUNG, promoted_so_far=0, planned=10)  # too few peers yet
    # best of 4: floor(4/3) = 1 goes on
    assert promote(screen(1.0), peers, RUNG, promoted_so_far=0, planned=10)
    assert not promote(screen(2.2), peers, RUNG, promoted_so_far=0, planned=10)  # second of 4
    assert not promote(screen(0.5, verdict=Outcome.UNALIGNED), peers, RUNG, promoted_so_far=0, planned=10)
    # A decode that does not stop yet may stop at the long rung; a feasible screen still ranks above it.
    silent = [
        screen(2.0, verdict=Outcome.NO_STOP),
        screen(2.5, verdict=Outcome.UNALIGNED),
        screen(3.0, verdict=Outcome.NO_STOP),
    ]
    assert promote(screen(1.5, verdict=Outcome.NO_STOP), silent, RUNG, promoted_so_far=0, planned=10)
    assert not promote(
        screen(1.5, verdict=Outcome.NO_STOP), [screen(2.9), *silent[1:]], RUNG, promoted_so_far=0, planned=10
    )
    # Unaligned screens rank below aligned ones whatever their val mel (measured: forward-sum weights
    # 0.05-0.07 left trials unaligned at val mel 1.46-1.57, below the aligned ones' 1.69).
    unaligned = [
        screen(1.0, verdict=Outcome.UNALIGNED),
        screen(1.1, verdict=Outcome.UNALIGNED),
        screen(1.2, verdict=Outcome.UNALIGNED),
    ]
    assert promote(screen(1.7, verdict=Outcome.NO_STOP), unaligned, RUNG, promoted_so_far=0, planned=10)
    more = [*peers, screen(2.6), screen(2.7)]
    # second of 6: floor(6/3) = 2 go on
    assert promote(screen(2.2), more, RUNG, promoted_so_far=0, planned=10)
    # The cap: at most 1/eta of the trials asked for, however many rank on top now.
    assert not promote(screen(1.0), peers, RUNG, promoted_so_far=1, planned=5)
    assert promote(screen(1.0), peers, RUNG, promoted_so_far=1, planned=6)
    # A screen that already speaks ranks above one with a lower val mel that does not.
    assert promote(
        screen(2.9, speaks=True), [screen(1.0), screen(1.1), screen(1.2)], RUNG, promoted_so_far=0, planned=10
    )


def test_a_run_not_promoted_ends_finished_at_its_rung(train_data: TrainData) -> None:  # noqa: F811
    data = subset(train_data, 8)
    cfg = with_overrides(preset("basic"), model_size="tiny", max_steps=10, eval_every=4, warmup_steps=2)
    seen: list[int] = []

    def stop_here(ev) -> bool:
        seen.append(ev.step)
        return False

    result = train(
        cfg,
        data,
        device=torch.device("cpu"),
        plan=RunPlan(rungs=(6,), decode_sentences=1),
        hooks=RunHooks(on_rung=stop_here, warn=lambda _: None),
    )
    assert seen == [6] and result.steps == 6 and not result.stopped_by_callback
    assert [e.step for e in result.evals] == [4, 6] and result.evals[-1].decode is not None
    assert judge(result, cfg.guards).outcome.finished  # judged at its rung, not pruned
    going_on = train(
        cfg,
        data,
        device=torch.device("cpu"),
        plan=RunPlan(rungs=(6,), decode_sentences=1),
        hooks=RunHooks(on_rung=lambda ev: True, warn=lambda _: None),
    )
    assert going_on.steps == 10 and [e.step for e in going_on.evals] == [4, 6, 8, 10]


def test_a_screen_resumed_later_trains_on_as_if_it_had_gone_on_at_once(
    train_data: TrainData,  # noqa: F811
    tmp_path: Path,
) -> None:
    """What a late promotion rests on: a run that stops at its rung leaves its state (one checkpoint,
    none before), and a run resumed from it trains only the steps past the rung and repeats, step for
    step, the run that went on at once."""
    data = subset(train_data, 8)
    cfg = with_overrides(preset("basic"), model_size="tiny", max_steps=10, eval_every=4, warmup_steps=2)

    def run(plan: RunPlan, go_on: bool, steps: list[StepMetrics]):
        hooks = RunHooks(on_rung=lambda ev: go_on, on_step=steps.append, warn=lambda _: None)
        return train(cfg, data, device=torch.device("cpu"), plan=plan, hooks=hooks)

    at_once: list[StepMetrics] = []
    went_on = run(RunPlan(rungs=(6,), decode_sentences=1), True, at_once)
    screen = run(RunPlan(rungs=(6,), decode_sentences=1, out_dir=tmp_path), False, [])
    assert screen.steps == 6
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt")) == [checkpoint_name(6)]
    later: list[StepMetrics] = []
    resumed = run(RunPlan(decode_sentences=1, out_dir=tmp_path, resume=True), True, later)
    assert [m.step for m in later] == [7, 8, 9, 10] and resumed.summary.steps == 4  # the screen not again
    assert [m.loss for m in later] == [m.loss for m in at_once[6:]]
    assert [e.step for e in resumed.evals] == [4, 6, 8, 10]
    assert [e.val_mel for e in resumed.evals] == [e.val_mel for e in went_on.evals]


def test_a_promoted_record_keeps_its_screen_through_storage() -> None:
    record = TrialRecord(
        state=TrialState.COMPLETE,
        value=1.2,
        verdict=Outcome.STABLE,
        constraints={"x": -1.0},
        screen=screen(2.0),
        promoted=True,
        rung=1,
        decode=DecodeFacts(stop_rate=1.0, length_ratio=1.0, dtw=1.0, ratio=0.4, walk=0.8, speaks=True),
    )
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    trial = study.ask()
    write_record(trial, record)
    study.tell(trial, record.value)
    (back,) = load_records(study)
    assert (back.screen, back.promoted, back.rung) == (record.screen, True, 1)


def test_rank_agreement_between_the_rungs() -> None:
    def promoted(n: int, screen_mel: float, long_mel: float, ratio: float) -> TrialRecord:
        decode = DecodeFacts(stop_rate=1.0, length_ratio=1.0, dtw=1.0, ratio=ratio, speaks=ratio < 0.5)
        facts = RungFacts(step=300, val_mel=screen_mel, verdict=Outcome.STABLE, decode_ratio=ratio + 0.4)
        return TrialRecord(
            number=n, state=TrialState.COMPLETE, value=long_mel, constraints={"x": -1.0},
            screen=facts, promoted=True, rung=1, decode=decode,
        )  # fmt: skip

    records = [promoted(0, 2.0, 1.0, 0.3), promoted(1, 2.5, 1.5, 0.5), promoted(2, 3.0, 1.4, 0.7)]
    records.append(
        TrialRecord(number=3, state=TrialState.COMPLETE, value=2.2, screen=screen(2.2), promoted=False)
    )
    a = rung_agreement(records)
    assert (a.screened, a.promoted, a.reached, a.speak) == (4, 3, 3, 1)
    assert a.rho_val_mel == pytest.approx(0.5) and a.rho_decode_ratio == pytest.approx(1.0)
    assert "3 of 4 screened trials promoted" in a.line()
    assert "val mel +0.50, decode ratio +1.00" in a.line()


def test_rank_agreement_says_why_it_ranks_nothing() -> None:
    def promoted(n: int, screen_ratio: float, long_ratio: float) -> TrialRecord:
        decode = DecodeFacts(stop_rate=1.0, length_ratio=1.0, dtw=1.0, ratio=long_ratio, speaks=False)
        facts = RungFacts(step=300, val_mel=2.0 + n, verdict=Outcome.STABLE, decode_ratio=screen_ratio)
        return TrialRecord(
            number=n, state=TrialState.COMPLETE, value=1.0 + n, constraints={"x": -1.0},
            screen=facts, promoted=True, rung=1, decode=decode,
        )  # fmt: skip

    # every screen's decode ran to the length cap: 3 pairs, but the screen side is all ties
    capped = rung_agreement([promoted(0, 1.0, 0.4), promoted(1, 1.0, 0.6), promoted(2, 1.0, 0.9)])
    assert capped.rho_val_mel == pytest.approx(1.0) and capped.rho_decode_ratio is None
    assert "decode ratio not computable (3 pairs, one side all ties)" in capped.line()
    two = rung_agreement([promoted(0, 0.9, 0.4), promoted(1, 1.0, 0.6)])
    assert "val mel not computable (fewer than 3 pairs)" in two.line()


def test_a_small_study_promotes_by_rank_and_resumes_each_screen(
    tmp_path: Path,
    cache_env: Path,  # noqa: F811
) -> None:
    """Screens of 20 steps past the warmup, a long rung of 30, eta 2 after 2 peers: with every finished
    screen feasible (loose thresholds, so the rule, not this tiny model, decides) and no pruning, the top
    half of all the screens goes on. The preset ``basic`` (trial 0, lr 1e-5) is the first screen to end
    and, by design, the second best: peer 1 (lr 1e-4) learns faster in 35 steps, peers 2 and 3 (lr 1e-6)
    slower. So at 3 screens only peer 1 goes on; at 4 the preset, passed over before, goes on too, after
    all its peers, and both resume their screen's saved state rather than train it again.

    Before promotion by rank, a screen went on only at its own end and only once it had 2 peers: the
    preset, first to end, could never go on (the arrival rule the old version of this test encoded)."""
    smoke = get_study("stability-smoke")
    loose = (
        *smoke.scoring.guard_overrides,
        ("collapse_diagonality", 0.0),
        ("decode_max_bad_fraction", 1.0),
        ("aligned_over_prior", -1.0),  # 35 steps at lr 1e-6 align nothing: the rule is under test here
    )
    study_def = dataclasses.replace(
        smoke,
        name="rung-check",
        presets=("basic",),
        pruner=dataclasses.replace(smoke.pruner, keep_fraction=1.0),  # every trial ends its screen
        speech_rung=SpeechRung(horizon=30, eta=2, min_peers=2, decode_sentences=3),
        scoring=ScoringSpec(decode_sentences=1, guard_overrides=(*loose, ("decode_length_ratio", 1e6))),
    )
    paths = short_corpus(tmp_path)
    runs = tmp_path / "runs"
    (runs / study_def.name).mkdir(parents=True)
    url = default_storage_url(study_def.name, runs)
    seeded = optuna.create_study(study_name=study_def.name, storage=url, direction="minimize")
    assert enqueue_presets(seeded, study_def.preset_values(), study_def.space) == ["basic"]
    basic = seeded.trials[0].system_attrs["fixed_params"]
    for lr in (1e-4, 1e-6, 1e-6):  # the peers, in the order they run: trials 1, 2, 3
        seeded.enqueue_trial({**basic, "lr": lr})
    torch.set_num_threads(1)
    run = SearchRun(
        study=study_def, url=url, trials=4, threads=1, device="cpu", runs_dir=runs,
        train_data=paths.train, val_data=paths.eval,
    )  # fmt: skip
    assert run_search(run, []) == 0  # 4 trials: the continuations are not among them
    study = optuna.load_study(study_name=study_def.name, storage=url)
    records = load_records(study)
    trials = {t.number: t for t in study.get_trials()}
    assert [r.number for r in records] == [0, 1, 2, 3], [(r.number, r.continues) for r in records]
    screened = [r for r in records if r.screen is not None]
    promoted = [r for r in screened if r.promoted]
    assert len(screened) == 4 and promoted, [(r.number, r.outcome, r.screen) for r in records]
    # The top floor(4 / 2) of all the screens by the one ranking went on, whatever order they ended in.
    top = sorted(screened, key=lambda r: (screen_rank(r.screen), r.number))[:2]
    assert {r.number for r in promoted} == {r.number for r in top}
    # By design: the preset ranks second, behind peer 1.
    assert [r.number for r in top] == [1, 0], [(r.number, r.screen.val_mel) for r in screened]
    preset = records[0]
    assert preset.preset == "basic" and preset.promoted
    # It ended first, was passed over at 3 screens, and went on after every peer had ended its screen.
    started = trials[preset.continued_as].datetime_start
    assert all(trials[n].datetime_complete <= started for n in (1, 2, 3))
    assert records[1].continued_as < preset.continued_as
    telemetry = runs / study_def.name / "telemetry.db"
    for r in promoted:
        assert r.rung == 1 and r.steps_run > r.screen.step  # one identity, trained on past its screen
        assert max(r.intermediate) > r.screen.step and min(r.intermediate) <= r.screen.step  # one curve
        # Resumed, not re-run: the long rung trained only the steps past its screen, once.
        assert r.resumed_from == r.screen.step
        assert read_run(telemetry, trial_run(study_def.name, r.number))["resumes"] == 1
        assert not (runs / study_def.name / "trials" / f"trial-{r.number}" / "checkpoints").exists()
        # Judged at the rung's end on the rung's own count of decoded sentences, not a screen's.
        assert r.decode is not None and len(r.decode.sentence_ratios) == 3, r.decode
        # Through its screen the study's warmup; past it, step for step, the lr its exported preset's
        # full training has there (the warmup on the seed's scale).
        lrs = dict(step_series(telemetry, trial_run(study_def.name, r.number), "lr"))
        warmup, peak = int(r.params["warmup_steps"]), float(r.params["lr"])
        full = round(warmup / study_def.space.warmup_scale)
        assert max(lrs) == r.steps_run and full > r.steps_run
        for step, lr in lrs.items():
            expected = lr_factor(step, warmup=warmup if step <= r.screen.step else full, scheduler="noam")
            assert lr == pytest.approx(peak * expected), (r.number, step)
    for r in screened:
        if not r.promoted:
            assert r.rung == 0 and r.steps_run == r.screen.step
            assert r.decode is not None and len(r.decode.sentence_ratios) == 1, r.decode
            # its state stays for a later promotion (a study resumed with more trials)
            ckpt = runs / study_def.name / "trials" / f"trial-{r.number}" / "checkpoints"
            assert (ckpt / checkpoint_name(r.screen.step)).exists()
            assert read_run(telemetry, trial_run(study_def.name, r.number))["resumes"] == 0
    a = rung_agreement(records)
    assert (a.screened, a.promoted, a.reached) == (4, 2, 2)
    assert "too few pairs because 2 of 4 aligned screens promoted" in a.line()
    # "Run more trials": resumed to 6, the cap is floor(6 / 2) = 3, and the third promotion goes to the
    # best screen not yet promoted, old or new, resuming its saved state.
    for _ in range(2):
        seeded.enqueue_trial({**basic, "lr": 1e-6})
    assert run_search(dataclasses.replace(run, trials=6), []) == 0
    records = load_records(optuna.load_study(study_name=study_def.name, storage=url))
    screened = [r for r in records if r.screen is not None]
    promoted = [r for r in screened if r.promoted]
    assert len(records) == len(screened) == 6, [r.number for r in records]
    assert len(promoted) == 3, [(r.number, r.promoted) for r in records]
    top = sorted(screened, key=lambda r: (screen_rank(r.screen), r.number))[:3]
    assert {r.number for r in promoted} == {r.number for r in top}
    third = next(r for r in promoted if r.number not in (0, 1))
    assert third.resumed_from == third.screen.step
    assert read_run(telemetry, trial_run(study_def.name, third.number))["resumes"] == 1


def test_the_one_ranking_orders_screens_as_the_promotion_rule_always_did() -> None:
    # The rule before the study had one ranking: feasible, then aligned, then speaking, then val mel.
    def before(s: RungFacts) -> tuple[bool, bool, bool, float]:
        aligned = s.verdict in (Outcome.STABLE, Outcome.NO_STOP)
        return (s.verdict != Outcome.STABLE, not aligned, not s.speaks, s.val_mel)

    screens = [
        RungFacts(step=300, val_mel=mel, verdict=verdict, speaks=speaks)
        for verdict in (Outcome.STABLE, Outcome.NO_STOP, Outcome.UNALIGNED)
        for speaks in (True, False)
        for mel in (1.0, 2.0, 3.0)
    ]
    assert sorted(screens, key=before) == sorted(screens, key=screen_rank)
