"""A trial that runs out of device memory is an outcome, not a crash: the study goes on and says so.

A real smoke study in this process; the first trial's training forward raises the error CUDA raises
(constructible on a CPU) at its third step. That trial must end FAIL with its reason, step and the
size that failed in its attributes, never be retried, and the study must still reach N finished.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

import search
from common.cli import run_cli
from studies.record import load_records
from studies.record_keys import OUT_OF_MEMORY
from tests.corpus_fixture import cache_env  # noqa: F401  (session fixture)
from tests.test_report import STUDY, data_flags, short_corpus
from trainer.judge import Outcome
from tts_model.model import TransformerTTS

MESSAGE = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.11 GiB total capacity)"


def test_an_out_of_memory_trial_is_recorded_and_the_study_goes_on(
    tmp_path: Path,
    cache_env: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = TransformerTTS.forward
    calls = {"train": 0}

    def forward(self, *args, **kwargs):
        if self.training:
            calls["train"] += 1
            if calls["train"] == 3:  # the first trial's third step, once
                raise torch.cuda.OutOfMemoryError(MESSAGE + "\nOf the allocated memory ...")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TransformerTTS, "forward", forward)
    paths = short_corpus(tmp_path)
    runs = tmp_path / "runs"
    argv = ["--study", STUDY, "--runs-dir", str(runs), "--trials", "3", *data_flags(paths)]
    assert run_cli(search.main, argv) == 0
    err = capsys.readouterr().err
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{runs / STUDY / 'study.db'}")
    records = load_records(study)
    (oom,) = [r for r in records if r.outcome == Outcome.OOM]
    assert oom.number == 0 and oom.failed_by == OUT_OF_MEMORY
    assert (oom.oom_step, oom.oom_detail) == (3, MESSAGE)
    assert sum(r.finished for r in records) == 3 and all(r.retry_of != 0 for r in records)
    assert f"out of memory (not retried): trial 0 at step 3: {MESSAGE}" in err
