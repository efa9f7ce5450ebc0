"""Promotion by rank, not arrival: the rule on hand-written screens as they end one by one, and the claim
of a due screen in a real Optuna storage (two workers at once, a lost race, what counts as a trial).
The real small study that resumes its screens is in tests/test_promotion.py."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from studies.evidence.rung_agreement import rung_agreement
from studies.execution import continuation
from studies.execution.completion import completion
from studies.execution.cores import counts
from studies.execution.storage import default_storage_url, open_storage
from studies.promotion import Screen, due, promote
from studies.record import DecodeFacts, TrialRecord, load_records
from studies.record_keys import CONTINUES, FAILED_BY, PRESET, SLOT
from studies.registry import SpeechRung
from studies.rung_facts import RungFacts
from trainer.checkpoints import checkpoint_name
from trainer.outcome import Outcome

QUICK = SpeechRung(horizon=2000, eta=3, min_peers=3)  # stability-quick's rung


def facts(val: float, verdict: Outcome = Outcome.STABLE) -> RungFacts:
    return RungFacts(step=300, val_mel=val, verdict=verdict, decode_ratio=1.0)


def arrive(
    vals: Sequence[float | tuple[float, Outcome] | None],
    rung: SpeechRung,
    *,
    count_pruned: bool = True,
    resumed_after: int | None = None,
) -> dict[int, int]:
    """Trials ending one by one in trial-number order (None: pruned before its screen's end), a worker
    calling ``due`` after each: for each screen promoted, how many trials had ended when it was.
    All of ``vals`` asked for at once, or (``resumed_after``) the first that many, then the rest."""
    ended: list[Screen] = []
    when: dict[int, int] = {}
    for number, v in enumerate(vals, start=1):
        if v is not None:
            f = facts(*v) if isinstance(v, tuple) else facts(v)
            ended.append(Screen(number=number - 1, facts=f))
        planned = resumed_after if resumed_after is not None and number <= resumed_after else len(vals)
        for n in due(ended, rung, planned=planned, ended=number if count_pruned else None):
            when[n] = number
            ended = [
                Screen(number=s.number, facts=s.facts, promoted=s.promoted or s.number == n) for s in ended
            ]
    return when


def test_the_first_screen_goes_on_after_its_peers_when_it_ranks_on_top() -> None:
    # The presets are trials 0 and 1: they end before any peer exists. Trial 0 is the best screen.
    when = arrive([1.0, 2.5, 2.4, 2.6, 2.7, 2.8], QUICK)
    assert when[0] == 4  # no decision before min_peers + 1 screens; then the best of 4 goes on
    # The arrival rule (promote at its own end, against the screens so far) never could.
    assert not promote(facts(1.0), [], QUICK, promoted_so_far=0, planned=10)


def test_a_screen_passed_over_goes_on_later_and_a_later_better_one_takes_the_next_slot() -> None:
    #      trial: 0    1    2    3    4    5    6    7    8    9
    vals = [2.0, 2.9, 2.8, 1.5, 2.7, 1.0, 2.6, 2.65, 2.55, 0.9]
    when = arrive(vals, QUICK)
    # At 4 screens the best (3) goes on; at 6 the best not yet promoted is 5, which ended after the
    # preset 0; at 9 the third slot goes to the preset, passed over twice; trial 9, the best of all,
    # ends after the cap of 3 is spent: a promotion once made stands (ASHA's rule).
    assert when == {3: 4, 5: 6, 0: 9}


def test_only_aligned_screens_go_on_and_the_cap_counts_every_promotion() -> None:
    unaligned = [(0.5, Outcome.UNALIGNED)] * 5
    # The unaligned screens' low val mel counts for nothing: the aligned one (5, its decode not stopping
    # yet) goes on at 6 screens, then the feasible ones as they outrank it; the cap leaves 8 out.
    assert arrive([*unaligned, (2.0, Outcome.NO_STOP), 2.5, 3.0, 3.1], QUICK) == {5: 6, 6: 7, 7: 8}
    # Three screens aligned among ten: the three go on, whatever their order.
    vals = [(1.0, Outcome.UNALIGNED)] * 10
    for number in (1, 6, 9):
        vals[number] = (2.0 + number / 10, Outcome.STABLE)
    assert set(arrive(vals, QUICK)) == {1, 6, 9}
    held = [Screen(number=n, facts=facts(1.0 + n), promoted=n < 3) for n in range(9)]
    assert due(held, QUICK, planned=10) == []  # 3 held (e.g. promoted in their own trial, before this rule)
    by_thirds, by_halves = (
        SpeechRung(horizon=10, eta=3, min_peers=3),
        SpeechRung(horizon=10, eta=2, min_peers=3),
    )
    assert due(held, by_thirds, planned=9) == []  # the top 3 of 9 hold theirs
    assert due(held, by_halves, planned=9) == [3]  # the top 4 of 9: one more


def test_trials_pruned_before_their_screen_count_among_the_n_and_rank_last() -> None:
    # make run's shape: 10 trials, the pruner stops 4 before their screen's end, 3 screens align.
    u = Outcome.UNALIGNED
    vals = [2.0, None, (1.0, u), None, 2.5, None, (1.1, u), 2.2, None, (1.2, u)]
    assert arrive(vals, QUICK) == {0: 4, 4: 6, 7: 8}  # 3 pairs for the rung agreement
    # Counted among the survivors only, 6 screens would open 2 slots: 2 pairs, no agreement.
    assert len(arrive(vals, QUICK, count_pruned=False)) == 2


def test_a_study_resumed_with_more_trials_promotes_more_and_the_passed_over_screens_can_go_on() -> None:
    # A 10-trial study spends its 3 promotions (floor(10/3)); trial 9, the best of all, ended after
    # the cap was spent and 8 was passed over. "Run more trials": resumed to 20, the cap is 6, and
    # the old screens compete for the new slots with the new ones, by rank.
    first = [2.0, 2.9, 2.8, 1.5, 2.7, 1.0, 2.6, 2.65, 2.05, 0.9]
    assert arrive(first, QUICK) == {3: 4, 5: 6, 0: 9}
    more = [3.0, 3.1, 1.2, 3.2, 3.3, 3.4, 3.5, 3.6, 3.7, 3.8]
    when = arrive([*first, *more], QUICK, resumed_after=10)
    assert {n: w for n, w in when.items() if w <= 10} == {3: 4, 5: 6, 0: 9}  # the first run, as before
    # Resumed, the three new slots go to trial 9 (the best of all, from the first run) at the first look
    # (here, as the 11th trial ends), to 12 (a new one, third best) as soon as it ends, and to 8 (passed
    # over in the first run, sixth) when floor(18 / 3) makes room for it.
    assert {n: w for n, w in when.items() if w > 10} == {9: 11, 12: 13, 8: 18}
    assert len(arrive([*first, *more], QUICK)) == 6  # 20 asked for at once: 6 as well


# -- the claim, in a real storage ----------------------------------------------------------------------
SPACE = {"lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)}
RUNG = SpeechRung(horizon=100, eta=2, min_peers=2)


def screens_study(tmp_path: Path, vals: Sequence[float]) -> tuple[str, Path]:
    """A SQLite study of finished screens (trial 0 a preset), each with its saved state on disk."""
    url = default_storage_url("claims", tmp_path)
    (tmp_path / "claims").mkdir()
    study = optuna.create_study(study_name="claims", storage=url)
    for n, v in enumerate(vals):
        attrs = facts(v).to_attrs() | ({PRESET: "basic"} if n == 0 else {})
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": 1e-3 * (n + 1)}, distributions=SPACE, value=v, user_attrs=attrs
            )
        )
        (tmp_path / f"trial-{n}").mkdir()
        (tmp_path / f"trial-{n}" / checkpoint_name(300)).write_bytes(b"")  # claim looks for the file only
    return url, tmp_path


def worker_study(url: str) -> optuna.Study:
    return optuna.load_study(study_name="claims", storage=open_storage(url, heartbeat=False))


def test_a_claim_makes_a_running_continuation_with_the_screens_params_outside_the_n(tmp_path: Path) -> None:
    url, states = screens_study(tmp_path, [1.0, 2.0, 3.0, 4.0])  # top floor(4/2): trials 0 and 1
    study = worker_study(url)
    first = continuation.claim(study, RUNG, lambda n: states / f"trial-{n}", 4)
    assert first is not None
    t = study._storage.get_trial(first._trial_id)
    assert t.state == TrialState.RUNNING and t.params == {"lr": 1e-3}
    assert (t.user_attrs[CONTINUES], t.user_attrs[SLOT]) == (0, 0) and PRESET not in t.user_attrs
    assert counts(study).finished == 4 and counts(study).running == 0 and counts(study).continuing == 1
    second = continuation.claim(study, RUNG, lambda n: states / f"trial-{n}", 4)
    assert second is not None and study._storage.get_trial(second._trial_id).user_attrs[CONTINUES] == 1
    assert continuation.claim(study, RUNG, lambda n: states / f"trial-{n}", 4) is None  # the cap is spent
    for trial, val in ((first, 0.5), (second, 0.7)):
        trial.set_user_attr("rung", 1)
        study.tell(trial, val)
    assert completion(study, 4).ok  # 4 screens make the 4 trials asked for; continuations are extra
    records = load_records(study)
    assert [(r.number, r.value, r.promoted, r.continued_as) for r in records] == [
        (0, 0.5, True, 4), (1, 0.7, True, 5), (2, 3.0, None, None), (3, 4.0, None, None),
    ]  # fmt: skip
    assert records[0].preset == "basic" and records[0].screen == facts(1.0)


def test_a_screen_whose_state_is_elsewhere_is_left_to_its_machine(tmp_path: Path) -> None:
    url, states = screens_study(tmp_path, [1.0, 2.0, 3.0, 4.0])
    study = worker_study(url)
    elsewhere = continuation.claim(study, RUNG, lambda n: states / f"not-here-{n}", 4)
    assert elsewhere is None and len(study.get_trials()) == 4


def test_a_claim_that_loses_the_race_steps_back(tmp_path: Path) -> None:
    url, states = screens_study(tmp_path, [1.0, 2.0, 3.0, 4.0])
    a, b = worker_study(url), worker_study(url)
    won = continuation.claim(a, RUNG, lambda n: states / f"trial-{n}", 4)
    assert won is not None
    # Worker b read the study before a's claim landed: it claims the same screen for the same slot.
    screen = b.get_trials()[0]
    assert continuation._create(b, screen, 0, None, 1) is None
    lost = b.get_trials()[-1]
    assert lost.state == TrialState.FAIL and lost.user_attrs[FAILED_BY] == "duplicate"
    assert completion(b, 4).failed == ()  # a lost claim is no failure of the study
    # ... or another screen for the same slot: the older claim keeps it.
    assert continuation._create(b, b.get_trials()[1], 0, None, 1) is None
    # On PostgreSQL the older claim's insert may land after the younger's read: the younger, already
    # running, asks again at its first eval (the objective) and stops there.
    late = b._storage.create_new_trial(b._study_id, template_trial=b._storage.get_trial(won._trial_id))
    assert continuation.outranked(b, late) and not continuation.outranked(b, won._trial_id)


@pytest.mark.parametrize("workers", [2, 4])
def test_workers_claiming_at_once_never_exceed_the_cap_or_claim_a_screen_twice(
    tmp_path: Path, workers: int
) -> None:
    # 4 due; a study of 4 trials asked for: a cap of 2
    url, states = screens_study(tmp_path, [1.0, 1.1, 1.2, 1.3, 2.0, 2.1, 3.0, 3.1])
    studies = [worker_study(url) for _ in range(workers)]
    go = threading.Barrier(workers)
    claimed: list[int] = []

    def work(study: optuna.Study) -> None:
        go.wait()
        for _ in range(3):
            trial = continuation.claim(study, RUNG, lambda n: states / f"trial-{n}", 4)
            if trial is not None:
                claimed.append(trial._trial_id)

    threads = [threading.Thread(target=work, args=(s,)) for s in studies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    live = [t for t in studies[0].get_trials() if CONTINUES in t.user_attrs and t.state != TrialState.FAIL]
    assert len(live) == 2 == len(claimed)
    assert {t.user_attrs[CONTINUES] for t in live} == {0, 1} and {t.user_attrs[SLOT] for t in live} == {0, 1}


def test_the_rung_agreement_says_why_it_has_too_few_pairs() -> None:
    def trial(n: int, verdict: Outcome, *, promoted: bool = False, long: float | None = None) -> TrialRecord:
        decode = (
            DecodeFacts(stop_rate=1.0, length_ratio=1.0, dtw=1.0, ratio=0.6) if long is not None else None
        )
        state = TrialState.COMPLETE if long is not None or not promoted else TrialState.PRUNED
        return TrialRecord(
            number=n, state=state, value=long if promoted else 2.0 + n, screen=facts(2.0 + n, verdict),
            promoted=promoted, rung=int(promoted), decode=decode,
        )  # fmt: skip

    u, s = Outcome.UNALIGNED, Outcome.STABLE
    two_aligned = [trial(0, s, promoted=True, long=1.0), trial(1, s, promoted=True, long=1.2), trial(2, u)]
    assert "too few pairs because only 2 of 3 screens aligned" in rung_agreement(two_aligned).line()
    diverged = [trial(0, s, promoted=True, long=1.0), trial(1, s, promoted=True, long=1.2)]
    diverged += [trial(2, s, promoted=True), trial(3, s)]  # trial 2 went on and diverged there
    assert "1 of the 3 promoted runs have no long-rung value" in rung_agreement(diverged).line()
    three = [trial(n, s, promoted=True, long=1.0 + n / 10) for n in range(3)]
    assert "too few pairs" not in rung_agreement(three).line()
