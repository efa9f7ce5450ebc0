"""A user's trainer, for real: guards sized to the trial, no prune at a trial's last eval, an export you can run.

The trainer is a script written into the test's folder (a user's ``train.py``): it prints its argv, a
metrics line per step (its gradient norm grows 1.5x a step from ``--explode-from``) and an eval every 10
steps (1.0, and ``--final`` at its last step). The search runs as ``search.py`` does, from that folder.
"""

from __future__ import annotations

import json
import math
import subprocess
import tomllib
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import search
from common.cli import run_cli
from studies.execution.inprocess import run_study
from studies.foreign import load_foreign_study
from studies.guard_waits import waits_line
from studies.pruner import PrunerSettings, StabilityPruner
from studies.record import TrialRecord, load_records
from studies.record_keys import MAX_STEPS
from studies.registry import get_study, make_pruner
from trainer.config import GuardConfig
from trainer.guards import check_explosion

optuna.logging.set_verbosity(optuna.logging.WARNING)

TRAIN = """\
import argparse, json, sys
p = argparse.ArgumentParser()
p.add_argument("--final", type=float, required=True)
p.add_argument("--explode-from", type=int, default=0)
p.add_argument("--steps", type=int, default=40)
a = p.parse_args()
print("argv " + json.dumps(sys.argv[1:]), flush=True)
for step in range(1, a.steps + 1):
    norm = 1.5 ** (step - a.explode_from) if a.explode_from and step >= a.explode_from else 1.0
    print(json.dumps({"step": step, "loss": 1.0 + 1.0 / step, "grad_norm": norm}), flush=True)
    if step % 10 == 0:
        print(json.dumps({"step": step, "metric": a.final if step == a.steps else 1.0}), flush=True)
"""
COMMAND = "python train.py --final {final} --explode-from {explode_from} --steps {steps}"
PARAMS = """
[params.final]
low = 0.4
high = 0.6
scale = "linear"

[params.explode_from]
low = 0
high = 50
scale = "int"
"""


def project(
    tmp_path: Path, name: str, presets: dict[str, tuple[float, int]], study: str = "", extra: str = ""
) -> Path:
    """The user's folder: train.py and a space file (``study``: its [study] lines) with these presets."""
    root = tmp_path / "proj"
    root.mkdir(exist_ok=True)
    (root / "train.py").write_text(TRAIN)
    tables = "".join(f"\n[presets.{n}]\nfinal = {f}\nexplode_from = {e}\n" for n, (f, e) in presets.items())
    path = root / f"{name}.toml"
    path.write_text(f"[study]\n{study}\n{PARAMS}{tables}{extra}")
    return path


def searched(space: Path, study: str, steps: int) -> list[TrialRecord]:
    command = COMMAND.replace("{steps}", str(steps))
    argv = ["--study", study, "--space", str(space), "--runs-dir", str(space.parent / "runs")]
    assert run_cli(search.main, [*argv, "--command", command]) == 0
    storage = f"sqlite:///{space.parent / 'runs' / study / 'study.db'}"
    return load_records(optuna.load_study(study_name=study, storage=storage))


# -- 1. guards sized to the trial ------------------------------------------------------------------------
def test_without_guards_a_300_step_study_stops_an_explosion_before_step_100(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    space = project(tmp_path, "boom", {"boom": (0.5, 20)}, "trials = 1\nsteps = 300")
    monkeypatch.chdir(space.parent)
    (boom,) = searched(space, "boom", 300)
    err = capsys.readouterr().err
    assert boom.outcome == "diverged:explosion" and boom.divergence is not None
    assert boom.divergence.step < 100, boom.divergence  # 31: norms grow 1.5x a step from step 20
    assert "guards: explosion and spike judge after step 30, the ceiling after step 40" in err
    assert "(sized to [study] steps = 300 where [guards] sets none)" in err


def test_the_waits_follow_study_steps_unless_guards_sets_them(tmp_path: Path) -> None:
    space = project(tmp_path, "w", {"a": (0.5, 0)}, "steps = 300", "\n[guards]\nspike_min_steps = 50\n")
    g = load_foreign_study(space, name="w", command=None).guards
    waits = (g.explosion_min_steps, g.spike_min_steps, g.ceiling_min_steps, g.collapse_min_steps)
    assert waits == (30, 50, 40, 150)  # stability-quick's waits for its 300 steps; [guards] wins
    space = project(tmp_path, "w", {"a": (0.5, 0)})
    unsized = load_foreign_study(space, name="w", command=None)
    assert unsized.guards == GuardConfig()  # no [study] steps: the defaults, and the line says so
    line = waits_line(unsized.guards, steps=None, warmup=None)
    assert "after step 100" in line and "[study] steps sizes them" in line


def test_a_huge_ratio_prints_in_scientific_notation() -> None:
    verdict = check_explosion(101, 3.7e87, [1.0] * 100, n_seen=100, cfg=GuardConfig())
    assert verdict is not None and "is 3.7e+87x the median" in verdict.detail, verdict


# -- 2. a trial at its last eval is judged, never pruned on its value -------------------------------------
def study_with_peers(values: dict[int, float], *, max_steps: int | None, pruner=None) -> optuna.Study:
    study = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(),
        pruner=pruner
        or StabilityPruner(
            PrunerSettings(n_startup_trials=0, n_min_peers=1, protect_stop_margin=None), warmup_param=None
        ),
    )
    attrs = {} if max_steps is None else {MAX_STEPS: max_steps}
    for _ in range(4):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.COMPLETE,
                value=values[max(values)],
                intermediate_values=values,
                user_attrs=attrs,
            )
        )
    return study


