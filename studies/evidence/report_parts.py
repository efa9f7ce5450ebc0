"""The report's sections that need more than a table and a figure: the rediscovery words, the lr probe,
the best trial's sample, and the notes under the margin, fp16 and boundary sections."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from studies.evidence import conclusions, plots, tables
from studies.evidence.conclusions import Point
from studies.evidence.lr_probe import ProbeResult
from studies.evidence.report_html import Page, html_table
from studies.evidence.rests_on import rests_on
from studies.foreign import AnyStudy
from studies.paths import StudyPaths, probe_run, trial_run
from studies.record import TrialRecord
from trainer.telemetry import step_series


def rediscovery(page: Page, pts: list[Point], study_def: AnyStudy) -> None:
    space, values = study_def.space, study_def.preset_values()
    if len(values) < 2:
        page.para(
            "Cannot say: the study judges fewer than two presets, so there is no move from one recipe to "
            "another to compare with (give [presets.NAME] for yours and the one it replaced)."
        )
        return
    (trusted, first), (replaced, second) = list(values.items())[:2]
    names = (trusted, replaced)
    basic, enhanced = space.preset_params(first), space.preset_params(second)
    r = conclusions.rediscovery(pts, basic, enhanced, space, names)
    who = "the seed" if study_def.runs_project_trainer else "you"
    if not r.rows:
        page.para(
            f"Cannot say yet: no trial finished stable, so the study has no stable optimum to compare with "
            f"{who}r move from {html.escape(replaced)} to {html.escape(trusted)}."
            if who == "you"
            else "Cannot say yet: no trial finished stable (aligned, with a free-running decode that stops), so the "
            "study has no stable optimum to compare with the seed's move from enhanced to basic."
        )
        return
    page.raw(
        html_table(
            tables.rediscovery(r, names, project=study_def.runs_project_trainer), table_id="rediscovery-table"
        )
    )
    agree = [x.knob for x in r.rows if x.agrees]
    disagree = [x.knob for x in r.rows if x.agrees is False]
    verdict = (
        "rediscovered" if r.agree == r.total else ("partly rediscovered" if r.agree else "did not rediscover")
    )
    page.para(
        f"<b>The search {verdict} {html.escape(trusted)}</b> ({rests_on(r.n_stable, 'stable trial')}): its stable "
        f"optimum (median of the best {r.top_k} of {r.n_stable} stable trials) moves {r.agree} of {r.total} knobs "
        f"the way {who} did"
        + (f" ({', '.join(agree)})" if agree else "")
        + (f", and not {', '.join(disagree)}" if disagree else "")
        + ". Short trials favour fast learners (high lr, short warmup)"
        + (
            ": the validation below judges the presets over a longer horizon and several seeds."
            if study_def.runs_project_trainer
            else "."
        )
    )


MARGIN_NOTE = (
    "Each rung is a short run of the recipe (the trials' horizon, the study's guards) at its lr times a "
    "power of 2. The search starts where the study's runs say the edge lies and stops when a rung that "
    "survived sits next to one that diverged (docs/margin.md). LR sensitivity (Wortsman et al. 2023), "
    "measured when the rungs start at x1, is the mean over the rungs of min(val mel, untrained val mel) "
    "minus the best rung's val mel (a diverged rung counts as untrained): 0 when every lr tried trains as "
    "well as the best one."
)
FP16_NOTE = (
    "Headroom is log2(65504 / the step's largest |value|) of the cross-attention scores q.k^T and of any "
    "Linear or Conv1d output: the tensors fp16 holds under autocast (trainer/peaks.py). 3 means the value "
    "may grow 8x before fp16 turns it into Inf. A run is warned about when its headroom reaches 0, or when "
    "a straight line through the second half of its curve reaches 0 before its last planned step."
)


def boundary_note(x: str, by: str | None, project: bool, judged: int) -> str:
    """What the boundary table counts, what it rests on, and what it means when its two columns cross."""
    alone = f"{x} and {by} alone" if by else f"{x} alone"
    others = "warmup and loss weights move it" if project else "the other params move it"
    return (
        "<p>Survived: every divergence guard had the steps it needs to judge the run and none fired (an "
        "unaligned or pruned run survives too; this table is about training blowing up, not about training "
        f"well); a trial pruned before that is unjudged and counts as neither. The table "
        f"{rests_on(judged, 'judged trial')}. Where the smallest "
        f"{html.escape(x)} that diverged lies below the largest that survived, the edge is not set by "
        f"{html.escape(alone)} ({others}).</p>"
    )


def probe(page: Page, probe: ProbeResult | None, tele: Path | None, study_def: AnyStudy, out: Path) -> None:
    page.section("probe", "lr range test")
    if probe is None:
        page.para(f"Not run yet: python search.py --study {study_def.name} --lr-probe")
        return
    lrs = [lr for _, lr in step_series(tele, probe_run(study_def.name), "lr")] if tele is not None else []
    if lrs:
        losses = [loss for _, loss in step_series(tele, probe_run(study_def.name), "loss")]
        page.image(plots.lr_probe_plot(lrs, losses, out / "lr_probe.png", probe=probe), "lr probe")
    if probe.diverged:
        page.para(
            f"The lr rose from {probe.start_lr:g} each step (basic's clip {probe.grad_clip:g}, mel weight "
            f"{probe.mel_weight:g}, no warmup) and diverged ({probe.verdict}) at step {probe.divergence_step}, "
            f"lr {probe.divergence_lr:.3g}: {html.escape(str(probe.detail))}. Lowest smoothed loss at lr "
            f"{probe.min_loss_lr:.3g}."
        )
    else:
        page.para(f"The probe ran {probe.steps_run} steps up to lr {probe.end_lr:g} and no guard fired.")


def sample(
    page: Page, pts: list[Point], marked: dict[str, TrialRecord], paths: StudyPaths, out: Path
) -> None:
    from trainer.artifacts import load_sample, write_eval_plot, write_eval_wav
    from tts_model.audio import FeatureConfig

    found: tuple[Path, str] | None = None
    if "best" in marked:
        n = marked["best"].number
        candidates = [paths.sample(trial_run(paths.study, n)), *paths.validation_samples("best")]
        found = next(((p, f"the best trial, {n}") for p in candidates if p.exists()), None)
    if found is None:
        ranked = sorted(
            (p for p in pts if not p.outcome.diverged and p.val_mel is not None),
            key=lambda p: (p.order(), p.number),
        )
        for p in ranked:
            path = paths.sample(trial_run(paths.study, p.number))
            if path.exists():
                why = (
                    "no feasible trial has a saved sample" if "best" in marked else "no trial is feasible yet"
                )
                found = (path, f"trial {p.number} ({p.outcome}), the best ranked that did not diverge: {why}")
                break
    if found is None:  # studies run before trials kept samples: a validation run's last eval, if any
        for name in ("best", "basic", "enhanced"):
            files = paths.validation_samples(name)
            if files:
                found = (files[0], f"validation run {files[0].stem} (no trial of this study kept a sample)")
                break
    if found is None:
        page.para(
            "No saved eval sample (trials keep one from this version on); run more trials or --validate best."
        )
        return
    saved = load_sample(found[0])
    png = write_eval_plot(out / "best_sample.png", saved.sample, step=saved.step, val_mel=saved.val_mel)
    page.para(f"From {html.escape(found[1])}, its eval at step {saved.step}.")
    page.image(png, "mel and attention")
    wav = write_eval_wav(out / "best.wav", saved.sample, FeatureConfig())
    if wav is None:
        page.para("No free-running decode in this sample, so no voice to play.")
    else:
        data = base64.b64encode(wav.read_bytes()).decode("ascii")
        page.raw(
            f'<p>Free-running decode, Griffin-Lim: <audio id="best-wav" controls src="data:audio/wav;base64,{data}">'
            f"</audio> (also {html.escape(str(wav))})</p>"
        )
