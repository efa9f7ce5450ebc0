"""What can say "aligned" that the seed's KL prior cannot pass by itself? The candidates, measured.

A trial is "aligned" today when its teacher-forced attention diagonality is >= 0.3
(GuardConfig.collapse_diagonality), but the KL loss pulls the attention onto its own broad prior, which
scores 0.44 alone: a KL-trained model passes without having aligned. This prints, on the validation set
of the embedded corpus (or --train-data/--val-data), the candidates for the reference attentions:

    the KL prior (width 0.2), the beta-binomial score prior of the "prior" form, uniform attention,
    and an untrained tiny model (teacher forced, and its free-running decodes' attention walk)

and, for run folders of `python -m trainer` (e.g. bench/speech_curve.py's), every eval's figures with
the diagonality over the prior (tts_model.losses.diagonality_over_prior) beside the raw one:

    python bench/aligned_measure.py runs/speech-curve/kl runs/speech-curve/guided runs/speech-curve/prior
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import TrainConfig  # noqa: E402
from trainer.data import load_train_data  # noqa: E402
from trainer.evaluate import evaluate  # noqa: E402
from trainer.loop import build_model  # noqa: E402
from trainer.loss_terms import decoder_lengths  # noqa: E402
from trainer.telemetry import read_evals  # noqa: E402
from tts_model.dataset import DataConfig  # noqa: E402
from tts_model.losses import (  # noqa: E402
    alignment_prior,
    attention_diagonality,
    attention_sharpness,
    beta_binomial_log_prior,
)
from tts_model.speech_measure import attention_walk  # noqa: E402

R = 3  # the tiny model's reduction factor: decoder steps per utterance are ceil(frames / 3)
KL_WIDTH = 0.2


def over_prior(diagonality: float, prior_own: float) -> float:
    """diagonality_over_prior from a set-level diagonality and the prior's own on the same set."""
    return (diagonality - prior_own) / (1.0 - prior_own)


def reference_rows(data, batch_size: int) -> list[dict]:
    """Diagonality, sharpness and argmax walk of each reference attention, over the validation set."""
    makers = {
        "KL prior (width 0.2)": lambda tl, dl, shape: alignment_prior(tl, dl, KL_WIDTH, shape=shape),
        "beta-binomial prior (0.5)": lambda tl, dl, shape: (
            beta_binomial_log_prior(tl, dl, 0.5, shape=shape)
            .exp()
            .masked_fill(torch.arange(shape[1])[None, None, :] >= tl[:, None, None], 0.0)
        ),
        "uniform": lambda tl, dl, shape: (
            (torch.arange(shape[1])[None, None, :] < tl[:, None, None]).float().expand(len(tl), *shape)
            / tl[:, None, None].float()
        ),
    }
    rows = []
    for name, make in makers.items():
        diag = sharp = 0.0
        walks, n = [], 0
        for batch in data.val_batches(batch_size, R):
            dl = decoder_lengths(batch.mel_lengths, R)
            shape = (-(-batch.mel.shape[1] // R), batch.text.shape[1])
            attn = make(batch.text_lengths, dl, shape)
            b = len(dl)
            diag += attention_diagonality(attn, batch.text_lengths, dl) * b
            sharp += attention_sharpness(attn, batch.text_lengths, dl) * b
            walks += [attention_walk(attn[i, : int(dl[i]), : int(batch.text_lengths[i])]) for i in range(b)]
            n += b
        rows.append(
            {"name": name, "diagonality": diag / n, "sharpness": sharp / n, "walk": statistics.median(walks)}
        )
    return rows


def untrained_row(data, batch_size: int, sentences: int) -> dict:
    cfg = TrainConfig(model_size="tiny", batch_size=batch_size, seed=0)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data)
    ev, _ = evaluate(
        model,
        data.val_batches(batch_size, R),
        data.decode_examples(sentences),
        step=0,
        reduction_factor=R,
        device=torch.device("cpu"),
    )
    assert ev.decode is not None
    return {
        "name": "untrained tiny model (seed 0)",
        "diagonality": ev.diagonality,
        "sharpness": ev.sharpness,
        "walk": ev.decode.walk,
        "decode_ratio": ev.decode.ratio,
    }


def run_rows(folder: Path, prior_own: float) -> list[dict]:
    db = folder / "telemetry.db"
    rows = []
    for r in read_evals(db, folder.name):
        diag = r.get("diagonality", math.nan)
        rows.append({**r, "over_prior": over_prior(diag, prior_own)})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", type=Path, help="run folders holding telemetry.db")
    p.add_argument("--train-data", type=Path, default=None)
    p.add_argument("--val-data", type=Path, default=None)
    p.add_argument("--batch-size", type=int, default=16, help="as the runs validated with")
    p.add_argument("--sentences", type=int, default=5, help="decoded by the untrained model")
    p.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load_train_data(args.train_data, args.val_data, DataConfig())
    refs = reference_rows(data, args.batch_size) + [untrained_row(data, args.batch_size, args.sentences)]
    prior_own = refs[0]["diagonality"]
    print(f"validation set: {len(data.val)} utterances; the KL prior's own diagonality {prior_own:.3f}")
    print(f"{'reference':32s}  diag   over-prior  sharp  walk")
    for r in refs:
        r["over_prior"] = over_prior(r["diagonality"], prior_own)
        print(
            f"{r['name']:32s}  {r['diagonality']:.3f}  {r['over_prior']:+.3f}     {r['sharpness']:.3f}  {r['walk']:.2f}"
        )
    runs = {}
    for folder in args.runs:
        rows = runs[folder.name] = run_rows(folder, prior_own)
        print(f"\n{folder}")
        print("   step  val_mel  diag   over-prior  sharp  ratio  walk  stop  speaks")
        for r in rows:
            g = lambda k, r=r: r.get(k, math.nan)  # noqa: E731
            print(
                f"  {int(r['step']):5d}  {g('val_mel'):.3f}  {g('diagonality'):.3f}  {g('over_prior'):+.3f}     "
                f"{g('sharpness'):.3f}  {g('decode_ratio'):.2f}  {g('decode_walk'):.2f}  "
                f"{g('decode_stop_rate'):.1f}   {g('speaks')}"
            )
    if args.json is not None:
        args.json.write_text(json.dumps({"references": refs, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
