"""A late promotion claimed in the study's storage: the continuation trial that runs a screen's long rung.

Optuna cannot reopen a finished trial, so a promotion (``studies.promotion``) runs in a new trial: the
screen's params (fixed, as an enqueued trial's), ``continues`` = the screen's trial number, and
``promotion_slot`` = which of the rung's promotions it holds. A worker about to start a trial first
calls ``claim``: if a screen is due and its saved state is on this machine, it creates that trial
already RUNNING with its host and pid (never WAITING: another machine's worker would pop it, and the
checkpoint is here), and runs it itself.

Two workers may claim at once (SQLite or PostgreSQL, one machine or many). Each claim is one insert,
then a read: a claim that finds an older live continuation of the same screen or the same slot steps
back at once (FAIL, ``failed_by`` "duplicate", never retried), so the oldest copy stays, as with
queued trials (``runner.drop_duplicates``) and surplus trials (``runner._surplus``). On SQLite trial
ids follow commit order, so the read always sees the older claim. On PostgreSQL ids come from a sequence
and an older claim's insert may commit after the younger one's read: so the objective asks again at the
continuation's first eval (``outranked``), when such a commit has long landed, and the younger one stops
there, a few steps into its long rung, as a duplicate. A continuation
interrupted or killed is not re-queued: its slot is free again and the screen, still due, is claimed
anew (``retry_of`` the one that failed) by a worker of the machine that holds its checkpoint.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Callable, Sequence
from itertools import count
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from studies.continuations_fold import is_continuation
from studies.promotion import Screen, due
from studies.record import FINISHED
from studies.record_keys import ATTEMPT, CONTINUES, FAILED_BY, HOST, PID, PROMOTED, RETRY_OF, SLOT
from studies.registry import SpeechRung
from studies.rung_facts import RungFacts
from trainer.checkpoints import checkpoint_name
from trainer.loop import RunPlan
from trainer.results import TrainResult

MAX_ATTEMPTS = 4  # a screen whose continuation failed this often is not claimed again
FIXED = "fixed_params"  # Optuna's system attr of an enqueued trial: the start-up sampler skips it
# runner.DUPLICATE (not imported: the runner imports the objective, which imports this): never retried,
# and not counted as a failure by the exit status
DUPLICATE_CLAIM = "duplicate"


def rung_end(rung: SpeechRung, warmup: int) -> int:
    """The step a run's long rung ends at: the rung's horizon past the run's own warmup. Its screen was
    planned to there (its lr schedule runs to this end), so only a run to this step resumes a screen."""
    return warmup + rung.horizon


def screen_state(trial_dir: Path, step: int) -> Path:
    """The checkpoint a screen that ended at ``step`` left in its trial's folder."""
    return trial_dir / "checkpoints" / checkpoint_name(step)


def resume_plan(decode_sentences: int, out_dir: Path, lr: Callable[[int], float] | None) -> RunPlan:
    """How a screen's long rung goes on from the state in ``out_dir`` (its screen's checkpoint): the same
    model, optimizer, data position and RNG, to the config's end at the rung's lr (``binding.rung_lr``),
    decoded at its last eval. The continuation trial runs it, and so does the transfer check
    (``studies.execution.long_runs``)."""
    return RunPlan(decode_sentences=decode_sentences, out_dir=out_dir, resume=True, lr_schedule=lr)


def resumed_at(result: TrainResult) -> int:
    """The step a resumed run went on from: its last step less the steps it trained itself."""
    return result.steps - result.summary.steps


def screens(trials: Sequence[FrozenTrial]) -> list[Screen]:
    """The study's finished screens, each marked promoted when a continuation that did not fail holds
    it (or, in a study from before continuations, it went on in its own trial)."""
    held = {t.user_attrs[CONTINUES] for t in trials if is_continuation(t) and t.state != TrialState.FAIL}
    out = []
    for t in trials:
        facts = RungFacts.from_attrs(t.user_attrs)
        if facts is None or is_continuation(t) or t.state not in FINISHED:
            continue
        promoted = t.number in held or t.user_attrs.get(PROMOTED) is True
        out.append(Screen(number=t.number, facts=facts, promoted=promoted))
    return out


def claim(
    study: optuna.Study, rung: SpeechRung, state_dir: Callable[[int], Path], planned: int
) -> optuna.Trial | None:
    """The continuation trial of the best screen due now whose state is in ``state_dir(number)``
    (a checkpoint at its screen's step), created RUNNING for this process; None when none is due here,
    or another worker's claim came first. ``planned``: the trials asked for (``--trials N``), which
    set the cap on promotions."""
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    failed = [t for t in trials if is_continuation(t) and t.state == TrialState.FAIL]
    found = screens(trials)
    facts = {s.number: s.facts for s in found}
    # n: every trial of the N that has ended; one pruned or diverged before its screen's end ranks last
    ended = sum(t.state in FINISHED and not is_continuation(t) for t in trials)
    for number in due(found, rung, planned=planned, ended=ended):
        tries = [
            t
            for t in failed
            if t.user_attrs[CONTINUES] == number and t.user_attrs.get(FAILED_BY) != DUPLICATE_CLAIM
        ]
        if (
            len(tries) >= MAX_ATTEMPTS
            or not (state_dir(number) / checkpoint_name(facts[number].step)).exists()
        ):
            continue
        return _create(
            study, by_number[number], _free_slot(trials), tries[-1].number if tries else None, len(tries) + 1
        )
    return None


def _free_slot(trials: Sequence[FrozenTrial]) -> int:
    taken = {t.user_attrs.get(SLOT) for t in trials if is_continuation(t) and t.state != TrialState.FAIL}
    return next(k for k in count() if k not in taken)


def _create(
    study: optuna.Study, screen: FrozenTrial, slot: int, retry_of: int | None, attempt: int
) -> optuna.Trial | None:
    attrs = {
        CONTINUES: screen.number,
        SLOT: slot,
        HOST: socket.gethostname(),
        PID: os.getpid(),
        ATTEMPT: attempt,
    }
    if retry_of is not None:
        attrs[RETRY_OF] = retry_of
    template = FrozenTrial(
        number=-1,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=dt.datetime.now(),
        datetime_complete=None,
        params=dict(screen.params),
        distributions=dict(screen.distributions),
        user_attrs=attrs,
        system_attrs={FIXED: {**screen.system_attrs.get(FIXED, {}), **screen.params}},
        intermediate_values={},
        trial_id=-1,
    )
    storage = study._storage
    trial_id = storage.create_new_trial(study._study_id, template_trial=template)
    if outranked(study, trial_id):
        storage.set_trial_user_attr(trial_id, FAILED_BY, DUPLICATE_CLAIM)
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        return None
    return optuna.Trial(study, trial_id)


def outranked(study: optuna.Study, trial_id: int) -> bool:
    """Continuation ``trial_id`` lost its claim: an older one that did not fail holds the same screen or
    the same slot (the oldest copy stays)."""
    trials = study._storage.get_all_trials(study._study_id, deepcopy=False)
    mine = next(t for t in trials if t._trial_id == trial_id)
    screen, slot = mine.user_attrs[CONTINUES], mine.user_attrs.get(SLOT)
    return any(
        is_continuation(t)
        and t.state != TrialState.FAIL
        and t._trial_id < trial_id
        and (t.user_attrs[CONTINUES] == screen or t.user_attrs.get(SLOT) == slot)
        for t in trials
    )
