"""Export: the best feasible trial becomes a preset file that `python -m trainer --preset` accepts.

A quick CPU trial is too short for the tiny model to align and stop its decode, so the feasible trial
here is a hand-recorded one (like the pruner tests' hand-written values) in a real SQLite study; what
is under test is the export and the trainer's acceptance of its file, not a search result.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna

import search
from common.cli import run_cli
from space.stability import distributions, preset_params
from studies.record_keys import (
    C_DIVERGED,
    C_NO_STOP,
    C_UNALIGNED,
    DECODE_RATIO,
    DECODE_STOP_RATE,
    LAST_STEP,
    PROMOTED,
    RUNG,
    SPEAKS,
)
from studies.registry import get_study
from trainer.cli import build_parser, config_from_args
from trainer.presets import PRESETS

STUDY = "stability-quick"


def record(
    study: optuna.Study, params: dict, value: float, constraints: dict[str, float], *, speaks: bool = True
) -> None:
    """A finished trial; the quick study has a speech rung, so it ended there, speaking or not."""
    at_rung = {
        RUNG: 1,
        PROMOTED: True,
        LAST_STEP: 2470,
        DECODE_STOP_RATE: 1.0,
        DECODE_RATIO: 0.4 if speaks else 0.8,
        SPEAKS: speaks,
    }
    study.add_trial(
        optuna.trial.create_trial(
            params=params,
            distributions=distributions(get_study(STUDY).space),
            value=value,
            constraints=constraints,
            user_attrs=at_rung,
        )
    )


def test_best_feasible_trial_exports_a_preset_the_trainer_accepts(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    (runs / STUDY).mkdir(parents=True)
    storage = f"sqlite:///{runs / STUDY / 'study.db'}"
    study = optuna.create_study(study_name=STUDY, storage=storage)
    spec = get_study(STUDY).space
    feasible = {C_DIVERGED: -1.0, C_UNALIGNED: -0.1, C_NO_STOP: 0.0}
    good = {**preset_params(dict(PRESETS["basic"]), spec), "lr": 2e-3, "warmup_steps": 100}
    record(study, good, 1.5, feasible)
    record(study, {**good, "lr": 3e-3}, 1.2, {**feasible, C_NO_STOP: 0.7})  # lower mel, infeasible
    record(study, {**good, "lr": 1e-3}, 1.8, feasible)

    out = tmp_path / "best.json"
    assert run_cli(search.main, ["--study", STUDY, "--runs-dir", str(runs), "--export-preset", str(out)]) == 0
    exported = json.loads(out.read_text())
    assert exported["lr"] == 2e-3  # the best *feasible* trial, not the lowest mel
    assert exported["warmup_steps"] == round(100 / spec.warmup_scale)  # back on the seed's scale
    assert exported["provenance"]["study"] == STUDY and exported["provenance"]["trial"] == 0
    # One alignment form from trial to export; the space's alignment weight weights that form's loss.
    assert exported["alignment_loss"] == exported["provenance"]["alignment_loss_in_study"] == "prior"
    assert exported["forward_sum_weight"] == good["kl_weight"]
    assert exported["provenance"]["speaks_at_step"] == 2470  # where it spoke: its long rung's last eval

    args = build_parser().parse_args(["--preset", str(out), "--max-steps", "2"])
    cfg = config_from_args(args)
    assert cfg.lr == 2e-3 and cfg.model_size == "tiny" and cfg.max_steps == 2
    # the decoder's frames a step as the trials trained (the study's, not the model size's own)
    assert cfg.reduction_factor == exported["reduction_factor"] == get_study(STUDY).reduction_factor
    for name, value in get_study(STUDY).form_settings:  # and the form's settings (the loss's fade...)
        assert getattr(cfg, name) == exported[name] == value


def test_export_without_a_feasible_trial_says_why(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    (runs / STUDY).mkdir(parents=True)
    study = optuna.create_study(study_name=STUDY, storage=f"sqlite:///{runs / STUDY / 'study.db'}")
    params = preset_params(dict(PRESETS["basic"]), get_study(STUDY).space)
    record(study, params, 3.3, {C_DIVERGED: -1.0, C_UNALIGNED: 0.1, C_NO_STOP: 0.7})
    out = tmp_path / "best.json"
    assert run_cli(search.main, ["--study", STUDY, "--runs-dir", str(runs), "--export-preset", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no feasible finished trial" in err[0]
    assert not out.exists()


def test_export_without_a_trial_that_speaks_at_the_long_rung_says_so(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    (runs / STUDY).mkdir(parents=True)
    study = optuna.create_study(study_name=STUDY, storage=f"sqlite:///{runs / STUDY / 'study.db'}")
    params = {**preset_params(dict(PRESETS["basic"]), get_study(STUDY).space), "lr": 2e-3}
    record(study, params, 1.5, {C_DIVERGED: -1.0, C_UNALIGNED: -0.1, C_NO_STOP: 0.0}, speaks=False)
    out = tmp_path / "best.json"
    assert run_cli(search.main, ["--study", STUDY, "--runs-dir", str(runs), "--export-preset", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no trial speaks at the long rung" in err[0]
    # What to do is something that can help: a resumed study with twice the trials promotes more.
    assert "--trials 3 goes on from here, up to 1 promoted" in err[0], err[0]
    assert not out.exists()
