"""Chaos: killed workers and a restarted database still end with exactly N trials, every preset judged.

Real processes on a real PostgreSQL (``tests/pg_harness.py``), as in issue 13: ``search.py --workers 4``
(the supervised workers of one machine) and a lone ``search.py`` beside it (a second machine: nobody
restarts it), heartbeat 2 s. During the run: SIGKILLs of supervised workers at random moments, one
of them right after a trial was asked for; the lone search killed right after it asked for its
first trial (before its first heartbeat: the window that stranded a preset forever); one server
restart. The schedule is drawn from ``TTS_CHAOS_SEED`` (printed), so a failure can be replayed.

"Right after ask" is hit on purpose, not by luck: the test locks the heartbeat table for at most
2.5 s (well inside the 6 s grace) at a moment a worker is about to ask; the new trial's first
heartbeat then waits on the lock, and the test kills the worker whose RUNNING trial has none.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from optuna.trial import TrialState

from studies.execution.resilience import DB_RETRY_ENV, EXIT_DB_UNAVAILABLE
from studies.execution.runner import FAILED_BY_ATTR, FIXED, NO_HEARTBEAT, PID_ATTR
from studies.record_keys import PRESET as PRESET_ATTR
from tests.corpus_fixture import cache_env, corpus_paths  # noqa: F401  (session fixtures)
from tests.pg_harness import PgServer, postgres, start_postgres, stop_postgres, wait_for  # noqa: F401
from tests.test_distributed import (
    assert_complete,
    finish,
    load,
    retry_of,
    search_cmd,
    start,
    trials_of,
)

SEED_ENV = "TTS_CHAOS_SEED"
HOLD_S = 2.5  # the longest the heartbeat table is locked: < grace (6 s) - interval (2 s)

# RUNNING trials without a heartbeat row, with the pid that asked for them.
SILENT = """
select t.number, a.value_json from trials t
join trial_user_attributes a on a.trial_id = t.trial_id and a.key = 'pid'
left join trial_heartbeats h on h.trial_id = t.trial_id
where t.state = 'RUNNING' and h.trial_id is null
"""


@dataclass(frozen=True, slots=True)
class Kill:
    at_s: float  # seconds after the first trial started
    what: str  # "kill" (a random running worker), "kill after ask", "restart"


def schedule(seed: int) -> list[Kill]:
    rng = random.Random(seed)
    # All within the first 10 s of the first trial: on a quiet machine 5 smoke trials take ~25 s.
    events = [
        Kill(round(rng.uniform(1, 6), 1), "kill"),
        Kill(round(rng.uniform(3, 9), 1), "kill"),
        Kill(round(rng.uniform(2, 8), 1), "restart"),
        Kill(round(rng.uniform(0.5, 5), 1), "kill after ask"),
    ]
    return sorted(events, key=lambda k: k.at_s)


def _conninfo(server: PgServer) -> str:
    return f"host=127.0.0.1 port={server.port} user=postgres dbname=tts_search"


def kill_right_after_ask(
    server: PgServer, pids: Callable[[], set[int]], give_up: Callable[[], bool]
) -> tuple[int, int] | None:
    """Lock the heartbeat table, wait for a trial of one of `pids()` RUNNING without a heartbeat,
    SIGKILL its worker, unlock; (trial number, pid), or None once `give_up()`.

    The lock is held at most ``HOLD_S`` at a time and taken again at once on one connection: the
    heartbeats queued behind it go first (PostgreSQL grants locks in order), a worker's next ask and
    first heartbeat come after it, so the window is never missed for a reconnect.
    """
    with psycopg.connect(_conninfo(server)) as conn:
        while not give_up():
            conn.execute("LOCK TABLE trial_heartbeats IN EXCLUSIVE MODE")
            deadline = time.monotonic() + HOLD_S
            while time.monotonic() < deadline:
                wanted = pids()
                for number, pid_json in conn.execute(SILENT).fetchall():
                    if int(pid_json) in wanted:
                        os.kill(int(pid_json), signal.SIGKILL)
                        conn.rollback()
                        return number, int(pid_json)
                time.sleep(0.02)
            conn.rollback()
    return None


def said(log: Path, words: str) -> bool:
    """Whether the log holds `words`, however the terminal wrapped them."""
    return words in " ".join(log.read_text().split())


def stop(proc: subprocess.Popen) -> None:
    """Whatever a failed test left running: Ctrl-C (a search stops its workers), then a kill."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def worker_pids(parent: subprocess.Popen) -> set[int]:
    """The live children of a ``search.py --workers N`` process (its workers), read from /proc; a killed
    one not yet reaped is a zombie and is left out: killing it again would count twice."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:  # gone meanwhile
            continue
        if int(ppid) == parent.pid and state != "Z":
            pids.add(int(stat.parent.name))
    return pids


def test_kills_and_a_server_restart_still_end_with_exactly_n_trials(
    postgres: PgServer,  # noqa: F811
    corpus_paths,  # noqa: F811
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get(SEED_ENV, "13"))
    plan = schedule(seed)
    print(f"\nchaos seed {seed} ({SEED_ENV}): " + ", ".join(f"{k.what} at {k.at_s} s" for k in plan))
    postgres.reset()
    # 8, not 5: on a quiet machine 4 workers could take every slot of a 5-trial study before the lone
    # search (a second machine) asked for one, and the kill right after its ask had nothing to hit.
    n, runs = 8, tmp_path / "runs"
    log_a, log_b = tmp_path / "search-a.log", tmp_path / "search-b.log"
    procs: list[subprocess.Popen] = []
    try:
        began = time.monotonic()
        a = start(search_cmd(postgres.url, n, 4, runs, corpus_paths), log_a)
        procs.append(a)
        wait_for(lambda: said(log_a, "trials finished"), 120, what="the first search to seed the study")
        b = start(search_cmd(postgres.url, n, 1, runs, corpus_paths), log_b)  # a second machine, unsupervised
        procs.append(b)
        wait_for(lambda: said(log_b, "trials finished"), 120, what="the second search to open the study")
        hit_b = kill_right_after_ask(postgres, lambda: {b.pid}, lambda: b.poll() is not None)
        assert hit_b is not None, "the lone search asked for no trial"
        assert b.wait(timeout=30) == -signal.SIGKILL
        done = [f"lone search pid {b.pid} killed right after asking for trial {hit_b[0]}"]
        killed_at = {hit_b[0]: time.time()}  # trial number -> when its worker was killed
        killed = {b.pid}  # a killed process lingers a moment before it is a zombie: never pick it again

        wait_for(
            lambda: any(t.state == TrialState.RUNNING for t in trials_of(postgres.url)), 120, what="a trial"
        )
        first = time.monotonic()
        restart_s = None
        for event in plan:
            while time.monotonic() - first < event.at_s:
                time.sleep(0.1)
            if event.what == "restart":
                restart_s = postgres.restart()
                done.append(f"server restarted at {time.monotonic() - first:.1f} s ({restart_s:.1f} s)")
            elif event.what == "kill after ask":
                until = time.monotonic() + 60
                hit = kill_right_after_ask(
                    postgres,
                    lambda: worker_pids(a) - killed,
                    lambda: a.poll() is not None or time.monotonic() > until,  # noqa: B023 (called here)
                )
                assert hit is not None, "no supervised worker asked for a trial within 60 s"
                killed_at[hit[0]] = time.time()
                killed.add(hit[1])
                done.append(f"worker pid {hit[1]} killed right after asking for trial {hit[0]}")
            else:

                def victim():
                    live = worker_pids(a) - killed
                    return [
                        t
                        for t in trials_of(postgres.url)
                        if t.state == TrialState.RUNNING and t.user_attrs.get(PID_ATTR) in live
                    ]

                trial = random.Random(seed + len(done)).choice(
                    wait_for(victim, 60, what="a running trial to kill")
                )
                os.kill(trial.user_attrs[PID_ATTR], signal.SIGKILL)
                killed_at[trial.number] = time.time()
                killed.add(trial.user_attrs[PID_ATTR])
                done.append(f"worker pid {trial.user_attrs[PID_ATTR]} killed in trial {trial.number}")
        last_fault = time.monotonic()
        print("chaos done: " + "; ".join(done))

        assert finish(a, log_a, timeout=300) == 0, log_a.read_text()[-3000:]
        ended = time.monotonic()
        text = log_a.read_text()
        assert "Traceback" not in text
        assert text.count("killed by SIGKILL") == 3 and text.count("restarted as pid") == 3, text[-3000:]
        finished = assert_complete(postgres.url, n, runs)  # exactly n, none RUNNING, no params twice
        presets = sorted(t.user_attrs[PRESET_ATTR] for t in finished if PRESET_ATTR in t.user_attrs)
        assert presets == ["basic", "enhanced"], presets
        trials = load(postgres.url).get_trials()
        silent = trials[hit_b[0]]
        assert silent.state == TrialState.FAIL and silent.user_attrs[FAILED_BY_ATTR] == NO_HEARTBEAT
        for t in trials:  # every killed trial that had params was run again, to the end
            if t.state == TrialState.FAIL and t.user_attrs.get(FAILED_BY_ATTR) != "duplicate":
                if {**t.system_attrs.get(FIXED, {}), **t.params}:
                    assert retry_of(trials, t.number) is not None, (t.number, t.user_attrs)
        logs = [p.read_text() for p in (runs / "stability-smoke" / "workers").glob("worker-*.log")]
        assert sum(log.count("=== search run") for log in logs) == 4 + 3, "a worker log was overwritten"
        found = [trials[k].datetime_complete.timestamp() - at for k, at in killed_at.items()]
        again = [
            r.datetime_start.timestamp() - at for k, at in killed_at.items() if (r := retry_of(trials, k))
        ]
        print(
            f"chaos: {len(done) - 1} kills + 1 restart; {n} trials in {ended - began:.0f} s, "
            f"{ended - last_fault:.0f} s after the last fault; killed trial failed after "
            f"{min(found):.1f}-{max(found):.1f} s, its retry started after "
            + (
                f"{min(again):.1f}-{max(again):.1f} s ({len(again)} had params)"
                if again
                else "- (none had params)"
            )
        )
    finally:
        for proc in procs:
            stop(proc)


def test_a_database_gone_for_good_ends_in_one_line_and_the_same_command_resumes(
    corpus_paths,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
) -> None:
    server = start_postgres()  # its own server: this one goes away
    try:
        monkeypatch.setenv(DB_RETRY_ENV, "4")
        n, runs, log = 2, tmp_path / "runs", tmp_path / "search.log"
        cmd = search_cmd(server.url, n, 2, runs, corpus_paths)
        proc = start(cmd, log)
        victim = wait_for(
            lambda: next((t for t in trials_of(server.url) if t.state == TrialState.RUNNING), None),
            120,
            what="a running trial",
        )
        server.stop()
        assert finish(proc, log, timeout=90) == EXIT_DB_UNAVAILABLE
        text = log.read_text()
        assert "Traceback" not in text
        last = text.strip().splitlines()[-1]
        assert last.startswith("error: database postgresql") and "unreachable for 4 s" in last, last
        assert "run the same command to continue" in last

        server.start()
        proc = start(cmd, log)
        assert finish(proc, log, timeout=240) == 0, log.read_text()[-3000:]
        assert_complete(server.url, n, runs)
        trials = load(server.url).get_trials()
        assert trials[victim.number].state == TrialState.FAIL
        assert retry_of(trials, victim.number) is not None, "the interrupted trial was not re-queued"
    finally:
        stop_postgres(server)
