"""Does the speech verdict hold from one eval to the next? The median over 3 decoded sentences against 9.

Trains one finished study's trial with the config its exported preset would hold
(``studies.evidence.export.exported_config``, whether or not the export would write it), as a trial
runs (no healing; a collapse ends it), on ``--threads`` torch threads, and from ``--from-step`` on
decodes ``--sentences`` validation sentences (shortest text first) every ``--every`` steps. Each decode is judged twice, from the same model at the same step: on its first
``--first`` sentences (the screens' count, and the speech rung's before it decoded more) and on all of
them, with the trainer's own verdict (``trainer.speech.speaks``). Prints a row per decode and, per count,
how often the verdict flipped between neighbouring decodes and the mean step-to-step change of the
median decode ratio. Writes OUT/flicker.json.

    python bench/speech_verdict_flicker.py --runs-dir runs --trial 6 --steps 2500 --from-step 1500
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studies.evidence.export import exported_config  # noqa: E402
from studies.execution.runs import load_data  # noqa: E402
from studies.execution.storage import default_storage_url  # noqa: E402
from studies.registry import get_study  # noqa: E402
from trainer.config import apply_overrides  # noqa: E402
from trainer.evaluate import EvalMetrics  # noqa: E402
from trainer.hooks import RunHooks  # noqa: E402
from trainer.loop import RunPlan, train  # noqa: E402
from trainer.speech import speaks  # noqa: E402
from tts_model.speech_measure import SpeechMeasure  # noqa: E402


def flips(words: list[bool]) -> int:
    return sum(a != b for a, b in zip(words, words[1:], strict=False))


def mean_change(ratios: list[float]) -> float:
    return statistics.fmean(abs(b - a) for a, b in zip(ratios, ratios[1:], strict=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-dir", type=Path, default=Path("runs"))
    ap.add_argument("--study", default="stability-quick")
    ap.add_argument("--trial", type=int, required=True, help="the trial whose params are trained")
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--from-step", type=int, default=1500, help="the first step that decodes")
    ap.add_argument("--every", type=int, default=50, help="steps between decodes")
    ap.add_argument("--sentences", type=int, default=9)
    ap.add_argument("--first", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/speech-verdict-flicker"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    study_def = get_study(args.study)
    study = optuna.load_study(study_name=args.study, storage=default_storage_url(args.study, args.runs_dir))
    params = next(t.params for t in study.trials if t.number == args.trial)
    cfg = exported_config(study_def, params, where=f"trial {args.trial}")
    cfg = apply_overrides(cfg, {"max_steps": args.steps, "eval_every": args.every}, where="bench")
    data = load_data(None, None)
    rows: list[dict[str, float | int | bool]] = []

    def on_eval(ev: EvalMetrics, _sample) -> bool:
        if ev.decode is None:
            return False
        every = ev.decode.measure
        head = SpeechMeasure(every.sentences[: args.first])
        row = {
            "step": ev.step,
            "val_mel": ev.val_mel,
            "ratio_first": head.ratio,
            "speaks_first": speaks(head, cfg.guards),
            "stops_first": sum(s.stopped for s in head.sentences),
            "ratio_all": every.ratio,
            "speaks_all": speaks(every, cfg.guards),
            "stops_all": sum(s.stopped for s in every.sentences),
        }
        rows.append(row)
        n, k = len(every.sentences), len(head.sentences)
        print(
            f"step {ev.step:>5}  val mel {ev.val_mel:.3f}  first {k}: {head.ratio:.2f} "
            f"{'speaks' if row['speaks_first'] else 'silent'} ({row['stops_first']} stop)  "
            f"all {n}: {every.ratio:.2f} {'speaks' if row['speaks_all'] else 'silent'} ({row['stops_all']} stop)",
            flush=True,
        )
        return False

    rungs = tuple(range(args.from_step, args.steps, args.every))  # each decodes; the last eval does too
    plan = RunPlan(rungs=rungs, decode_sentences=args.sentences)
    print(f"trial {args.trial}: lr {cfg.lr:.2e}, warmup {cfg.warmup_steps}, {args.steps} steps", flush=True)
    train(cfg, data, device=torch.device("cpu"), plan=plan, hooks=RunHooks(on_eval=on_eval))
    for which, label in (("first", f"first {args.first}"), ("all", f"all {args.sentences}")):
        words = [bool(r[f"speaks_{which}"]) for r in rows]
        ratios = [float(r[f"ratio_{which}"]) for r in rows]
        print(
            f"{label}: speaks at {sum(words)} of {len(rows)} decodes, the verdict flipped {flips(words)} times "
            f"between neighbouring decodes, median ratio moved {mean_change(ratios):.3f} a decode on average"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flicker.json").write_text(json.dumps({"trial": args.trial, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
