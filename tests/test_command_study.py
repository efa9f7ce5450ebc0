"""A study of a command line: real processes, real storage, the user's trainer a script under tests/.

``tests/byot_trainer.py`` stands in for a user's trainer: it prints a metrics line per step and, above
a given lr, explodes at a known step. The search runs as ``search.py`` does (``run_cli(search.main)``),
the trainer as a real child process. Checked: the guard stops it at that step and the process (and
the helper it started) is gone; a crash is FAIL with its last lines; a trainer that ignores SIGTERM is
killed after the grace period; a crashed, then fixed, trainer gets its presets judged by the rerun; a
config file's keys carry the params in and the export writes them back; the report draws a space
without a grad clip; bad flags are one line and exit 2 with nothing created.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import search
from common.cli import run_cli
from studies.record import TrialRecord, load_records
from studies.record_keys import C_DIVERGED, TRAINER_FAILED
from studies.scoring import DIVERGED_VIOLATION

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "tests" / "byot_space.toml"
TRAINER = "python tests/byot_trainer.py --lr {lr} --grad-clip {grad_clip} --warmup {warmup_steps}"
KNOWN_STEP = 30  # the step --diverge-at puts the explosion at

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(autouse=True)
def _at_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the command's paths are relative, as a user would write them


def search_argv(study: str, runs: Path, command: str | None, *extra: str, space: Path = SPACE) -> list[str]:
    argv = ["--study", study, "--space", str(space), "--runs-dir", str(runs), *extra]
    return argv + (["--command", command] if command is not None else [])


def records(runs: Path, study: str) -> list[TrialRecord]:
    return load_records(optuna.load_study(study_name=study, storage=f"sqlite:///{runs / study / 'study.db'}"))


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def trace(runs: Path, study: str, number: int) -> dict[str, list[int]]:
    """What the trainer of a trial wrote to its trace: its pid, its helper's, the steps it printed."""
    out: dict[str, list[int]] = {"pid": [], "helper": [], "step": []}
    for line in (runs / study / "trials" / f"trial-{number}" / "trace.txt").read_text().splitlines():
        key, value = line.split()
        out[key].append(int(value))
    return out


def test_a_command_that_diverges_at_a_known_step_is_stopped_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    command = (
        f"{TRAINER} --diverge-above 0.3 --diverge-at {KNOWN_STEP} --steps 60 --sleep 0.05 --helper "
        "--trace {run_dir}/trace.txt"
    )
    assert run_cli(search.main, search_argv("smoke", runs, command, "--trials", "2")) == 0
    err = capsys.readouterr().err
    by_preset = {r.preset: r for r in records(runs, "smoke")}
    basic, enhanced = by_preset["basic"], by_preset["enhanced"]  # lr 0.01 and lr 1.0 (> 0.3: it explodes)

    # The guard fired on the line of the known step, and nothing after it was read.
    assert enhanced.state == TrialState.PRUNED and enhanced.outcome == "diverged:explosion"
    assert enhanced.divergence.step == KNOWN_STEP and enhanced.steps_run == KNOWN_STEP
    assert enhanced.constraints == {C_DIVERGED: DIVERGED_VIOLATION} and not enhanced.feasible
    assert enhanced.stopped_with == "SIGTERM" and enhanced.exit_code == -15 and enhanced.stop_s < 2.0
    seen = trace(runs, "smoke", enhanced.number)
    printed_after = max(seen["step"]) - KNOWN_STEP
    print(
        f"\nstopped {printed_after} metrics line(s) after step {KNOWN_STEP}; SIGTERM -> exit {enhanced.stop_s:.3f} s"
    )
    assert printed_after <= 1, seen["step"][-3:]  # within one metrics line of the step (50 ms apart)
    assert not alive(seen["pid"][0]) and not alive(seen["helper"][0])  # the process and its child: gone
    assert (
        f"trial {enhanced.number}: stopped the trainer (pid {seen['pid'][0]}) at step {KNOWN_STEP} with SIGTERM"
        in err
    )

    assert basic.state == TrialState.COMPLETE and basic.outcome == "stable" and basic.feasible
    assert basic.steps_run == 60 and basic.exit_code == 0 and basic.stopped_with is None
    assert basic.guards_off == ("ceiling", "collapse", "aligned", "decode")
    assert not alive(trace(runs, "smoke", basic.number)["helper"][0])  # left behind at its end: reaped
    assert "guards off for lack of a signal: ceiling (no mel; the spike guard watches the loss)" in err

    db = sqlite3.connect(runs / "smoke" / "telemetry.db")
    try:
        for r, status in ((enhanced, "diverged"), (basic, "finished")):
            run_id = f"smoke/trial-{r.number}"
            assert db.execute("select status from runs where run_id = ?", [run_id]).fetchone() == (status,)
            assert db.execute("select count(*) from steps where run_id = ?", [run_id]).fetchone() == (
                r.steps_run,
            )
    finally:
        db.close()


