"""Your trainer, for real: what users hit when their own trainer met the search, each as a tiny trainer.

Every trainer here is a throwaway script written into ``tmp_path`` (pure Python, a trial a second or
two) or a function run in this process, and the study runs as ``search.py`` / ``run_study`` run it:
- a trainer that hangs ends FAIL "stalled" within ``stall_s`` + grace, nothing of it left, and the
  study still reaches its trial count (a command and a function both);
- steps may start at 0;
- a first trial whose metric is missing or named otherwise stops the study at once, with the line that
  maps the keys it printed (and that line, pasted into the space file, works);
- a trainer that prints no numbers, a function that returns its value, ``reporter.report``: a pointer;
- a trainer with no eval scores its last loss (``[metrics] score = "last_loss"``);
- three failures in a row stop the search without a FAIL trial of empty params.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import search
from common.cli import run_cli
from common.errors import UserError
from studies.execution.foreign_trial import Deadlines, RunWatch
from studies.execution.inprocess import run_study
from studies.execution.trainer_process import TOKEN_ENV
from studies.foreign import load_foreign_study
from studies.record import TrialRecord, load_records
from studies.record_keys import TRAINER_FAILED
from trainer.config import GuardConfig
from trainer.reporter import Reporter, ReportError, Stalled

ROOT = Path(__file__).resolve().parents[1]
SPACE = (ROOT / "tests" / "byot_space.toml").read_text()  # presets: basic lr 0.01, enhanced lr 1.0
HANG_AT = 5

optuna.logging.set_verbosity(optuna.logging.WARNING)

# A trainer that prints a JSON line per step from step 0 and an eval every 5 steps; at lr 1.0 (the
# `enhanced` preset) it starts a helper, ignores SIGTERM and hangs after step 5, as a deadlocked
# DataLoader would.
HANGING = f"""
import json, os, signal, subprocess, sys, time
lr, trace = float(sys.argv[1]), sys.argv[2]
hang = lr == 1.0
if hang:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
for step in range(0, 20):
    print(json.dumps({{"step": step, "loss": 2.0 - 0.01 * step}}), flush=True)
    if step % 5 == 4:
        print(json.dumps({{"step": step, "metric": 1.5 - 0.01 * step}}), flush=True)
    if hang and step == {HANG_AT}:
        open(trace, "w").write(str(time.time()))
        time.sleep(10**6)
    time.sleep(0.01)
"""
# Its own key names: train_loss per step, val_loss per eval.
OWN_NAMES = """
import json
for step in range(1, 21):
    print(json.dumps({"step": step, "train_loss": 2.0 - 0.01 * step, "lr": 0.1}))
    if step % 5 == 0:
        print(json.dumps({"step": step, "val_loss": 1.5 - 0.01 * step}))
"""
SILENT = "for epoch in range(3):\n    print(f'epoch {epoch} done')\n"
CRASHING = "import json\nprint(json.dumps({'step': 1, 'loss': 2.0}))\nraise SystemExit(1)\n"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def space(tmp_path: Path, study: str = "", extra: str = "") -> Path:
    path = tmp_path / "space.toml"
    path.write_text(SPACE.replace("[study]\n", f"[study]\n{study}\n") + extra)
    return path


def trainer(tmp_path: Path, source: str) -> str:
    (tmp_path / "train.py").write_text(source)
    return (
        f"{sys.executable} {tmp_path / 'train.py'} {{lr}} {{run_dir}}/hung.txt {{grad_clip}} {{warmup_steps}}"
    )


def searched(name: str, space_file: Path, command: str, trials: int) -> int:
    argv = ["--study", name, "--space", str(space_file), "--runs-dir", "runs", "--trials", str(trials)]
    return run_cli(search.main, [*argv, "--command", command])


def records(name: str) -> list[TrialRecord]:
    """The trials that ran (a preset still queued is not one)."""
    storage = f"sqlite:///{Path('runs', name, 'study.db').resolve()}"
    every = load_records(optuna.load_study(study_name=name, storage=storage))
    return [r for r in every if r.state != TrialState.WAITING]


def ended_at(name: str, number: int) -> float:
    storage = f"sqlite:///{Path('runs', name, 'study.db').resolve()}"
    return optuna.load_study(study_name=name, storage=storage).trials[number].datetime_complete.timestamp()


def carrying(token: str) -> list[int]:
    """Pids of live processes with this trial's token in their environment (the trainer, its helper)."""
    marker, found = f"{TOKEN_ENV}={token}".encode(), []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            stat = (environ.parent / "stat").read_text()
            if marker in environ.read_bytes().split(b"\0") and stat.rsplit(")", 1)[-1].split()[0] != "Z":
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


