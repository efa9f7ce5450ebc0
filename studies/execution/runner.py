"""Run a study to exactly N finished trials, with any number of workers on any number of machines.

`--trials N` is the total the study should reach: a re-run after Ctrl-C or a crash runs only the
remainder. Workers share nothing but the study's storage, so every rule here is a read of the study
followed by a small write, safe to run from many processes at once:

- A trial interrupted by Ctrl-C (or ended by an exception) is tagged ``failed_by`` before Optuna marks
  it FAIL, and is re-queued with its params and preset tag: nothing started is lost.
- A worker killed outright (SIGKILL, power loss) leaves its trial RUNNING. On an RDB server the
  heartbeat finds it: a trial with no heartbeat for the grace period is failed (``failed_by``: "no
  heartbeat") by whichever worker looks first, on any machine, and re-queued by the same rule as an
  interrupt. A trial whose worker died before its first heartbeat is given one first
  (``adopt_silent_trials``), so it goes stale like any other instead of staying RUNNING forever.
  SQLite has no heartbeat here, so a worker fails the RUNNING trials whose process on this host is
  gone: the same recovery, for one machine. The parent of local workers does it at once for a worker
  it saw die (``studies.execution.supervisor``).
- A worker starts a trial only while finished + running < N, and a trial that finds itself beyond N
  (two workers raced) gives its slot back at once; a worker waits while the last slots are held by
  running trials, because one of them may be stale and need a retry.
- Trials run with ask/tell here, not ``study.optimize`` (why: ``studies.execution.resilience``).
- A study with a speech rung promotes screens late, in continuation trials (``studies.promotion``):
  before it asks for a trial a worker lets the objective ``claim`` one that is due, and runs it first.
  Continuations are not among the N (``is_continuation``), and are claimed again, not re-queued.
"""

from __future__ import annotations

import _thread
import contextlib
import gc
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from studies.continuations_fold import is_continuation
from studies.execution.cores import counts
from studies.execution.objective import Objective
from studies.execution.resilience import DatabaseUnavailable, ResilientRDBStorage, heartbeat
from studies.execution.trainer_process import reap
from studies.record import FINISHED

# The attribute keys live in studies.record_keys (defined once); the runner knows them by these names.
from studies.record_keys import ATTEMPT as ATTEMPT_ATTR
from studies.record_keys import FAILED_BY as FAILED_BY_ATTR
from studies.record_keys import HOST as HOST_ATTR
from studies.record_keys import OUT_OF_MEMORY, TRAINER_FAILED
from studies.record_keys import PID as PID_ATTR
from studies.record_keys import PRESET as PRESET_ATTR
from studies.record_keys import RETRY_OF as RETRY_ATTR
from studies.record_keys import TRAINER_TOKEN as TOKEN_ATTR

# Why a trial ended FAIL (its FAILED_BY attribute): interrupt / worker died / no heartbeat / surplus /
# duplicate / the exception's name.
SURPLUS, DUPLICATE, INTERRUPT, DIED = "surplus", "duplicate", "interrupt", "worker died"
NO_HEARTBEAT = "no heartbeat"  # RUNNING without a heartbeat for the grace period: its worker is gone
MAX_ATTEMPTS = 4  # params that failed this often are not re-queued again (a trial that kills its worker)
# Outcomes, not interruptions: the same params would end the same way (a user's trainer that crashed
# at them is FAIL "trainer failed"; studies/execution/foreign_trial.py).
NOT_RETRIED = (DUPLICATE, OUT_OF_MEMORY, TRAINER_FAILED)
FIXED = "fixed_params"  # Optuna's system attr holding an enqueued trial's params


def heartbeat_of(study: optuna.Study) -> tuple[float, float] | None:
    """(interval, grace) of the study's heartbeat in seconds, or None when it has none (SQLite here)."""
    backend = _backend(study)
    interval = getattr(backend, "heartbeat_interval", None)
    if not interval:
        return None
    grace = getattr(backend, "grace_period", None) or 2 * interval
    return float(interval), float(grace)


