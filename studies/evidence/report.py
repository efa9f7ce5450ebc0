"""`search.py --study NAME --report`: the study's evidence as one HTML page a person can open from disk.

A study's raw trials do not tell a person whether the search rediscovered `basic`; this page does,
with the stability map, the lr boundary, learning and gradient-norm curves, importances, the presets
table with their multi-seed validation, a plain-words rediscovery check, and the best trial's mel,
attention and voice. Images are embedded (the page is one self-contained file) and also saved as
PNGs beside it under ``report/``. A section with no data says why in a sentence instead of a plot.
"""

from __future__ import annotations

import datetime as dt
import html
import time
from collections import Counter
from pathlib import Path

import optuna

from common.errors import UserError
from studies.evidence import (
    conclusions,
    diagnoses,
    fp16,
    lr_probe,
    margin,
    margin_plots,
    plots,
    report_parts,
    seed_answer,
    seed_form,
    tables,
    transfer,
    transfer_text,
)
from studies.evidence import validate as validation
from studies.evidence.importance import importances
from studies.evidence.report_html import Page, html_table
from studies.evidence.rung_agreement import rung_agreement
from studies.foreign import AnyStudy
from studies.paths import StudyPaths
from studies.record import load_records, preset_trials
from studies.record_keys import COMMAND
from trainer.outcome import Outcome


