"""The study's answer in a terminal: top trials, the presets' verdicts, why trials diverged, what mattered."""

from __future__ import annotations

from collections import Counter

import optuna
from rich.console import Console

from studies.evidence import diagnoses, tables
from studies.evidence.conclusions import marked_trials
from studies.evidence.importance import importances
from studies.evidence.rung_agreement import rung_agreement
from studies.foreign import AnyStudy
from studies.record import load_records
from trainer.outcome import Outcome


def print_summary(study: optuna.Study, study_def: AnyStudy, console: Console) -> None:
    records = load_records(study)
    finished = [r for r in records if r.finished]
    names = study_def.space.param_names
    metric, project = study_def.metric_label, study_def.runs_project_trainer
    console.print(f"\n[bold]study {study.study_name}[/]: {len(finished)} finished trials")

    top = tables.top_feasible(finished, names, metric=metric, speech=study_def.speech_rung is not None)
    none_yet = (
        "no feasible trial yet: no finished trial aligned and stopped its decode"
        if project
        else "no feasible trial yet: every finished trial diverged, was pruned, or (with an alignment) did not align"
    )
    console.print(tables.to_rich(top) if top.rows else none_yet)
    columns = marked_trials(finished, study_def.presets)
    console.print(tables.to_rich(tables.side_by_side(columns, names, metric=metric, project=project)))

    if study_def.speech_rung is not None:
        console.print(rung_agreement(records).line(), soft_wrap=True)

    reasons = Counter(r.outcome for r in finished)
    console.print("outcomes: " + ", ".join(f"{k.value} {v}" for k, v in sorted(reasons.items())))
    for r in (r for r in records if r.outcome is Outcome.OOM):
        console.print(
            f"out of memory (not retried): trial {r.number} at step {r.oom_step}: {r.oom_detail}",
            soft_wrap=True,
        )
    if project:
        for line in diagnoses.cause_lines(finished):
            console.print(line, soft_wrap=True)
    half = len(finished) // 2
    if half >= 2:
        early = sum(r.diverged for r in finished[:half]) / half
        late = sum(r.diverged for r in finished[half:]) / (len(finished) - half)
        console.print(f"diverged: {early:.0%} of the first {half} trials, {late:.0%} of the rest")

    for found in importances(study, finished, names, metric):
        console.print(found.line(), soft_wrap=True)