def fail_stale(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose heartbeat is older than the grace period (``failed_by``: "no
    heartbeat"); return their numbers. Their re-queue is ``requeue_interrupted``'s, like any FAIL.

    Held off for one grace period after this process saw the database come back: every live
    worker's heartbeat was held up by the same outage and needs a moment to land again.
    """
    backend = _backend(study)
    beat = heartbeat_of(study)
    if beat is None:
        return []
    if isinstance(backend, ResilientRDBStorage):  # what open_storage gives; a bare RDBStorage cannot adopt
        if backend.recovered_at is not None and time.monotonic() - backend.recovered_at < beat[1]:
            return []
        backend.adopt_silent_trials(study._study_id)
    failed = []
    for trial_id in backend._get_stale_trial_ids(study._study_id):
        t = backend.get_trial(trial_id)
        if t.state == TrialState.RUNNING and _fail(study, t, NO_HEARTBEAT):
            reap(t.user_attrs.get(TOKEN_ATTR))  # a user's trainer it left on this machine, if any
            failed.append(t.number)
    return failed


def requeue_interrupted(study: optuna.Study, *, dead_pids: Iterable[int] = ()) -> list[int]:
    """Re-queue FAIL trials never retried (params + preset tag); return their numbers.

    First fails the RUNNING trials of this host whose worker is gone: those in ``dead_pids`` (workers
    this process started and has stopped) and, without a heartbeat, any whose pid is not alive. With a
    heartbeat the pid test is skipped (another machine may share the host name): stale trials are
    failed by ``fail_stale``. Duplicate queued trials from racing workers are dropped last.
    """
    beat = heartbeat_of(study) is not None
    fail_stale(study)
    host, dead = socket.gethostname(), set(dead_pids)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get(PID_ATTR)
        if t.user_attrs.get(HOST_ATTR) == host and isinstance(pid, int):
            if pid in dead or (not beat and not _alive(pid)):
                _fail(study, t, DIED)
                reap(t.user_attrs.get(TOKEN_ATTR))  # the dead worker's trainer (a user's command), if any
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    requeued = []
    for t in trials:
        reason = t.user_attrs.get(FAILED_BY_ATTR)
        if t.state != TrialState.FAIL or t.number in retried or reason in NOT_RETRIED or is_continuation(t):
            continue
        params = {**t.system_attrs.get(FIXED, {}), **t.params}
        attempt = _attempt(t)
        if not params or attempt >= MAX_ATTEMPTS:
            continue
        attrs = {RETRY_ATTR: t.number, ATTEMPT_ATTR: attempt if reason == SURPLUS else attempt + 1}
        if PRESET_ATTR in t.user_attrs:
            attrs[PRESET_ATTR] = t.user_attrs[PRESET_ATTR]
        study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
        requeued.append(t.number)
    drop_duplicates(study)
    return requeued


def drop_duplicates(study: optuna.Study) -> list[int]:
    """Fail queued trials that repeat another live one: the same preset seeded, or the same trial
    re-queued, by two workers at once. The oldest copy stays; return the numbers dropped."""
    seen: set[tuple] = set()
    dropped = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t._trial_id):
        if t.state == TrialState.FAIL:
            continue
        key = _identity(t)
        if key is None:
            continue
        if key in seen and t.state == TrialState.WAITING:
            if _fail(study, t, DUPLICATE):
                dropped.append(t.number)
        seen.add(key)
    return dropped


def run_worker(
    study: optuna.Study,
    objective: Objective,
    n_trials: int,
    on_trial_end: Callable[[], None] | None = None,
    *,
    poll_s: float | None = None,
) -> None:
    """Run trials one at a time until the study holds exactly `n_trials` finished ones.

    While the last slots are held by running trials the worker waits instead of leaving: a running
    trial may belong to a dead worker, and someone must be there to retry it once it is found stale.
    With a heartbeat every running trial either ends or goes stale, so the wait ends by itself;
    without one (SQLite) it is bounded (at least 30 s), since only this host's dead pids are seen.
    """
    beat = heartbeat_of(study)
    poll = poll_s if poll_s is not None else (min(beat[0], 5.0) if beat else 2.0)
    # At least 30 s: on a loaded machine polls arrive late, and leaving too early strands a dead
    # worker's trial RUNNING.
    limit = None if beat else max(10 * poll, 30.0)
    waiting_since: float | None = None
    claim = getattr(objective, "claim", None)  # a promotion due now (studies.execution.continuation)
    with _interrupt_once():
        while True:
            requeue_interrupted(study)
            claimed = claim(study, n_trials) if claim is not None else None
            c = counts(study)
            if claimed is None and c.finished >= n_trials:
                return
            if claimed is None and c.finished + c.running >= n_trials:
                waiting_since = waiting_since or time.monotonic()
                if limit is not None and time.monotonic() - waiting_since >= limit:
                    return
                time.sleep(poll)
            else:
                waiting_since = None
                try:
                    run_trial(study, objective, n_trials, trial=claimed)
                finally:
                    gc.collect()  # what optimize(gc_after_trial=True) did: many trials in one process
            if on_trial_end is not None:
                on_trial_end()


def run_trial(
    study: optuna.Study, objective: Objective, n_trials: int, *, trial: optuna.Trial | None = None
) -> None:
    """Ask for one trial, tag it with this process, beat while it runs, tell how it ended.

    The order is the point: the host and pid go on the trial first (a local parent that sees this
    worker die fails the trial at once), then the first heartbeat (from then on any machine finds
    it stale). A trial failed under us meanwhile (a heartbeat held up past the grace period) was
    re-queued by whoever failed it: its result is dropped, not told twice. An objective that may stop
    its worker (a user's trainer that failed N in a row) says so in ``ready``, before a trial exists:
    raised from inside the trial, it would leave a FAIL trial with no params. ``trial``: a continuation
    this worker claimed (created RUNNING with its host and pid): not one of the N, never surplus.
    """
    claimed = trial is not None
    if trial is None:
        ready = getattr(objective, "ready", None)
        if ready is not None:
            ready()
        with warnings.catch_warnings():
            # "Heartbeat of storage is supposed to be used with Study.optimize": this loop beats itself.
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            trial = study.ask()
        trial.set_user_attr(HOST_ATTR, socket.gethostname())
        trial.set_user_attr(PID_ATTR, os.getpid())
    try:
        with heartbeat(study._storage, trial._trial_id):
            if not claimed and _surplus(study, trial._trial_id, n_trials):
                trial.set_user_attr(FAILED_BY_ATTR, SURPLUS)
                study.tell(trial, state=TrialState.FAIL)
                return
            try:
                record = objective(trial)
            except DatabaseUnavailable:
                raise  # nothing can be written; the trial goes stale and is re-queued on resume
            except BaseException as e:  # tagged while RUNNING, so a resume knows to re-queue it
                trial.set_user_attr(
                    FAILED_BY_ATTR, INTERRUPT if isinstance(e, KeyboardInterrupt) else type(e).__name__
                )
                study.tell(trial, state=TrialState.FAIL)
                raise
            if record.oom_step is not None:  # an outcome: recorded by the objective, the worker goes on
                sys.stderr.write(
                    f"trial {trial.number}: out of memory at step {record.oom_step}: {record.oom_detail}\n"
                )
            study.tell(
                trial, record.value if record.state == TrialState.COMPLETE else None, state=record.state
            )
    except optuna.exceptions.UpdateFinishedTrialError:
        sys.stderr.write(
            f"trial {trial.number} was failed by another worker meanwhile (its heartbeat was late); "
            "its retry runs instead\n"
        )


# -- internals -------------------------------------------------------------------------------------
def _fail(study: optuna.Study, t: FrozenTrial, reason: str) -> bool:
    """Mark a trial FAIL with its reason; False if another process got there first.

    A WAITING trial is first claimed the way Optuna pops one (WAITING -> RUNNING under a row lock),
    so a queued copy that a worker has just started is never failed under it.
    """
    storage = study._storage
    try:
        if t.state == TrialState.WAITING and not storage.set_trial_state_values(
            t._trial_id, TrialState.RUNNING
        ):
            return False
        storage.set_trial_user_attr(t._trial_id, FAILED_BY_ATTR, reason)
        return storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def _backend(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage below Optuna's cache (ours, when opened by ``open_storage``)."""
    return getattr(study._storage, "_backend", study._storage)


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of trials that some other trial repeats (our re-queue or Optuna's heartbeat retry)."""
    out: set[int] = set()
    for t in trials:
        if isinstance(t.user_attrs.get(RETRY_ATTR), int):
            out.add(t.user_attrs[RETRY_ATTR])
        out.update(t.system_attrs.get("retry_history", []))
    return out


def _attempt(t: FrozenTrial) -> int:
    return int(t.user_attrs.get(ATTEMPT_ATTR, 1)) + len(t.system_attrs.get("retry_history", []))


def _identity(t: FrozenTrial) -> tuple | None:
    """What makes a queued trial unique: the trial it repeats, or the preset it seeds."""
    history = tuple(t.system_attrs.get("retry_history", []))
    if RETRY_ATTR in t.user_attrs or history:
        return ("retry", t.user_attrs.get(RETRY_ATTR), history)
    if PRESET_ATTR in t.user_attrs:
        return ("preset", t.user_attrs[PRESET_ATTR])
    return None


def _surplus(study: optuna.Study, trial_id: int, n_trials: int) -> bool:
    """True when finished trials plus running ones started before this one already make N.

    Two workers that both saw N-1 both start a trial; each then sees the other, and the younger one
    (higher trial id) steps back, so the study ends with exactly N.
    """
    states = (*FINISHED, TrialState.RUNNING)
    trials = [t for t in study.get_trials(deepcopy=False, states=states) if not is_continuation(t)]
    finished = sum(t.state in FINISHED for t in trials)
    older = sum(t.state == TrialState.RUNNING and t._trial_id < trial_id for t in trials)
    return finished + older >= n_trials


def _alive(pid: int) -> bool:
    """A killed worker that its parent has not reaped yet is a zombie: signal 0 still reaches it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: trust the signal
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@contextlib.contextmanager
def _interrupt_once() -> Iterator[None]:
    """The first Ctrl-C interrupts the trial; more while it is being recorded as FAIL are ignored, so a
    trial is never left RUNNING half-recorded (a terminal and the parent may both send one).

    A Ctrl-C that lands inside a weakref callback or ``__del__`` (SQLAlchemy's, during a garbage
    collection) is swallowed by Python as "Exception ignored in ..."; seen here, the search then ran
    to the end and exited 0. The unraisable hook catches exactly that case, re-arms the handler and
    delivers the interrupt again, outside the callback.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    previous = signal.SIG_DFL if previous is None else previous
    previous_hook = sys.unraisablehook

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    def swallowed(unraisable) -> None:  # sys.UnraisableHookArgs
        if unraisable.exc_type is KeyboardInterrupt and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, handler)
            # From another thread, a moment later: raised here, it would be swallowed again.
            threading.Timer(0.05, _thread.interrupt_main).start()
            return
        previous_hook(unraisable)

    signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = swallowed
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGINT, previous)
