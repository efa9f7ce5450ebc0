from __future__ import annotations

import json
import math
import multiprocessing as mp
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.telemetry import STEP_METRICS, Telemetry, read_evals, read_run, read_steps, step_series

SQLITE_UTILS = Path(sys.executable).parent / "sqlite-utils"


def _metrics(step: int) -> dict[str, float]:
    return {
        "loss": 6.0 - step * 0.01,
        "mel": 4.0,
        "grad_norm": 0.5,
        "lr": 1e-5,
        "step_time": 0.1,
        "skipped": 0,
    }


def _count(path: Path, table: str = "steps") -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"select count(*) from {table}").fetchone()[0]


def test_rows_are_buffered_until_flush_every(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    with Telemetry(db, flush_every=10) as tel:
        tel.start_run("r", {"lr": 1e-5}, {"device": "cpu"})
        for step in range(9):
            tel.log_step("r", step, _metrics(step))
        assert _count(db) == 0
        tel.log_step("r", 9, _metrics(9))
        assert _count(db) == 10
        tel.log_step("r", 10, _metrics(10))
        tel.flush()
        assert _count(db) == 11
        tel.log_step("r", 11, _metrics(11))
    assert _count(db) == 12  # close flushes
    rows = read_steps(db, "r")
    assert [r["step"] for r in rows] == list(range(12))
    assert rows[3]["loss"] == pytest.approx(5.97) and rows[3]["kl"] is None and rows[3]["skipped"] == 0


def test_run_record_and_verdict(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    with Telemetry(db) as tel:
        tel.start_run("r", {"lr": 1e-5, "guards": {"spike_z": 6.0}}, {"trial": 3})
        assert read_run(db, "r")["status"] == "running"
        tel.log_step("r", 1, _metrics(1))
        tel.finish_run("r", "diverged", {"kind": "nan", "step": 1, "detail": "loss is NaN"})
        assert _count(db) == 1  # finish_run flushes
    run = read_run(db, "r")
    assert run["config"] == {"lr": 1e-5, "guards": {"spike_z": 6.0}} and run["meta"] == {"trial": 3}
    assert (run["status"], run["verdict_kind"], run["verdict_step"]) == ("diverged", "nan", 1)
    assert run["finished"] and run["resumes"] == 0
    assert read_run(db, "other") is None


def test_nan_and_inf_are_stored_faithfully(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    with Telemetry(db) as tel:
        tel.log_step("r", 1, {"loss": math.nan, "mel": math.inf, "grad_norm": -math.inf, "lr": 1e-5})
        tel.log_eval("r", 1, {"val_mel": math.nan, "val_stop": 0.5})
    row = read_steps(db, "r")[0]
    assert math.isnan(row["loss"]) and row["mel"] == math.inf and row["grad_norm"] == -math.inf
    assert row["kl"] is None  # not measured: NULL, not NaN
    (ev,) = read_evals(db, "r")
    assert math.isnan(ev["val_mel"]) and ev["val_stop"] == 0.5
    with sqlite3.connect(db) as conn:
        assert conn.execute("select loss, nan_fields from steps").fetchone() == (None, "loss")
        assert conn.execute("select count(*) from evals where is_nan = 1").fetchone() == (1,)


def test_relogging_a_step_replaces_it_and_resume_drops_the_tail(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    with Telemetry(db) as tel:
        tel.start_run("r", {}, {})
        for step in range(1, 11):
            tel.log_step("r", step, _metrics(step))
        tel.log_eval("r", 10, {"val_mel": 4.0})
    with Telemetry(db) as tel:  # resumed from the step-5 checkpoint
        tel.start_run("r", {}, {}, from_step=5)
        assert [r["step"] for r in read_steps(db, "r")] == [1, 2, 3, 4, 5]
        assert read_evals(db, "r") == []
        tel.log_step("r", 5, {"loss": 1.0})
        tel.log_step("r", 6, {"loss": 2.0})
    rows = read_steps(db, "r")
    assert [(r["step"], r["loss"]) for r in rows[-2:]] == [(5, 1.0), (6, 2.0)]
    assert len(rows) == 6 and read_run(db, "r")["resumes"] == 1


def test_unknown_step_metric_is_rejected(tmp_path: Path) -> None:
    with Telemetry(tmp_path / "t.db") as tel, pytest.raises(ValueError, match="unknown step metrics"):
        tel.log_step("r", 1, {"los": 1.0})


def _writer(path: str, run_id: str, n: int) -> None:
    with Telemetry(Path(path), flush_every=7) as tel:
        tel.start_run(run_id, {"worker": run_id}, {})
        for step in range(n):
            tel.log_step(run_id, step, _metrics(step))
            if step % 50 == 0:
                tel.log_eval(run_id, step, {"val_mel": 4.0})
        tel.finish_run(run_id, "complete")


def test_concurrent_writers_lose_no_rows(tmp_path: Path) -> None:
    db = str(tmp_path / "shared.db")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, f"w{i}", 300)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert _count(Path(db)) == 900 and _count(Path(db), "evals") == 18
    for i in range(3):
        assert [r["step"] for r in read_steps(Path(db), f"w{i}")] == list(range(300))
        assert read_run(Path(db), f"w{i}")["status"] == "complete"


def test_wal_mode_and_cli_query(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    with Telemetry(db) as tel:
        tel.start_run("r", {"lr": 1e-5}, {})
        for step in range(5):
            tel.log_step("r", step, _metrics(step))
    with sqlite3.connect(db) as conn:
        assert conn.execute("pragma journal_mode").fetchone() == ("wal",)
        columns = [c[1] for c in conn.execute("pragma table_info(steps)")]
    assert set(STEP_METRICS) <= set(columns)
    out = subprocess.run(
        [str(SQLITE_UTILS), "query", str(db), "select count(*) as n, max(step) as last from steps"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == [{"n": 5, "last": 4}]


def test_a_file_from_before_the_fp16_peaks_gets_their_columns(tmp_path: Path) -> None:
    """A study's telemetry written by an older trainer (no attn_logit_max / activation_max columns) takes
    new runs: the columns are added, the old rows read them as not measured (NaN)."""
    db = tmp_path / "t.db"
    old = [m for m in STEP_METRICS if m not in ("attn_logit_max", "activation_max")]
    with sqlite3.connect(db) as conn:
        cols = ", ".join(f"{m} REAL" for m in old)
        conn.execute(
            f"CREATE TABLE steps (run_id TEXT, step INTEGER, logged_at REAL, {cols}, nan_fields TEXT, "
            "PRIMARY KEY (run_id, step))"
        )
        conn.execute("INSERT INTO steps (run_id, step, loss) VALUES ('old', 1, 2.5)")
    with Telemetry(db) as tel:
        tel.start_run("new", {}, {})
        tel.log_step("new", 1, {**_metrics(1), "attn_logit_max": 130.0, "activation_max": 42.0})
    assert step_series(db, "new", "attn_logit_max") == [(1, 130.0)]
    assert step_series(db, "new", "activation_max") == [(1, 42.0)]
    assert math.isnan(step_series(db, "old", "attn_logit_max")[0][1])
    assert step_series(db, "old", "loss") == [(1, 2.5)]