# -- 1. stalls and time limits ----------------------------------------------------------------------
def test_a_command_that_hangs_is_stalled_killed_and_the_study_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stall_s, grace_s = 2.0, 1.0
    path = space(tmp_path, f"stall_s = {stall_s}\ngrace_s = {grace_s}")
    assert searched("hang", path, trainer(tmp_path, HANGING), trials=3) == 0
    err = capsys.readouterr().err
    by_number = {r.number: r for r in records("hang")}
    stalled = next(r for r in by_number.values() if r.preset == "enhanced")
    assert stalled.state == TrialState.FAIL and stalled.failed_by == TRAINER_FAILED
    assert stalled.fail_detail == f"stalled after step {HANG_AT} (no metrics line for 2 s)"
    assert stalled.stopped_with == "SIGKILL" and grace_s <= stalled.stop_s < grace_s + 1.0  # SIGTERM ignored
    hung_at = float((tmp_path / "runs/hang/trials" / f"trial-{stalled.number}" / "hung.txt").read_text())
    took = ended_at("hang", stalled.number) - hung_at
    print(f"\nstall_s {stall_s}, grace_s {grace_s}: the hung trial ended {took:.2f} s after it hung")
    assert stall_s + grace_s <= took < stall_s + grace_s + 1.5
    assert stalled.trainer_token and carrying(stalled.trainer_token) == []  # the trainer and its helper: gone
    assert sum(r.finished for r in by_number.values()) == 3  # the study went on to its count
    assert by_number[0].preset == "basic" and by_number[0].state == TrialState.COMPLETE  # steps from 0
    assert f"trial {stalled.number}: the trainer stalled after step {HANG_AT}" in err


def test_a_function_that_hangs_is_interrupted_as_stalled_and_the_study_goes_on(tmp_path: Path) -> None:
    hung: list[float] = []

    def train(params: dict, reporter: Reporter) -> None:
        for step in range(20):
            reporter.step(loss=2.0 - 0.01 * step, step=step)
            if step % 5 == 4:
                reporter.eval(metric=1.5 - 0.01 * step)
            if params["lr"] == 1.0 and step == HANG_AT:
                hung.append(time.time())
                time.sleep(3600)  # interrupted: the alarm raises here

    assert run_study(train, space=space(tmp_path, "stall_s = 1"), study="hang-fn", trials=3) == 0
    stalled = next(r for r in records("hang-fn") if r.preset == "enhanced")
    assert stalled.state == TrialState.FAIL
    assert stalled.fail_detail == f"stalled after step {HANG_AT} (no reporter call for 1 s)"
    assert sum(r.finished for r in records("hang-fn")) == 3
    took = ended_at("hang-fn", stalled.number) - hung[0]
    print(f"\nstall_s 1 (in process): the hung trial ended {took:.2f} s after it hung")
    assert 1.0 <= took < 2.5  # the sleep was cut at 1 s, not waited out


def test_a_trial_past_its_timeout_is_fail(tmp_path: Path) -> None:
    def train(params: dict, reporter: Reporter) -> None:
        for _ in range(200):
            reporter.step(loss=1.0)
            time.sleep(0.02)

    path = space(tmp_path, "timeout_s = 0.5", extra='[metrics]\nscore = "last_loss"\n')
    run_study(train, space=path, study="slow", trials=1)
    first = records("slow")[0]
    assert first.state == TrialState.FAIL and first.fail_detail.startswith("timed out after 0.5 s at step ")


def test_a_loop_the_alarm_cannot_reach_ends_at_its_next_report() -> None:
    """Off the main thread (or past a C call) there is no alarm: the next reporter call ends the run."""
    watch = RunWatch(Deadlines(0.05, None, "reporter call"))
    r = Reporter(GuardConfig(), note=lambda _: None, watch=watch)
    watch.reporter = r
    r.step(loss=1.0)
    time.sleep(0.1)
    with pytest.raises(Stalled, match=r"stalled after step 1 \(no reporter call for 0.05 s\)"):
        r.step(loss=1.0)
    with pytest.raises(Stalled):  # for good: a loop that swallowed it is stopped at its next call
        r.eval(metric=1.0)


