"""Per-step and per-eval metrics in SQLite, cheap enough to leave on and safe with many writers.

`log_step` only appends to a list (microseconds); every `flush_every` steps the buffer is written in
ONE transaction, so a worker killed mid-write leaves the database as it was before that batch. WAL
mode lets readers (reports, the `sqlite-utils` CLI) run while trials write, and a 30 s busy timeout
lets several worker processes share one file. Open a `Telemetry` inside the process that writes:
an SQLite connection must not cross a fork.

Schema (query it with `sqlite-utils query FILE "select ..."`):
    runs   run_id TEXT PK, started, finished (ISO UTC), status, resumes, config_json, meta_json,
           verdict_kind, verdict_step, verdict_detail
    steps  (run_id, step) PK, logged_at (unix s), loss, mel, mel_l1, kl, stop, grad_norm, lr, loss_scale,
           skipped, step_time, mel_weight, attn_logit_max, activation_max, nan_fields
    evals  (run_id, step, metric) PK, value, is_nan
SQLite cannot hold NaN (it stores NULL), so NaN is written as NULL and named: a step's `nan_fields`
lists its NaN metrics ("loss,mel"), an eval row has `is_nan = 1`. NULL without that mark means "not
measured" (e.g. loss_scale without fp16). +-Inf is stored as it is. Re-logging a step or eval replaces
the row, so a resumed run never duplicates one.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlite_utils

# A run's status in the `runs` table, telemetry's own words (not the judge's verdict, which a run's
# record carries): how it ended (``trainer.judge.Judgement.status``), or that it has not yet.
STATUS_RUNNING, STATUS_FAILED = "running", "failed"
STATUS_FINISHED, STATUS_PRUNED, STATUS_DIVERGED, STATUS_OOM = "finished", "pruned", "diverged", "oom"

STEP_METRICS = (
    "loss",
    "mel",
    "mel_l1",
    "kl",
    "stop",
    "grad_norm",
    "lr",
    "loss_scale",
    "skipped",
    "step_time",
    "mel_weight",
    "attn_logit_max",
    "activation_max",
)
_STEP_SET = frozenset(STEP_METRICS)
BUSY_TIMEOUT_S = 30.0


class Telemetry:
    """One writer of one telemetry database; use one per process (or per trial)."""

    def __init__(self, path: Path, *, flush_every: int = 50) -> None:
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        self.path = path
        self.flush_every = flush_every
        self._steps: list[dict[str, Any]] = []
        self._evals: list[dict[str, Any]] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite_utils.Database(sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S))
        self._setup()

    # -- writing -----------------------------------------------------------------------------
    def start_run(
        self, run_id: str, config: Mapping[str, Any], meta: Mapping[str, Any], *, from_step: int | None = None
    ) -> None:
        """Record a run (or a resumed one: `started` is kept, `resumes` counts up).

        `from_step`: the step a resumed run restarts from; its rows after that step are deleted, since
        the resumed run rewrites them and an interrupted tail must not outlive it.
        """
        row = {
            "run_id": run_id,
            "started": _now(),
            "status": STATUS_RUNNING,
            "config_json": json.dumps(config, sort_keys=True, default=str),
            "meta_json": json.dumps(meta, sort_keys=True, default=str),
        }
        with self._transaction():
            self._db.execute(
                "INSERT INTO runs (run_id, started, status, resumes, config_json, meta_json) "
                "VALUES (:run_id, :started, :status, 0, :config_json, :meta_json) "
                "ON CONFLICT(run_id) DO UPDATE SET status = excluded.status, resumes = resumes + 1, "
                "config_json = excluded.config_json, meta_json = excluded.meta_json, finished = NULL, "
                "verdict_kind = NULL, verdict_step = NULL, verdict_detail = NULL",
                row,
            )
            if from_step is not None:
                for table in ("steps", "evals"):
                    self._db.execute(
                        f"DELETE FROM {table} WHERE run_id = ? AND step > ?", [run_id, from_step]
                    )

    def log_step(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
        """Buffer one step's metrics (Python numbers: call .item() first, once, where the loop syncs)."""
        unknown = metrics.keys() - _STEP_SET
        if unknown:
            raise ValueError(f"unknown step metrics {sorted(unknown)}; known: {', '.join(STEP_METRICS)}")
        row: dict[str, Any] = dict.fromkeys(STEP_METRICS)
        nan = []
        for name, value in metrics.items():
            value = float(value)
            if value != value:
                nan.append(name)
            row[name] = value
        row.update(run_id=run_id, step=step, logged_at=time.time(), nan_fields=",".join(nan) or None)
        self._steps.append(row)
        if len(self._steps) >= self.flush_every:
            self.flush()

    def log_eval(self, run_id: str, step: int, metrics: Mapping[str, float]) -> None:
        """Buffer one evaluation; any metric names (one row each), written with the next flush."""
        for name, value in metrics.items():
            value = float(value)
            is_nan = value != value
            self._evals.append(
                {
                    "run_id": run_id,
                    "step": step,
                    "metric": name,
                    "value": None if is_nan else value,
                    "is_nan": int(is_nan),
                }
            )

    def finish_run(self, run_id: str, status: str, verdict: Mapping[str, Any] | None = None) -> None:
        """Flush and close the run's record in one transaction. `verdict`: {"kind", "step", "detail"}."""
        verdict = verdict or {}
        with self._transaction():
            self._write_buffers()
            self._db.execute(
                "UPDATE runs SET status = ?, finished = ?, verdict_kind = ?, verdict_step = ?, verdict_detail = ? "
                "WHERE run_id = ?",
                [status, _now(), verdict.get("kind"), verdict.get("step"), verdict.get("detail"), run_id],
            )

    def flush(self) -> None:
        """Write everything buffered in one transaction; on failure the rows stay buffered."""
        if self._steps or self._evals:
            with self._transaction():
                self._write_buffers()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._db.close()

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()  # rows up to a crash are exactly what a post-mortem needs

    # -- internals ---------------------------------------------------------------------------
    def _setup(self) -> None:
        """WAL mode and the schema. Switching a new file to WAL can report "locked" at once, without
        waiting, when several workers open it together; so this one step retries until the timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self._db.enable_wal()
                with self._transaction():
                    _create_schema(self._db)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._db.execute("PRAGMA synchronous=NORMAL")  # with WAL: never corrupt, at most the last batch lost

    def _write_buffers(self) -> None:
        if self._steps:
            self._db["steps"].insert_all(self._steps, replace=True)
        if self._evals:
            self._db["evals"].insert_all(self._evals, replace=True)
        # cleared only once the caller's transaction commits: see _transaction

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so two
        writers never deadlock upgrading a read lock; sqlite-utils calls nest inside as savepoints."""
        conn = self._db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:  # some errors (disk full) have already rolled it back
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self._steps.clear()
        self._evals.clear()


