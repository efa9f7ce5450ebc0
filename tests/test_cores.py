"""The last trial left running takes the idle cores: the rule, and a real worker whose last trial does."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
import torch

from studies.execution.cores import Counts, is_alone
from studies.execution.launch import SearchRun, run_search
from studies.execution.storage import default_storage_url
from studies.record import load_records
from studies.registry import get_study
from tests.corpus_fixture import cache_env  # noqa: F401  (fixture)
from tests.test_report import short_corpus


@pytest.mark.parametrize(
    ("finished", "running", "waiting", "alone"),
    [
        (9, 1, 0, True),  # the last of 10 trials, the others done
        (8, 1, 0, False),  # a 10th trial is still to start: a peer will take it
        (8, 2, 0, False),  # a peer is training
        (9, 1, 1, False),  # a retry is queued: a peer will start it
        (12, 1, 0, True),  # a resumed study past its count (a retry of a stale trial)
    ],
)
def test_a_trial_is_alone_only_when_nothing_else_runs_or_will_start(
    finished: int, running: int, waiting: int, alone: bool
) -> None:
    assert is_alone(Counts(finished=finished, running=running, waiting=waiting), n_trials=10) is alone


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: nothing to take")
def test_a_worker_takes_the_cores_for_its_last_trial_only(
    tmp_path: Path,
    cache_env: Path,  # noqa: F811
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A local worker of a 2-worker search (threads shared out: 1 of 2 cores), alone on a 2-trial
    study: its first trial leaves a trial to start, so it keeps its share; its second is the last one
    running, so it takes the cores from its first eval, and gives them back when it ends."""
    study_def = get_study("stability-smoke")
    paths = short_corpus(tmp_path)
    runs = tmp_path / "runs"
    (runs / study_def.name).mkdir(parents=True)
    url = default_storage_url(study_def.name, runs)
    before = torch.get_num_threads()
    run = SearchRun(
        study=study_def, url=url, trials=2, workers=2, device="cpu", runs_dir=runs,
        train_data=paths.train, val_data=paths.eval, worker_index=0,
    )  # fmt: skip
    try:
        assert run_search(run, []) == 0
        cores = os.cpu_count()
        share = (cores or 1) // 2
        assert torch.get_num_threads() == share  # given back when the trial ended
    finally:
        torch.set_num_threads(before)
    err = capfd.readouterr().err
    numbers = [r.number for r in load_records(optuna.load_study(study_name=study_def.name, storage=url))]
    assert numbers == [0, 1]
    assert "trial 0: the only trial left running" not in err
    assert f"trial 1: the only trial left running: torch threads {share} -> {cores} from step 10" in err