# -- 2. the protocol: hints that fail fast, no needless refusals ------------------------------------
def test_steps_may_start_anywhere_and_must_go_up() -> None:
    r = Reporter(GuardConfig(), note=lambda _: None)
    r.step(loss=1.0, step=0)
    r.step(loss=1.0)  # 1
    with pytest.raises(ReportError, match="step 1 after step 1: steps must be integers that go up"):
        r.step(loss=1.0, step=1)
    Reporter(GuardConfig(), note=lambda _: None).step(loss=1.0, step=-3)


def test_a_metric_named_otherwise_stops_the_study_after_its_first_trial_with_the_line_that_maps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = trainer(tmp_path, OWN_NAMES)
    assert searched("names", space(tmp_path), command, trials=4) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    [only] = records("names")
    assert only.state == TrialState.FAIL and only.params  # one trial, not three
    mapping = '[metrics] names = { loss = "train_loss", metric = "val_loss" }'
    assert "step, train_loss, lr, val_loss" in last and mapping in last, last
    # The line it gives, pasted into the space file, is the fix.
    fixed = space(tmp_path, extra="\n" + mapping.replace("] ", "]\n") + "\n")
    assert searched("names", fixed, command, trials=3) == 0


def test_a_trainer_that_prints_no_numbers_gets_the_line_to_print(tmp_path: Path) -> None:
    assert searched("silent", space(tmp_path), trainer(tmp_path, SILENT), trials=3) == 2
    [only] = records("silent")
    assert '{"step": 1, "loss": 2.3}' in only.fail_detail, only.fail_detail


def test_a_function_that_returns_its_value_is_told_how_to_report_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def train(params: dict, reporter: Reporter) -> float:
        for _ in range(10):
            reporter.step(loss=1.0)
        return 0.5  # Optuna's habit: the objective's return value

    assert run_study(train, space=space(tmp_path), study="returns", trials=3) == 2
    err = capsys.readouterr().err
    assert (
        "train returned 0.5, which the search does not read: report it with reporter.eval(metric=...)" in err
    )
    assert len(records("returns")) == 1


def test_reporter_report_points_to_step_and_eval() -> None:
    r = Reporter(GuardConfig(), note=lambda _: None)
    with pytest.raises(
        ReportError, match=r"reporter.report\(\.\.\.\) is Ray Tune's.*reporter.step.*reporter.eval"
    ):
        r.report(loss=1.0)


def test_a_trainer_without_eval_scores_its_last_loss(tmp_path: Path) -> None:
    def train(params: dict, reporter: Reporter) -> None:
        for step in range(1, 31):
            reporter.step(loss=1.0 + 1.0 / step)

    path = space(tmp_path, extra='[metrics]\nscore = "last_loss"\n')
    assert run_study(train, space=path, study="no-eval", trials=3) == 0
    done = [r for r in records("no-eval") if r.finished]
    assert len(done) == 3 and all(r.value == pytest.approx(1.0 + 1.0 / 30) for r in done)
    assert load_foreign_study(path, name="x", command=None).metric_label == "last training loss"


# -- 3. three failures in a row --------------------------------------------------------------------
def test_three_failures_in_a_row_leave_no_trial_without_params(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert searched("crash", space(tmp_path), trainer(tmp_path, CRASHING), trials=5) == 2
    assert "your trainer failed 3 trials in a row" in capsys.readouterr().err
    every = records("crash")
    assert [r.number for r in every] == [0, 1, 2] and all(r.params for r in every), [
        (r.number, r.params, r.failed_by) for r in every
    ]


def test_stall_and_timeout_are_checked_in_the_space_file(tmp_path: Path) -> None:
    for bad, words in (
        ("stall_s = -1", "stall_s"),
        ("timeout_s = 0", "timeout_s"),
        ('stall_s = "x"', "stall_s"),
    ):
        with pytest.raises(UserError, match=words):
            load_foreign_study(space(tmp_path, bad), name="x", command=None)
    study = load_foreign_study(space(tmp_path), name="x", command=None)
    assert study.stall_s == 600 and study.timeout_s is None