def _create_schema(db: sqlite_utils.Database) -> None:
    db["runs"].create(
        {
            "run_id": str,
            "started": str,
            "finished": str,
            "status": str,
            "resumes": int,
            "config_json": str,
            "meta_json": str,
            "verdict_kind": str,
            "verdict_step": int,
            "verdict_detail": str,
        },
        pk="run_id",
        if_not_exists=True,
    )
    step_columns: dict[str, Any] = {"run_id": str, "step": int, "logged_at": float}
    step_columns.update(dict.fromkeys(STEP_METRICS, float))
    step_columns.update(skipped=int, nan_fields=str)
    db["steps"].create(step_columns, pk=("run_id", "step"), if_not_exists=True)
    # A file written before a metric existed gets its column (NULL in the old rows: "not measured"),
    # so a study's telemetry keeps growing across versions instead of refusing new runs.
    have = set(db["steps"].columns_dict)
    for name in STEP_METRICS:
        if name not in have:
            db["steps"].add_column(name, float)
    db["evals"].create(
        {"run_id": str, "step": int, "metric": str, "value": float, "is_nan": int},
        pk=("run_id", "step", "metric"),
        if_not_exists=True,
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- reading (reports, tests) ----------------------------------------------------------------
def _open_read(path: Path) -> sqlite_utils.Database:
    return sqlite_utils.Database(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S))


def read_steps(path: Path, run_id: str) -> list[dict[str, Any]]:
    """A run's step rows in step order, NaN restored from `nan_fields` (which is dropped)."""
    db = _open_read(path)
    try:
        rows = list(db["steps"].rows_where("run_id = ?", [run_id], order_by="step"))
    finally:
        db.close()
    for row in rows:
        for name in (row.pop("nan_fields") or "").split(","):
            if name:
                row[name] = math.nan
    return rows


def read_evals(path: Path, run_id: str) -> list[dict[str, Any]]:
    """A run's evaluations, one dict per step: {"step": 500, "val_mel": 4.3, ...}, NaN restored."""
    db = _open_read(path)
    try:
        rows = list(db["evals"].rows_where("run_id = ?", [run_id], order_by="step, metric"))
    finally:
        db.close()
    by_step: dict[int, dict[str, Any]] = {}
    for row in rows:
        by_step.setdefault(row["step"], {"step": row["step"]})[row["metric"]] = (
            math.nan if row["is_nan"] else row["value"]
        )
    return list(by_step.values())


def read_run(path: Path, run_id: str) -> dict[str, Any] | None:
    """The run's record with `config` and `meta` parsed, or None if it was never started."""
    db = _open_read(path)
    try:
        rows = list(db["runs"].rows_where("run_id = ?", [run_id]))
    finally:
        db.close()
    if not rows:
        return None
    row = rows[0]
    row["config"] = json.loads(row.pop("config_json"))
    row["meta"] = json.loads(row.pop("meta_json"))
    return row


def step_series(path: Path, run_id: str, metric: str) -> list[tuple[int, float]]:
    """One step metric of a run as (step, value) pairs in step order (NaN where it was NaN, NaN for a
    metric not measured at a step)."""
    if metric not in _STEP_SET:
        raise ValueError(f"unknown step metric {metric!r}; known: {', '.join(STEP_METRICS)}")
    return [
        (int(row["step"]), math.nan if row[metric] is None else float(row[metric]))
        for row in read_steps(path, run_id)
    ]


def eval_series(path: Path, run_id: str, metric: str) -> list[tuple[int, float]]:
    """One eval metric of a run as (step, value) pairs in step order (NaN where it was NaN); evals that
    did not measure it are left out."""
    return [(int(e["step"]), float(e[metric])) for e in read_evals(path, run_id) if metric in e]
