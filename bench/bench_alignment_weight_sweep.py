"""Where does the alignment weight start to align, and where does mel pay for it? A 1-D sweep.

The space's alignment weight (param ``kl_weight``) was the seed's KL weight; in the study's ``prior``
form it weights the forward-sum loss (``studies.binding.form_overrides``), so its range has to come
from that form, not from the seed's KL range. This trains one screen per weight at one fixed recipe,
each a real trial of the study: its config from ``studies.binding.trial_config`` (the base level, the
study's model, precision, batch, evals and guards), its warmup plus the study's horizon, the trial's run
plan and its verdict from the one judge, with no pruner (a sweep compares every weight to its end).

The recipe: ``--base`` (a preset, default ``basic``) for every knob but the lr (``--lr``, default 5e-4,
where the quick study's trials align) and the weight; ``--mel-weight`` overrides the base's. Printed per
weight: the outcome word, the over-prior alignment the judge reads (aligned at >= the guards'
``aligned_over_prior``), val mel at the last eval (unweighted L1: it compares across weights), the
decode's stop rate and ratio, steps/s (wall clock, evals included). Writes OUT/sweep.json and a plot.

    nice -n 19 python bench/bench_alignment_weight_sweep.py               # 8 weights, 2 at once
    python bench/bench_alignment_weight_sweep.py --plot-only              # re-plot OUT/sweep.json

Runs go side by side (``--parallel``, default 2), each with ``--threads`` torch threads (default 1):
on the 2-core machine two one-thread runs train more steps per second than one two-thread one.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_WEIGHTS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)


def run_one(
    study_name: str, base: str, lr: float, mel_weight: float | None, weight: float, seed: int, threads: int
) -> dict:
    """One screen of the study at ``weight``, in this (worker) process; its figures as a plain dict."""
    import torch

    from studies.binding import trial_config, trial_steps
    from studies.execution.runs import load_data
    from studies.registry import get_study
    from trainer.config import config_to_dict
    from trainer.judge import judge
    from trainer.loop import RunPlan, train
    from trainer.presets import preset

    torch.set_num_threads(threads)
    study = get_study(study_name)
    space = study.space
    params = space.preset_params(config_to_dict(preset(base)))
    params.update(lr=lr, kl_weight=weight)
    if mel_weight is not None:
        params["mel_weight"] = mel_weight
    overrides = space.to_overrides(params)
    warmup = int(overrides[space.warmup_param])
    steps = trial_steps(study, warmup)
    cfg = trial_config(study, overrides, seed=seed, where=f"sweep weight {weight:g}", steps=steps)
    data = load_data(None, None)
    t0 = time.perf_counter()
    result = train(
        cfg, data, device=torch.device("cpu"), plan=RunPlan(decode_sentences=study.scoring.decode_sentences)
    )
    wall = time.perf_counter() - t0
    verdict = judge(result, cfg.guards, warmup_steps=cfg.warmup_steps)
    final, decode = verdict.final, verdict.decode
    return {
        "weight": weight,
        "forward_sum_weight": cfg.forward_sum_weight,
        "outcome": str(verdict.outcome.value),
        "over_prior": final.over_prior if final is not None else math.nan,
        "diagonality": final.diagonality if final is not None else math.nan,
        "val_mel": final.val_mel if final is not None else math.nan,
        "stop_rate": decode.stop_rate if decode is not None else math.nan,
        "decode_ratio": decode.ratio if decode is not None else math.nan,
        "steps": result.steps,
        "wall_s": wall,
        "steps_per_s": result.steps / wall,
        "warmup": warmup,
        "aligned_bar": cfg.guards.aligned_over_prior,
    }


def print_table(rows: list[dict]) -> None:
    print(" weight  outcome      over-prior  val mel  stop  ratio  steps  steps/s  wall")
    for r in rows:
        print(
            f"  {r['weight']:5g}  {r['outcome']:11s}  {r['over_prior']:+.3f}      {r['val_mel']:.3f}  "
            f"{r['stop_rate']:.2f}  {r['decode_ratio']:.2f}  {r['steps']:5d}  {r['steps_per_s']:.2f}     "
            f"{r['wall_s']:.0f} s"
        )


def recipe_words(meta: dict) -> str:
    from trainer.presets import preset

    mel = meta["mel_weight"] if meta.get("mel_weight") is not None else preset(meta["base"]).mel_weight
    return f"{meta['base']}'s knobs, lr {meta['lr']:g}, mel weight {mel:g}"


def plot(sweeps: list[dict], path: Path) -> Path:
    """Alignment and val mel against the weight, one line per sweep (``{"meta": ..., "rows": ...}``)."""
    from space.stability import KL_WEIGHT_RANGE

    fig, (ax_a, ax_m) = plt.subplots(1, 2, figsize=(12, 4.4))
    for i, sweep in enumerate(sweeps):
        rows, label = sweep["rows"], recipe_words(sweep["meta"])
        weights = [r["weight"] for r in rows]
        ax_a.plot(weights, [r["over_prior"] for r in rows], marker="o", color=f"C{i}")
        for r in rows:
            ax_a.annotate(
                r["outcome"],
                (r["weight"], r["over_prior"]),
                fontsize=7,
                xytext=(3, -10),
                textcoords="offset points",
                color=f"C{i}",
            )
        ax_m.plot(weights, [r["val_mel"] for r in rows], marker="o", color=f"C{i}", label=label)
    ax_a.axhline(
        sweeps[0]["rows"][0]["aligned_bar"], color="grey", ls="--", lw=1, label="aligned at or above"
    )
    ax_a.set(title="alignment at the screen's end (diagonality over the KL prior's)", ylabel="over-prior")
    ax_m.set(title="val mel L1 at the screen's end (unweighted, teacher forced)", ylabel="val mel")
    low, high = KL_WEIGHT_RANGE
    for ax in (ax_a, ax_m):
        ax.set_xscale("log")
        ax.axvspan(low, high, color="grey", alpha=0.12, label=f"search range {low:g}-{high:g}")
        ax.set_xlabel("alignment weight (the forward-sum weight in the prior form)")
        ax.grid(alpha=0.3)
    ax_a.legend(fontsize=8, loc="upper left")  # the recipes: in the val mel panel, where there is room
    ax_m.legend(fontsize=8, loc="upper left")
    meta = sweeps[0]["meta"]
    title = f"{meta['study']}: one screen per weight (warmup + {meta['horizon']} steps), seed {meta['seed']}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def others(folders: list[Path]) -> list[dict]:
    return [json.loads((folder / "sweep.json").read_text()) for folder in folders]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default="stability-quick")
    p.add_argument("--base", default="basic", help="the preset whose other knobs every run keeps")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--mel-weight", type=float, default=None, help="default: the base preset's")
    p.add_argument("--weights", type=float, nargs="+", default=list(DEFAULT_WEIGHTS))
    p.add_argument("--seed", type=int, default=0, help="the training seed of every run")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--out", type=Path, default=Path("runs/alignment-weight-sweep"))
    p.add_argument("--plot", type=Path, default=Path("docs/alignment_weight_sweep.png"))
    p.add_argument("--plot-only", action="store_true", help="re-plot OUT/sweep.json, train nothing")
    p.add_argument(
        "--with", dest="others", type=Path, nargs="*", default=[], help="other sweeps' OUT, drawn too"
    )
    args = p.parse_args()
    if args.parallel < 1 or args.threads < 1 or min(args.weights) <= 0 or args.lr <= 0:
        print("error: --parallel and --threads must be >= 1, --weights and --lr > 0", file=sys.stderr)
        return 2
    from studies.registry import get_study

    study = get_study(args.study)
    json_path = args.out / "sweep.json"
    if args.plot_only:
        if not json_path.is_file():
            print(f"error: {json_path}: no such file (run the sweep first)", file=sys.stderr)
            return 2
        saved = json.loads(json_path.read_text())
        print_table(saved["rows"])
        print(plot([saved, *others(args.others)], args.plot))
        return 0
    meta = {
        "study": study.name, "base": args.base, "lr": args.lr, "mel_weight": args.mel_weight, "seed": args.seed,
        "horizon": study.horizon, "parallel": args.parallel, "threads": args.threads,
    }  # fmt: skip
    print(
        f"{study.name} ({study.trial_words}); recipe: {recipe_words(meta)}, seed {args.seed}; "
        f"{len(args.weights)} runs, {args.parallel} at once x {args.threads} thread(s)",
        flush=True,
    )
    t0 = time.perf_counter()
    rows = []
    context = multiprocessing.get_context("spawn")  # a fresh torch per run: no threads inherited
    with ProcessPoolExecutor(max_workers=args.parallel, mp_context=context) as pool:
        futures = [
            pool.submit(run_one, study.name, args.base, args.lr, args.mel_weight, w, args.seed, args.threads)
            for w in args.weights
        ]
        for future in as_completed(futures):
            row = future.result()
            rows.append(row)
            print(
                f"  weight {row['weight']:g}: {row['outcome']}, over-prior {row['over_prior']:+.3f}, "
                f"val mel {row['val_mel']:.3f}, {row['steps_per_s']:.2f} steps/s",
                flush=True,
            )
    rows.sort(key=lambda r: r["weight"])
    meta["wall_s"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print()
    print_table(rows)
    png = plot([{"meta": meta, "rows": rows}, *others(args.others)], args.plot)
    print(f"\nwall {meta['wall_s'] / 60:.1f} min; {json_path}; {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
