"""The seed's own form (bench/seed_form.py): its stored runs, the sentence the report's first section says,
and a study that does not exist refused in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna

from studies.evidence import seed_answer, seed_form
from studies.evidence.seed_form import SeedFormRun
from trainer.outcome import Outcome

ROOT = Path(__file__).resolve().parents[1]


def run(recipe: str, defect: bool, outcome: str, step: int | None = None) -> SeedFormRun:
    cause = "fp16-overflow in decoder.0.cross_attn" if step is not None else None
    return SeedFormRun(
        recipe=recipe, defect=defect, outcome=Outcome.read(outcome), diverged_at=step, cause=cause
    )


def test_the_sentence_says_what_each_recipe_did_and_whether_it_is_the_seeds_report() -> None:
    alike = seed_form.summarize(
        150,
        [
            run("basic", False, "unaligned"),
            run("enhanced", False, "unaligned"),
            run("basic", True, "diverged:nonfinite", 1),
            run("enhanced", True, "diverged:nonfinite", 1),
        ],
    )
    said = alike.sentence()
    assert said.startswith("In the seed's own form (KL prior, fp16 autocast, 150-step runs")
    assert "as this project's model is, basic unaligned, enhanced unaligned" in said
    assert "with the seed's mask applied twice, basic diverged at step 1, fp16-overflow in decoder.0" in said
    assert said.endswith(
        "the two recipes behave alike, so the choice between them does not reproduce the seed's report."
    )
    seeds = seed_form.summarize(
        150, [run("basic", True, "stable"), run("enhanced", True, "diverged:nonfinite", 900)]
    )
    assert seeds.sentence().endswith("enhanced diverged where basic did not, as the seed reported.")
    other = seed_form.summarize(
        150, [run("basic", True, "diverged:spike", 9), run("enhanced", True, "stable")]
    )
    assert other.sentence().endswith("this does not reproduce the seed's report (enhanced NaN, basic not).")


def test_two_processes_store_side_by_side_and_the_report_lines_end_with_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    seed_form.store(study, seed_form.summarize(150, [run("enhanced", False, "unaligned")]))
    seed_form.store(
        study,
        seed_form.summarize(
            150, [run("basic", False, "no-stop"), run("basic", True, "diverged:nonfinite", 1)]
        ),
    )
    seed_form.store(
        study, seed_form.summarize(150, [run("basic", False, "unaligned")])
    )  # measured again: replaces
    back = seed_form.stored(optuna.load_study(study_name="s", storage=url))
    assert [(r.recipe, r.defect, str(r.outcome)) for r in back.runs] == [
        ("basic", False, "unaligned"),
        ("enhanced", False, "unaligned"),
        ("basic", True, "diverged:nonfinite"),
    ]
    found = seed_answer.facts({}, {}, {})
    assert seed_answer.lines(found)[-1].startswith("This answer")  # not measured: not said
    assert seed_answer.lines(found, back)[-1] == back.sentence()


def test_the_bench_refuses_a_study_that_does_not_exist_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "seed_form.py"), "--runs-dir", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "nowhere").exists()
