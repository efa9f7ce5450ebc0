"""The seed's question in the seed's own form: KL alignment prior, fp16 autocast, with and without its defect.

The study answers the seed's question in the `prior` alignment form and fp32 (docs/margin.md). The seed
trained with the KL prior, fp16 mixed precision on, and its cross-attention's padding mask applied
twice (+1e18 on padded keys: SEED.md). This runs `stability-quick`'s mapping of `basic` and `enhanced`
in that form (KL prior, fp16 autocast with a GradScaler) on the embedded corpus, once as the project's
model is and once with the defect put back (``trainer.faults.double_mask``, a bench-only switch), each
through ``run_config`` as a trial runs (the study's guards, the diagnosis of a run that diverged), and
prints: recipe, defect, outcome, diverged at, cause named, val mel, least fp16 headroom.

fp16 on a CPU is emulated (~9x slower than fp32), so the runs are short (``--steps``); the question is
whether enhanced goes NaN and basic does not, as the seed reported.

    python bench/seed_form.py [--recipes basic enhanced] [--defect off on] [--steps 150] [--threads 1]
                              [--runs-dir runs]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.errors import UserError  # noqa: E402
from studies.binding import recipe_config  # noqa: E402
from studies.evidence import seed_form  # noqa: E402
from studies.evidence.seed_form import SeedFormRun  # noqa: E402
from studies.execution.runs import RunSetup, load_data, run_config  # noqa: E402
from studies.execution.storage import default_storage_url, require_study_file  # noqa: E402
from studies.paths import StudyPaths  # noqa: E402
from studies.registry import get_study  # noqa: E402
from trainer.faults import double_mask  # noqa: E402
from trainer.headroom import TENSORS, headroom  # noqa: E402
from trainer.loop import RunPlan  # noqa: E402
from trainer.telemetry import step_series  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["basic", "enhanced"], choices=["basic", "enhanced"])
    ap.add_argument("--defect", nargs="+", default=["off", "on"], choices=["off", "on"])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--runs-dir",
        type=Path,
        default=None,
        help="store the runs in this folder's stability-quick study (the report's first section says them)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console = Console(width=160)
    try:
        target = None if args.runs_dir is None else target_study(args.runs_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    quick = get_study("stability-quick")
    study = dataclasses.replace(quick, name="seed-form", alignment_loss="kl", precision="fp16")
    data = load_data(None, None)
    table = Table(title=f"the seed's form: KL prior, fp16 autocast, {args.steps} steps, tiny, CPU")
    for col in (
        "recipe",
        "defect",
        "outcome",
        "diverged at",
        "cause named",
        "val mel",
        "least fp16 headroom",
        "s",
    ):
        table.add_column(col)
    found: list[SeedFormRun] = []
    with tempfile.TemporaryDirectory() as tmp:
        setup = RunSetup(study, data, torch.device("cpu"), StudyPaths(Path(tmp), study.name), 0)
        for name in args.recipes:
            params = study.space.preset_params(study.preset_values()[name])
            cfg = recipe_config(study, params, seed=0, steps=args.steps, where="bench")
            for defect in args.defect:
                run_id = f"seed-form/{name}-{defect}"
                switch = double_mask if defect == "on" else contextlib.nullcontext
                t0 = time.perf_counter()
                with switch():
                    run = run_config(
                        setup, cfg, run_id, plan=RunPlan(decode_sentences=0), with_diagnosis=True
                    )
                v, d = run.verdict, run.verdict.diagnosis
                room = least_headroom(setup.paths.telemetry, run_id)
                where = "" if d is None else (d.module or d.term or ", ".join(d.items))
                found.append(
                    SeedFormRun(
                        recipe=name,
                        defect=defect == "on",
                        outcome=v.outcome,
                        diverged_at=None if v.divergence is None else v.divergence.step,
                        cause=None if d is None else d.cause.value + (f" in {where}" if where else ""),
                        val_mel=v.val_mel if v.val_mel is not None and math.isfinite(v.val_mel) else None,
                        headroom=None if room is None else round(room, 2),
                    )
                )
                table.add_row(
                    name,
                    defect,
                    str(v.outcome),
                    "-" if v.divergence is None else str(v.divergence.step),
                    "-"
                    if d is None
                    else d.cause.value
                    + (
                        f" ({d.module or d.term or ', '.join(d.items)})"
                        if (d.module or d.term or d.items)
                        else ""
                    ),
                    "-" if v.val_mel is None or not math.isfinite(v.val_mel) else f"{v.val_mel:.4f}",
                    "-" if room is None else f"{room:.1f}",
                    f"{time.perf_counter() - t0:.0f}",
                )
                console.print(
                    f"{name}, defect {defect}: {v.outcome}" + ("" if d is None else f"; {d.line()}"),
                    soft_wrap=True,
                )
    console.print(table)
    if target is not None:
        seed_form.store(target, seed_form.summarize(args.steps, found))
        console.print(f"stored in study {target.study_name!r}: {seed_form.stored(target).sentence()}")
    return 0


def target_study(runs_dir: Path) -> optuna.Study:
    """The stability-quick study under ``runs_dir``, which must exist (the bench stores, never creates)."""
    url = default_storage_url("stability-quick", runs_dir)
    require_study_file("stability-quick", url)
    return optuna.load_study(study_name="stability-quick", storage=url)


def least_headroom(telemetry: Path, run_id: str) -> float | None:
    """The smallest fp16 headroom (log2 of 65504 / max) any watched tensor had at any finite step."""
    found = [
        headroom(v)
        for metric in TENSORS
        for _, v in step_series(telemetry, run_id, metric)
        if math.isfinite(v) and v > 0
    ]
    return min(found, default=None)


if __name__ == "__main__":
    sys.exit(main())