def test_a_crash_is_fail_with_its_last_lines_and_a_fixed_trainer_judges_the_presets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    crashing = f"{TRAINER} --crash-at 5"
    assert run_cli(search.main, search_argv("crash", runs, crashing, "--trials", "3")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(
        "error: your trainer failed 3 trials in a row (the last: trial 2: exited with code 1"
    )
    failed = [r for r in records(runs, "crash") if r.failed_by == TRAINER_FAILED]
    assert [r.number for r in failed] == [0, 1, 2] and all(r.state == TrialState.FAIL for r in failed)
    assert all(r.exit_code == 1 and "RuntimeError: CUDA error" in r.output_tail for r in failed)
    assert failed[0].fail_detail == "exited with code 1 without diverging"
    assert not [r for r in records(runs, "crash") if r.state == TrialState.WAITING]  # a crash is not retried

    fixed = TRAINER + " --steps 20"
    assert run_cli(search.main, search_argv("crash", runs, fixed, "--trials", "3")) == 0
    finished = [r for r in records(runs, "crash") if r.finished]
    assert len(finished) == 3 and {"basic", "enhanced"} <= {r.preset for r in finished}


def test_a_trainer_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    space = tmp_path / "space.toml"
    space.write_text(SPACE.read_text().replace("[study]\n", "[study]\ngrace_s = 1.0\n"))
    runs = tmp_path / "runs"
    command = (
        f"{TRAINER} --diverge-above 0.3 --steps 400 --ignore-term --helper --trace {{run_dir}}/trace.txt"
    )
    assert run_cli(search.main, search_argv("stubborn", runs, command, "--trials", "2", space=space)) == 0
    enhanced = next(r for r in records(runs, "stubborn") if r.preset == "enhanced")
    assert enhanced.outcome == "diverged:explosion" and enhanced.stopped_with == "SIGKILL"
    assert enhanced.exit_code == -9 and 1.0 <= enhanced.stop_s < 3.0
    seen = trace(runs, "stubborn", enhanced.number)
    assert not alive(seen["pid"][0]) and not alive(seen["helper"][0])


CONFIG_SPACE = """
[study]
metric = "val loss"
warmup = "warmup"

[params.lr]
low = 1e-3
high = 3.0
scale = "log"
key = "optim.lr"

[params.warmup]
low = 0
high = 40
scale = "int"
step = 20
key = "schedule.warmup"

[presets.mine]
lr = 0.01
warmup = 20

[presets.old]
lr = 1.0
warmup = 0

[guards]
explosion_min_steps = 20
spike_min_steps = 20

[config]
file = "train_config.json"
"""


def test_config_keys_carry_the_params_and_a_space_without_grad_clip_gets_a_report_and_an_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user_config = {"optim": {"lr": 0.1, "betas": [0.9, 0.99]}, "schedule": {"warmup": 0}, "data": "x"}
    (tmp_path / "train_config.json").write_text(json.dumps(user_config))
    space = tmp_path / "space.toml"
    space.write_text(CONFIG_SPACE)
    runs = tmp_path / "runs"
    command = "python tests/byot_trainer.py --config {config} --diverge-above 0.3 --steps 40"
    assert run_cli(search.main, search_argv("cfg", runs, command, "--trials", "4", space=space)) == 0
    done = records(runs, "cfg")
    old = next(r for r in done if r.preset == "old")
    assert old.outcome == "diverged:explosion" and old.divergence.step == KNOWN_STEP
    written = json.loads((runs / "cfg" / "trials" / f"trial-{old.number}" / "config.json").read_text())
    assert written == {**user_config, "optim": {"lr": 1.0, "betas": [0.9, 0.99]}, "schedule": {"warmup": 0}}
    capsys.readouterr()

    # The report: no grad_clip in this space, yet every part of the page is drawn from its own params.
    assert (
        run_cli(search.main, ["--study", "cfg", "--space", str(space), "--runs-dir", str(runs), "--report"])
        == 0
    )
    html = (runs / "cfg" / "report.html").read_text()
    for anchor in ("presets", "rediscovery", "map", "boundary", "curves", "importance"):
        assert f'id="{anchor}"' in html, anchor
    for png in (
        "stability_map.png",
        "lr_boundary.png",
        "val_mel_curves.png",
        "grad_norm_curves.png",
        "slices.png",
    ):
        assert (runs / "cfg" / "report" / png).stat().st_size > 1000, png
    assert 'id="boundary-table"' in html and "all trials" not in html  # bucketed by warmup, the next param
    assert "grad clip" not in html and "grad_clip" not in html and "val loss" in html
    assert "Did the search rediscover mine?" in html

    # What the dashboard and Optuna's own CLI read: plain params, user attributes of JSON types.
    optuna_cli = Path(sys.executable).with_name("optuna")
    listed = subprocess.run(
        [
            str(optuna_cli),
            "trials",
            "--storage",
            f"sqlite:///{runs / 'cfg' / 'study.db'}",
            "--study-name",
            "cfg",
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 4 and {"lr", "warmup"} <= set(
        json.loads(listed.stdout)[0]["params"]
    )

    # The export: the user's own config, the best params at their keys, and the command that runs it.
    best = tmp_path / "best.json"
    argv = ["--study", "cfg", "--space", str(space), "--runs-dir", str(runs), "--export-preset", str(best)]
    assert run_cli(search.main, argv) == 0
    exported = json.loads(best.read_text())
    chosen = next(r for r in done if r.feasible and r.value == min(x.value for x in done if x.feasible))
    assert (
        exported["optim"]["lr"] == chosen.params["lr"]
        and exported["schedule"]["warmup"] == chosen.params["warmup"]
    )
    assert exported["data"] == "x" and exported["optim"]["betas"] == [0.9, 0.99]
    assert (
        f"run it: python tests/byot_trainer.py --config {best} --diverge-above 0.3 --steps 40"
        in capsys.readouterr().err
    )


BAD_FLAGS = {
    "no such space file": (["--space", "nope.toml", "--command", "python x.py"], "no such file"),
    "command without a space": (["--command", "python x.py --lr {lr}"], "--command needs --space FILE"),
    "space without a command": (["--space", str(SPACE)], "give --command"),
    "unknown field": (["--space", str(SPACE), "--command", TRAINER + " --x {x}"], "unknown field {x}"),
    "a built-in name": (
        ["--study", "stability-quick", "--space", str(SPACE), "--command", TRAINER],
        "is a built-in study",
    ),
    "a flag of the project's trainer": (
        ["--space", str(SPACE), "--command", TRAINER, "--lr-probe"],
        "--lr-probe is for the project's trainer",
    ),
    "a margin before the search": (  # --margin of your trainer reads the study: there is none yet
        ["--space", str(SPACE), "--command", TRAINER, "--margin", "basic"],
        "run the search first",
    ),
    "the transfer check of the project's trainer": (
        ["--space", str(SPACE), "--command", TRAINER, "--transfer-check", "3"],
        "--transfer-check is for the project's trainer",
    ),
    "zero trials": (["--space", str(SPACE), "--command", TRAINER, "--trials", "0"], "--trials must be > 0"),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_flags_are_one_line_exit_2_and_create_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, words = BAD_FLAGS[case]
    runs = tmp_path / "runs"
    assert run_cli(search.main, [*argv, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not runs.exists() and "Traceback" not in err
    assert not os.listdir(tmp_path)