def asks(study: optuna.Study, values: dict[int, float], max_steps: int | None) -> bool:
    trial = study.ask()
    if max_steps is not None:
        trial.set_user_attr(MAX_STEPS, max_steps)
    for step, value in values.items():
        trial.report(value, step)
    return trial.should_prune()


@pytest.mark.parametrize("max_steps", [300, None])  # None: the length the COMPLETE trials ran
def test_a_trial_at_its_last_eval_is_not_pruned_on_its_value(max_steps: int | None) -> None:
    peers = {250: 0.0120, 300: 0.011868}
    study = study_with_peers(peers, max_steps=max_steps)
    assert not asks(study, {250: 0.0120, 300: 0.011869}, max_steps)  # 1e-6 behind at step 300 of 300
    assert asks(study, {250: 0.0121}, max_steps)  # behind before its end: pruned, as before
    assert asks(study, {250: 0.0120, 300: math.nan}, max_steps)  # a divergence at the end still prunes


def test_the_quick_study_prunes_as_before_except_at_a_trial_s_last_eval() -> None:
    """stability-quick: min_step 100, 4 finished trials, 3 peers; a trial's max_steps is its warmup + 300."""
    study = study_with_peers(
        {100: 2.0, 300: 1.5, 350: 1.4}, max_steps=350, pruner=make_pruner(get_study("stability-quick"))
    )
    assert asks(study, {100: 2.0, 300: 1.6}, 350)  # step 300 of 350, behind its peers: pruned
    assert not asks(study, {100: 2.0, 300: 1.5, 350: 1.41}, 350)  # step 350 of 350: judged instead
    assert asks(study, {100: 2.0, 300: 1.5, 350: 1.41}, 400)  # step 350 of 400, behind: pruned


def test_a_foreign_trial_that_ran_its_course_gets_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pruner = "\n[pruner]\nn_startup_trials = 1\nn_min_peers = 1\n"
    space = project(
        tmp_path, "last", {"ran": (0.5, 0), "close": (0.50001, 0)}, "trials = 2\nsteps = 40", pruner
    )
    monkeypatch.chdir(space.parent)
    by_preset = {r.preset: r for r in searched(space, "last", 40)}
    close = by_preset["close"]  # level with "ran" at every eval, 1e-5 behind at its last
    assert close.state == TrialState.COMPLETE and close.value == pytest.approx(0.50001), close
    assert close.outcome == "stable" and close.feasible


# -- 3. an export you can run -----------------------------------------------------------------------------
def exported(space: Path, study: str, path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    argv = ["--study", study, "--space", str(space), "--runs-dir", str(space.parent / "runs")]
    code = run_cli(search.main, [*argv, "--export-preset", str(path)])
    return code, capsys.readouterr().err


def test_the_extension_decides_the_export_and_the_script_runs_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    space = project(tmp_path, "ex", {"best": (0.5, 0), "worse": (0.55, 0)}, "trials = 2")
    monkeypatch.chdir(space.parent)
    searched(space, "ex", 20)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the export and the script run away from the search's folder

    code, err = exported(space, "ex", elsewhere / "best.json", capsys)
    assert code == 0 and json.loads((elsewhere / "best.json").read_text()) == {
        "final": 0.5,
        "explode_from": 0,
    }
    assert "run it: python train.py --final 0.5 --explode-from 0 --steps 20" in err
    code, _ = exported(space, "ex", elsewhere / "best.toml", capsys)
    assert code == 0 and tomllib.loads((elsewhere / "best.toml").read_text()) == {
        "final": 0.5,
        "explode_from": 0,
    }

    code, err = exported(space, "ex", elsewhere / "best.sh", capsys)
    assert code == 0 and f"run it: sh {elsewhere / 'best.sh'}" in err
    script = (elsewhere / "best.sh").read_text()
    assert f" {space.parent / 'train.py'} --final 0.5" in script, script
    done = subprocess.run(["sh", "best.sh", "--steps", "12"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    argv_line, *metrics = done.stdout.splitlines()
    assert json.loads(argv_line.removeprefix("argv ")) == [
        *["--final", "0.5", "--explode-from", "0", "--steps", "20", "--steps", "12"]
    ]
    assert json.loads(metrics[-1])["step"] == 12  # the passed-through --steps won

    code, err = exported(space, "ex", elsewhere / "best.txt", capsys)
    assert code == 2 and "unknown extension '.txt'" in err and len(err.strip().splitlines()) == 1
    assert not (elsewhere / "best.txt").exists()


def test_an_in_process_study_exports_json_and_refuses_a_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    space = project(tmp_path, "fn", {"best": (0.5, 0)}, "trials = 1")
    monkeypatch.chdir(space.parent)

    def train(params, reporter) -> None:
        for step in range(1, 21):
            reporter.step(loss=1.0 + 1.0 / step, grad_norm=1.0)
            if step % 10 == 0:
                reporter.eval(metric=params["final"])

    assert run_study(train, space=space, study="fn", trials=1) == 0
    code, err = exported(space, "fn", space.parent / "best.sh", capsys)
    assert code == 2 and "no command line to script" in err and not (space.parent / "best.sh").exists()
    code, err = exported(space, "fn", space.parent / "best.json", capsys)
    assert code == 0 and json.loads((space.parent / "best.json").read_text()) == {
        "final": 0.5,
        "explode_from": 0,
    }
