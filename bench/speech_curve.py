"""How long does a recipe need to speak? Decode ratio vs step, one full training per alignment form.

Ground truth for the search's horizons: the trainer's full mode (the same `python -m trainer` a user
runs), every eval's speech measure read back from each run's telemetry. Variants change one knob of
the preset each, so the curves compare the seed's KL prior with guided attention, the attention-score
prior and a narrower KL prior:

    kl       the preset with the seed's KL prior (alignment_loss "kl")
    guided   the preset with guided attention (same weight, same width): what `--train-best` trains
    prior    the preset with the attention-score prior, faded out, and the forward-sum loss
             (alignment_loss "prior", its knobs at their TrainConfig defaults)
    prior-fs1, prior-last   tried while tuning the prior form's defaults (not run unless named): the
             forward-sum loss at weight 1 (not 0.1); the prior and that loss on the alignment layer only
    narrow   the KL prior at alignment_width 0.1 instead of 0.2
    basic, enhanced   the seed's levels themselves (no preset file), the same budget
    curriculum, anneal-early, curriculum-anneal-early   accelerators tried for a sooner speech in the
             prior form: a length curriculum over the first 600 steps (length_curriculum_steps), the
             prior faded out over steps 50-300 instead of 250-1,000, and both
    r4, r5   the prior form at a larger reduction factor (mel frames per decoder step; tiny's own is 3),
             for the whole run: fewer, coarser decoder steps
    fs-low, fs-none   the forward-sum loss at weight 0.1 and 0 (the prior alone), at the model's own
             reduction factor: at 5 most utterances have more symbols than decoder steps, and the loss
             counts those as 0
    fs-fade, fs-fade-early   the forward-sum loss faded with the prior (forward_sum_final_share 0.17:
             0.6 -> 0.1 on the base preset), over the prior's steps 250-1,000 or 50-300

    python bench/speech_curve.py --preset runs/stability-quick/best_preset.json --steps 6300
    python bench/speech_curve.py --out runs/speech-curve --plot-only     # re-plot finished runs
    python bench/speech_curve.py --preset P --as-in-study --steps 2000 --eval-every 250 \
        --variants prior,curriculum,anneal-early,curriculum-anneal-early   # as the speech rung trains

Runs go side by side (`--parallel`, default 2), each with cores / parallel torch threads: on a 2-core
machine two one-thread trainings do more steps per second in total than one two-thread one. Writes
OUT/speech_curve.png and OUT/speech_curve.json, and prints a table per variant.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import GuardConfig  # noqa: E402
from trainer.telemetry import read_evals  # noqa: E402

# name -> changes on the preset file; None: the seed's named level of that name, no preset file
VARIANTS: dict[str, dict | None] = {
    "kl": {"alignment_loss": "kl"},
    "guided": {"alignment_loss": "guided"},
    "prior": {"alignment_loss": "prior"},
    "prior-fs1": {"alignment_loss": "prior", "forward_sum_weight": 1.0},
    "prior-last": {"alignment_loss": "prior", "prior_layers": "alignment"},
    "narrow": {"alignment_loss": "kl", "alignment_width": 0.1},
    # accelerators tried for a sooner speech in the prior form (run them with --as-in-study)
    "curriculum": {"alignment_loss": "prior", "length_curriculum_steps": 600},
    "anneal-early": {"alignment_loss": "prior", "prior_anneal_start": 50, "prior_anneal_end": 300},
    "r4": {"alignment_loss": "prior", "reduction_factor": 4},  # tiny's own is 3
    "r5": {"alignment_loss": "prior", "reduction_factor": 5},
    # r5 drops the forward-sum loss on most utterances (more symbols than decoder steps): is that its lever?
    "fs-low": {"alignment_loss": "prior", "forward_sum_weight": 0.1},
    "fs-none": {"alignment_loss": "prior", "forward_sum_weight": 0.0},
    # the forward-sum loss faded with the prior to a sixth of its weight (0.6 -> 0.1 on the base preset)
    "fs-fade": {"alignment_loss": "prior", "forward_sum_final_share": 0.17},
    "fs-fade-early": {
        "alignment_loss": "prior",
        "forward_sum_final_share": 0.17,
        "prior_anneal_start": 50,
        "prior_anneal_end": 300,
    },  # fmt: skip
    "curriculum-anneal-early": {
        "alignment_loss": "prior",
        "length_curriculum_steps": 600,
        "prior_anneal_start": 50,
        "prior_anneal_end": 300,
    },  # fmt: skip
    "basic": None,
    "enhanced": None,
}
DEFAULT_VARIANTS = ("kl", "guided", "prior", "narrow", "basic", "enhanced")
METRICS = (
    "val_mel", "diagonality", "decode_ratio", "decode_walk", "decode_length_ratio", "decode_stop_rate", "speaks",
)  # fmt: skip


def variant_preset(base: Path, name: str, out: Path, *, as_in_study: bool = False) -> Path | None:
    """The variant's preset file; None for a named level, which `launch` trains on the base preset's
    model size and batch size (the levels' own default model is 'normal': not the same budget).
    `as_in_study`: at the warmup the recipe had in its study (the export scales it up for a full
    training), so the curve is the one a trial or the speech rung trains."""
    changes = VARIANTS[name]
    if changes is None:
        return None
    preset = json.loads(base.read_text())
    if as_in_study:
        preset["warmup_steps"] = int(
            preset.get("provenance", {}).get("warmup_in_study", preset["warmup_steps"])
        )
    preset.update(changes)
    preset.setdefault("provenance", {})["speech_curve_variant"] = name
    path = out / f"{name}.json"
    path.write_text(json.dumps(preset, indent=2, sort_keys=True) + "\n")
    return path


def launch(
    preset: Path | None, name: str, out: Path, *, base: Path, steps: int, eval_every: int, threads: int
) -> subprocess.Popen:
    if preset is None:
        size = json.loads(base.read_text())
        recipe = ["--optimization-level", name, "--model-size", size.get("model_size", "tiny")]
        recipe += ["--batch-size", str(size.get("batch_size", 16))]
    else:
        recipe = ["--preset", str(preset)]
    cmd = [
        sys.executable, "-m", "trainer", *recipe, "--max-steps", str(steps),
        "--eval-every", str(eval_every), "--device", "cpu", "--out", str(out / name),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    log = (out / f"{name}.log").open("w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def curve(out: Path, name: str) -> list[dict]:
    db = out / name / "telemetry.db"
    if not db.exists():
        return []
    return [{k: row.get(k, math.nan) for k in ("step", *METRICS)} for row in read_evals(db, name)]


def first_speaking(rows: list[dict]) -> int | None:
    return next((int(r["step"]) for r in rows if r.get("speaks") == 1.0), None)


def plot(curves: dict[str, list[dict]], path: Path, *, threshold: float) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    hollow_label = "hollow: most decodes do not stop"
    for name, rows in curves.items():
        steps = [r["step"] for r in rows]
        (line,) = axes[0].plot(steps, [r["decode_ratio"] for r in rows], marker="o", label=name)
        # A decode that runs to the length cap gives DTW more frames to warp: its ratio flatters it.
        capped = [r for r in rows if r.get("decode_stop_rate", 1.0) < 0.5]
        axes[0].scatter(
            [r["step"] for r in capped], [r["decode_ratio"] for r in capped], s=90, facecolors="white",
            edgecolors=line.get_color(), zorder=3, label=hollow_label if capped else None,
        )  # fmt: skip
        axes[1].plot(steps, [r["decode_walk"] for r in rows], marker="o", label=name)
        axes[2].plot(steps, [r["val_mel"] for r in rows], marker="o", label=name)
        if capped:
            hollow_label = None
    axes[0].axhline(threshold, color="grey", ls="--", lw=1, label=f"speaks below {threshold}")
    axes[0].set(
        title="decode ratio (0 = eSpeak at another rate, 1 = constant frame)", xlabel="step", ylabel="median"
    )
    axes[1].axhline(GuardConfig().speak_min_attention_walk, color="grey", ls="--", lw=1)
    axes[1].set(title="attention walk (share of symbols visited in order)", xlabel="step")
    axes[2].set(title="val mel L1 (teacher forced)", xlabel="step")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report(curves: dict[str, list[dict]], out: Path, meta: dict) -> None:
    threshold = GuardConfig().speak_max_decode_ratio
    for name, rows in curves.items():
        print(f"\n{name}: first speaks at step {first_speaking(rows) or '-'}")
        print("  step  val_mel  diag  ratio  walk  length  speaks")
        for r in rows:
            print(
                f"  {int(r['step']):5d}  {r['val_mel']:.3f}  {r['diagonality']:.2f}  {r['decode_ratio']:.2f}"
                f"  {r['decode_walk']:.2f}  {r['decode_length_ratio']:.2f}  {int(r['speaks'] == 1.0)}"
            )
    summary = {**meta, "curves": curves, "first_speaks": {n: first_speaking(r) for n, r in curves.items()}}
    (out / "speech_curve.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{plot(curves, out / 'speech_curve.png', threshold=threshold)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", type=Path, default=Path("runs/stability-quick/best_preset.json"))
    p.add_argument(
        "--variants", default=",".join(DEFAULT_VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}"
    )
    p.add_argument("--steps", type=int, default=6300, help="the seed's 100 epochs at batch 16")
    p.add_argument("--eval-every", type=int, default=700)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/speech-curve"))
    p.add_argument("--plot-only", action="store_true", help="read the finished runs in --out, train nothing")
    p.add_argument(
        "--as-in-study",
        action="store_true",
        help="at the warmup the recipe had in its study, as a rung trains",
    )
    args = p.parse_args()
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names or args.parallel < 1 or args.steps < 1 or args.eval_every < 1:
        print(
            f"error: bad flags (variants {unknown or names}, parallel, steps, eval-every > 0)",
            file=sys.stderr,
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "preset": str(args.preset), "steps": args.steps, "eval_every": args.eval_every, "as_in_study": args.as_in_study,
    }  # fmt: skip
    if not args.plot_only:
        if not args.preset.is_file():
            print(
                f"error: --preset {args.preset}: no such file (export one with --export-preset)",
                file=sys.stderr,
            )
            return 2
        threads = max(1, (os.cpu_count() or 1) // args.parallel)
        queue, running, t0 = list(names), {}, time.perf_counter()
        while queue or running:
            while queue and len(running) < args.parallel:
                name = queue.pop(0)
                preset = variant_preset(args.preset, name, args.out, as_in_study=args.as_in_study)
                running[name] = launch(
                    preset,
                    name,
                    args.out,
                    base=args.preset,
                    steps=args.steps,
                    eval_every=args.eval_every,
                    threads=threads,
                )
                print(
                    f"started {name} ({threads} thread{'s' if threads > 1 else ''}), log {args.out / name}.log"
                )
            time.sleep(5)
            for name, proc in list(running.items()):
                if proc.poll() is not None:
                    print(f"{name} ended with exit {proc.returncode} after {time.perf_counter() - t0:.0f} s")
                    del running[name]
        meta["wall_s"] = round(time.perf_counter() - t0)
    report({n: curve(args.out, n) for n in names}, args.out, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
