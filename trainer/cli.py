"""`python -m trainer`: the full training, with the seed's flags, live progress and a plain report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from common.cli import OneLineParser, run_cli
from common.console import make_console
from common.device import describe_device, resolve_device
from common.errors import UserError
from trainer.config import TrainConfig, apply_overrides
from trainer.data import SPEECH_SENTENCES, TrainData, load_train_data
from trainer.diagnosis_full import DIAGNOSES_FILE, diagnose_run, write_diagnoses
from trainer.hooks import RunHooks
from trainer.judge import Judgement, judge
from trainer.loop import RunPlan, StepMetrics, TrainResult, train
from trainer.presets import PRESETS, load_preset_file, preset
from trainer.speech import speak_failures
from tts_model.config import MODEL_SIZES
from tts_model.dataset import DataConfig


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m trainer", description="Train the TTS model with a preset.")
    p.add_argument("--model-size", choices=sorted(MODEL_SIZES), default=None, help="default: the preset's")
    p.add_argument("--optimization-level", choices=sorted(PRESETS), default="basic", help="the named preset")
    p.add_argument("--preset", type=Path, default=None, help="JSON preset applied on top of the level")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument(
        "--max-steps", type=int, default=None, help="stop after this many steps (0: run the epochs)"
    )
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--train-data", type=Path, default=None, help="LJSpeech-style folder (default: embedded corpus)"
    )
    p.add_argument("--val-data", type=Path, default=None)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/train-LEVEL)")
    p.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint in --out")
    return p


def config_from_args(args) -> TrainConfig:
    """The level, then the preset file, then explicit flags: the most specific wins."""
    cfg = preset(args.optimization_level)
    if args.preset is not None:
        cfg, _ = load_preset_file(args.preset, cfg)
    flags = {
        "model_size": args.model_size,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "eval_every": args.eval_every,
        "checkpoint_every": args.checkpoint_every,
        "precision": args.precision,
        "seed": args.seed,
    }
    return apply_overrides(cfg, {k: v for k, v in flags.items() if v is not None}, where="command line")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = make_console(stderr=True)
    cfg = config_from_args(args)
    device = resolve_device(args.device)
    if device.type == "cpu":
        # fp16 autocast on a CPU is slow and the seed's fp16 NaNs are a GPU story; say so, keep going.
        if cfg.precision == "fp16":
            console.print("[yellow]note: fp16 on CPU is emulated and ~7x slower than fp32[/]")
    out = args.out or Path("runs") / f"train-{args.optimization_level}"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.exists() and any(out.glob("checkpoints/*.pt")) and not args.resume:
        raise UserError(
            f"--out {out}: holds checkpoints of an earlier run; add --resume or pick another --out"
        )
    data = load_train_data(args.train_data, args.val_data, DataConfig(), console=console)
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        (out / DIAGNOSES_FILE).unlink(
            missing_ok=True
        )  # an earlier run's, in a folder it left no checkpoint in
    console.print(f"device: {describe_device(device)}")
    recipe = (
        f"preset {args.preset} (on level {args.optimization_level})"
        if args.preset
        else args.optimization_level
    )
    console.print(
        f"training [bold]{recipe}[/] ({cfg.model_size}, {cfg.precision}) on {device}; run folder {out}",
        soft_wrap=True,
    )
    result = _train_with_progress(cfg, data, device, out, resume=args.resume, console=console)
    verdict = judge(result, cfg.guards, warmup_steps=cfg.warmup_steps)
    _report(result, verdict, console, out)
    why_diverged(cfg, data, result, device, console, out)
    console.print(speech_line(verdict, cfg), soft_wrap=True)
    return 0 if verdict.divergence is None and verdict.oom is None else 1


def speech_line(verdict: Judgement, cfg: TrainConfig) -> str:
    """The last line of a full training: does the model it leaves speak, and the figures behind it."""
    final = verdict.final
    decode = verdict.decode
    if final is None or decode is None:
        return "does not speak: no free-running decode was measured (the run ended before its first eval)"
    m = decode.measure
    figures = (
        f"decode ratio {m.ratio:.2f}, attention walk {m.walk:.2f}, {m.stop_rate:.0%} of decodes stop, "
        f"median length {m.length_ratio:.2f}x, at step {final.step}"
    )
    if verdict.speaks:
        return f"speaks: {figures}"
    d = verdict.divergence
    why = [*speak_failures(m, cfg.guards), *([f"diverged at step {d.step}"] if d is not None else [])]
    return f"does not speak: {'; '.join(why)} ({figures})"


def _train_with_progress(
    cfg: TrainConfig, data: TrainData, device: torch.device, out: Path, *, resume: bool, console: Console
) -> TrainResult:
    from trainer.artifacts import write_eval_plot, write_eval_wav

    total = cfg.max_steps if cfg.max_steps > 0 else None
    columns = [
        TextColumn("[bold]step"),
        MofNCompleteColumn(),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[live]}"),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("train", total=total, live="")

        def on_step(m: StepMetrics) -> None:
            live = (
                f"loss {m.loss:.3f} mel {m.mel_l1:.3f} kl {m.kl:.3f} stop {m.stop:.3f} "
                f"|g| {m.grad_norm:.3g} lr {m.lr:.2e}"
            )
            progress.update(task, completed=m.step, live=live)

        def on_eval(ev, sample) -> bool:
            png = write_eval_plot(
                out / "evals" / f"step_{ev.step:08d}.png", sample, step=ev.step, val_mel=ev.val_mel
            )
            write_eval_wav(out / "evals" / f"step_{ev.step:08d}.wav", sample, data.data_cfg.features)
            speech = ""
            if ev.decode is not None:
                m = ev.decode.measure
                word = "speaks" if ev.decode.speaks else "does not speak"
                speech = f", decode ratio {m.ratio:.2f}, walk {m.walk:.2f} ({word})"
            progress.console.print(
                f"eval step {ev.step}: val mel {ev.val_mel:.4f}, stop acc {ev.stop_accuracy:.3f}, "
                f"diagonality {ev.diagonality:.3f}{speech} -> {png}"
            )
            return False

        if total is None:
            from trainer.data import BatchStream

            steps_per_epoch = len(
                BatchStream(data.train, batch_size=cfg.batch_size, seed=cfg.seed, reduction_factor=1)
            )
            progress.update(task, total=steps_per_epoch * cfg.epochs)
        plan = RunPlan(mode="full", out_dir=out, resume=resume, decode_sentences=SPEECH_SENTENCES)
        hooks = RunHooks(
            on_step=on_step,
            on_eval=on_eval,
            telemetry=out / "telemetry.db",
            run_id=out.name,
            warn=lambda msg: progress.console.print(f"[yellow]{msg}[/]"),
        )
        return train(cfg, data, device=device, plan=plan, hooks=hooks)


def why_diverged(
    cfg: TrainConfig, data: TrainData, result: TrainResult, device: torch.device, console: Console, out: Path
) -> None:
    """Each divergence's diagnosis (a replay of the run, only for a run that diverged), one line each,
    kept in the run folder. Called for every run: a resumed run that never diverged again still has the
    checkpoint it resumed from kept for a replay, which ``diagnose_run`` removes."""
    if result.recoveries or result.verdict is not None:
        console.print("diagnosing the divergence (a replay of the run's last steps before it) ...")
    found = diagnose_run(cfg, data, result, device=device)
    if not found:
        return
    path = write_diagnoses(out, found)
    for d in found:
        console.print(d.line(), soft_wrap=True)
    console.print(f"diagnoses in {path}")


def _report(result: TrainResult, verdict: Judgement, console: Console, out: Path) -> None:
    s = result.summary
    table = Table(title="the seed's signs of success (reported, not enforced)")
    table.add_column("sign")
    table.add_column("measured")
    table.add_row("steps", str(result.steps))
    table.add_row("total loss range", f"{s.loss_min:.3f} .. {s.loss_max:.3f}")
    table.add_row("steps with loss in 1..10", f"{100 * s.loss_in_seed_band:.1f}%")
    table.add_row("NaN/Inf events", str(s.nonfinite_events))
    table.add_row("fp16 GradScaler skips (finite loss)", str(s.scaler_skips))
    table.add_row("pre-clip grad norm median / p95", f"{s.grad_norm_median:.3g} / {s.grad_norm_p95:.3g}")
    table.add_row("steps with grad norm < 1", f"{100 * s.grad_norm_below_one:.1f}%")
    table.add_row("recoveries", str(s.recoveries))
    if result.final_eval is not None:
        ev = result.final_eval
        table.add_row("final val mel", f"{ev.val_mel:.4f}")
        table.add_row("attention diagonality", f"{ev.diagonality:.3f}")
        if ev.decode is not None:
            table.add_row(
                "decode stops / length ratio", f"{ev.decode.stop_rate:.2f} / {ev.decode.length_ratio:.2f}"
            )
    if verdict.oom is not None:
        words = f"out of memory at step {verdict.oom.step}: {verdict.oom.detail}"
    elif verdict.divergence is not None:
        d = verdict.divergence
        words = f"diverged: {d.kind} at step {d.step}: {d.detail}"
    else:
        words = verdict.outcome.value
    table.add_row("verdict", words)
    console.print(table)
    console.print(f"checkpoints, telemetry.db and eval PNG/WAV in {out}")


def cli(argv: Sequence[str] | None = None) -> int:
    return run_cli(main, argv)