def write_report(study: optuna.Study, study_def: AnyStudy, paths: StudyPaths) -> Path:
    """Write ``report.html`` in the study's folder (and ``report/*.png``, ``best.wav``); return its path.

    A study of the user's trainer gets the same page, drawn from its own space (no knob of the built-in
    space is assumed), without the sections that train the project's model (lr probe, validation,
    transfer check) or decode its speech."""
    t0 = time.perf_counter()
    records = load_records(study)
    space = study_def.space
    project, metric = study_def.runs_project_trainer, study_def.metric_label
    presets = study_def.presets
    pts = conclusions.points(records, presets)
    if not pts:
        raise UserError(
            f"study {study.study_name!r} has no finished trial yet: nothing to report; run the search first "
            f"(python search.py --study {study.study_name} --trials N)"
        )
    out = paths.report_files
    out.mkdir(parents=True, exist_ok=True)
    tele = paths.telemetry if paths.telemetry.exists() else None
    marked = conclusions.marked_trials(records, presets)
    probe = lr_probe.stored(study) if project else None
    probe_lr = probe.divergence_lr if probe is not None else None
    results = validation.stored_results(study)
    x, others = space.axes
    by = others[0] if others else None
    boundary = []
    if x is not None:
        clip_range = space.range_of(by) if by else None
        boundary = conclusions.lr_boundary(pts, clip_range, x=x, by=by, log_by=by in space.log_params)

    page = Page(f"Stability report: {study.study_name}")
    tally = Counter(p.outcome.value for p in pts)
    oom = [r for r in records if r.outcome is Outcome.OOM]
    oom_words = (
        f" {len(oom)} ran out of device memory (not retried: trials {', '.join(str(r.number) for r in oom)})."
        if oom
        else ""
    )
    how = study_def.trial_words
    if not project and study.user_attrs.get(COMMAND) and "`" not in how:  # a report without --command
        how = f"each trial runs `{study.user_attrs[COMMAND]}`"
    page.para(
        html.escape(
            f"{study_def.description}. {len(pts)} finished trials "
            f"({', '.join(f'{k} {v}' for k, v in sorted(tally.items()))}); {how}.{oom_words}"
            f" Written {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC."
        )
    )

    # --- the seed's question first: stable, how far from the edge, how much fp16 headroom --------------
    margins = margin.stored(study)
    headroom_curves = fp16.curves(study.study_name, marked, margins, tele) if project else {}
    if project:
        page.section("seed", "The seed's question: how far from the edge are basic and enhanced?")
        found = seed_answer.facts(preset_trials(records, seed_answer.PRESETS), margins, headroom_curves)
        said = seed_answer.lines(found, seed_form.stored(study))
        page.para("<br>".join(html.escape(line) for line in said))
    else:
        page.section("yours", "Your presets: did they diverge?")
        lines = [
            seed_answer.yours(name, r, margins.get(name))
            for name, r in preset_trials(records, presets).items()
        ]
        page.para("<br>".join(html.escape(line) for line in lines) or "No preset of yours has finished yet.")

    # --- the answer: the best trials, in the study's one ranking (its first row is the export) --------
    page.section("best", "The best trials, best first")
    top = tables.top_feasible(
        records, space.param_names, metric=metric, speech=study_def.speech_rung is not None
    )
    if top.rows:
        page.raw(html_table(top, table_id="top-table"))
    else:
        page.para(
            "No trial is feasible yet: none ran to its end without a guard firing and passed its checks."
        )

    # --- the presets table and the rediscovery check ---------------------------------------------------
    page.section("presets", "The presets and the best, side by side")
    if marked:
        side = tables.side_by_side(marked, space.param_names, results or None, metric=metric, project=project)
        page.raw(html_table(side, table_id="presets-table"))
    else:
        page.para("No preset or feasible trial has finished yet.")
    trusted = presets[0] if presets else "basic"
    page.section("rediscovery", f"Did the search rediscover {trusted}?")
    report_parts.rediscovery(page, pts, study_def)

    # --- the stability map and the boundary ----------------------------------------------------------
    page.section("map", "Stability map")
    if x is None:
        page.para(
            "Every param of this space is categorical: there is no axis to draw a map or a boundary on."
        )
    else:
        panels = [(y, y in space.log_params) for y in others]
        figure = plots.stability_map(
            pts,
            out / "stability_map.png",
            probe_lr=probe_lr,
            boundary=boundary,
            x=x,
            panels=panels,
            log_x=x in space.log_params,
            metric=metric,
        )
        page.image(figure, "map")
        page.para(
            "Each point is a trial: its marker says how it ended (circle stable, square pruned for "
            f"{html.escape(metric)}, hexagon / pentagon finished unaligned / without a stopping decode, red-edged "
            f"shapes diverged by reason), its colour its {html.escape(metric)} (grey: none). Rings mark the "
            "presets and the best feasible trial."
            + (" The dashed line is the lr probe's divergence lr." if project else "")
        )
        page.section("boundary", f"The {html.escape(x)} boundary")
        page.image(plots.boundary_plot(boundary, out / "lr_boundary.png", probe_lr=probe_lr), "boundary")
        judged = sum(b.survived + b.diverged for b in boundary)
        note = report_parts.boundary_note(x, by, project, judged)
        page.raw(html_table(tables.boundary(boundary), table_id="boundary-table") + note)
    if project:
        report_parts.probe(page, probe, tele, study_def, out)

    # --- why the diverged runs diverged (each replayed after its divergence: trainer/diagnosis.py) --------
    if project:
        page.section("why", "Why it diverged")
        why = diagnoses.why_diverged(records, results, probe, margins)
        if why.rows:
            page.raw(html_table(why, table_id="why-table"))
            lines = diagnoses.cause_lines(records)  # the trials' causes (a seed or the probe alone: none)
            if lines:
                page.para("<br>".join(html.escape(line) for line in lines))
        else:
            page.para("No trial, validation seed, margin rung or lr probe diverged.")

    # --- curves ----------------------------------------------------------------------------------------
    page.section("curves", "Learning curves")
    curves = conclusions.val_curves(study.study_name, records, pts, tele, study_def.telemetry_metric)
    if curves:
        page.image(
            plots.curves_plot(
                curves, out / "val_mel_curves.png", ylabel=metric, title=f"{metric} of every trial"
            ),
            f"{metric} curves",
        )
    else:
        page.para(f"No {html.escape(metric)} was recorded yet: every trial ended before its first eval.")
    norms = conclusions.grad_curves(study_def.name, marked, tele)
    if norms:
        page.image(
            plots.curves_plot(
                norms,
                out / "grad_norm_curves.png",
                ylabel="pre-clip grad norm",
                title="gradient norm",
                log_y=True,
            ),
            "grad norm curves",
        )
    else:
        page.para(
            "No per-step gradient norms for the presets or the best trial (telemetry.db is missing or empty, "
            "or the trainer does not report grad_norm)."
        )

    # --- importances and slices ----------------------------------------------------------------------
    page.section("importance", "What matters: importances and slices")
    both = importances(study, records, space.param_names, metric)
    page.para("<br>".join(html.escape(imp.line()) for imp in both))
    found = {imp.target: dict(imp.values) for imp in both if imp.values}
    if found:
        page.image(plots.importance_plot(found, out / "importances.png"), "importances")
    page.image(
        plots.slice_plot(
            pts, space.param_names, out / "slices.png", log_knobs=space.log_params, metric=metric
        ),
        "slices",
    )
    if not project:
        _your_evidence(page, margins, results, metric)
        page.para(f"Rendered in {time.perf_counter() - t0:.1f} s.")
        path = paths.report
        path.write_text(page.render(), encoding="utf-8")
        return path

    # --- the margin and the fp16 headroom ---------------------------------------------------------------
    page.section("margin", "Margin: how far each recipe's lr sits below the lr where a guard fires")
    if margins:
        page.raw(html_table(tables.margin(margins), table_id="margin-table"))
        page.image(margin_plots.margin_plot(margins, out / "margin.png"), "margin")
        page.para(html.escape(report_parts.MARGIN_NOTE))
    else:
        page.para(f"Not run yet: python search.py --study {study.study_name} --margin basic enhanced best")
    page.section("fp16", "fp16 headroom")
    if headroom_curves:
        page.image(margin_plots.headroom_plot(headroom_curves, out / "fp16_headroom.png"), "fp16 headroom")
        warnings = [w for c in headroom_curves.values() if (w := c.warning()) is not None]
        page.para(
            "<br>".join(html.escape(w) for w in warnings)
            or "No run's fp16 headroom reaches 0, nor trends to it, within its horizon."
        )
        page.para(html.escape(report_parts.FP16_NOTE))
    else:
        page.para(
            "No run of the presets or the best recorded its fp16 peaks (trials from before the trainer kept "
            f"them): python search.py --study {study.study_name} --margin basic enhanced best records them."
        )

    # --- validation --------------------------------------------------------------------------------------
    page.section("validation", "Validation over several seeds")
    if results:
        page.raw(html_table(tables.validation(results), table_id="validation-table"))
        page.image(plots.validation_plot(results, out / "validation.png"), "validation")
    else:
        page.para(
            f"Not run yet: python search.py --study {study.study_name} --validate basic enhanced best --seeds 3"
        )

    # --- short vs long ------------------------------------------------------------------------------
    if study_def.speech_rung is not None:
        page.section("rung", "The speech rung: the best screens trained on until speech can show")
        agreement = rung_agreement(records)
        page.para(html.escape(agreement.line()))
        if agreement.promoted:
            page.raw(html_table(tables.promoted(records), table_id="rung-table"))

    page.section("transfer", "Does the short trial predict the long run?")
    check = transfer.stored(study)
    if check is None:
        page.para(f"Not run yet: python search.py --study {study.study_name} --transfer-check 8")
    else:
        page.para("<br>".join(html.escape(line) for line in transfer_text.lines(check)))
        page.image(plots.transfer_plot(check.runs, out / "transfer.png"), "transfer")
        page.raw(html_table(tables.transfer(check), table_id="transfer-table"))

    # --- what the best trial sounds like -----------------------------------------------------------
    page.section("sample", "The best trial's last eval: mel, attention, voice")
    report_parts.sample(page, pts, marked, paths, out)

    page.para(f"Rendered in {time.perf_counter() - t0:.1f} s.")
    path = paths.report
    path.write_text(page.render(), encoding="utf-8")
    return path


def _your_evidence(page: Page, margins: dict, results: dict, metric: str) -> None:
    """A study of your trainer: its margin and validation, when --margin / --validate have run."""
    if margins:
        page.section("margin", "Margin: how far each recipe's lr sits below the lr where a guard fires")
        page.raw(html_table(tables.margin(margins, project=False), table_id="margin-table"))
    if results:
        page.section("validation", "Validation over several seeds")
        page.raw(html_table(tables.validation(results, metric=metric), table_id="validation-table"))
