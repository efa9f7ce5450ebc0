"""Coqui TTS's own Trainer on a Tacotron 2 recipe, as one trial of the stability search: it trains and
prints its numbers, one JSON line per step and one per eval, which the search reads as they arrive.

    python -I examples/coqui/coqui_runner.py --config CONFIG.json --train-data DIR --val-data DIR \\
        --out DIR --steps 100 --eval-every 20 [--seed 0] [--tiny]

Why a separate process: coqui-tts-trainer's top-level package is called ``trainer``, as is this
project's, and one process can import only one of them. So this file imports no module of the project,
and runs with ``-I`` (isolated: no script folder, no current folder, no PYTHONPATH on ``sys.path``) so
that ``import trainer`` finds Coqui's even when PYTHONPATH names the repository. The search applies the
guards to the lines (``--command``, studies/metrics_lines.py) and stops this process when one fires.

The recipe is the user's Coqui ``config.json`` (``TTS.config.load_config``): the search writes a copy
per trial with its params at their keys (lr, grad_clip, lr_scheduler_params.warmup_steps, ...). This file
changes only the plumbing of a trial (where it writes, no checkpoints, no figures or test synthesis, the
data folders, evals every ``--eval-every`` steps, the step budget), never the training itself.
``--tiny`` shrinks Tacotron 2's fixed widths (512 embedding, 1024 LSTMs, 512 postnet) so a CPU trains it.

A step line: ``{"step", "loss", "grad_norm", "mel", "alignment", "lr", "decoder", "postnet", "stopnet",
"ga", "coqui_align_error"}``:
- ``loss``: Coqui's total, weighted as it trains; ``decoder`` / ``postnet`` / ``stopnet`` / ``ga``: its
  parts, unweighted (Tacotron 2's mel losses are masked MSE on Coqui's normalised log mel);
- ``mel``: the postnet's unweighted mel loss (the model's output; the spike and ceiling guards read it);
- ``grad_norm``: the gradient norm before clipping, computed here: Coqui's own is 0 when grad_clip <= 0
  and replaces NaN by 0;
- ``alignment``: the share of attention mass near the diagonal (the project's measure,
  ``tts_model.losses.attention_diagonality``, copied below), so the guards' 0.3 "aligned" bar means
  the same as for the project's model; ``coqui_align_error`` is Coqui's own (1 - the mean, over the
  characters, of the largest weight any decoder step gave each).
An eval line: ``{"step", "metric", "alignment", ...}``: the postnet's unweighted mel loss on the
validation folder (lower is better), and the alignment over it.

Coqui never checks for NaN (Tacotron 2 trains on through it): the search's guards do.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: characters, no phonemizer
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY = {"embedding": 64, "rnn": 128, "prenet": 64, "postnet": 64, "postnet_convs": 3}
BAND = 0.1  # the diagonal band of the alignment measure (tts_model.losses.attention_diagonality)


class BadInput(Exception):
    """Something the caller can fix (a flag, a folder, the config): one line, exit 2."""


class BudgetSpent(Exception):  # noqa: N818  (control flow: the trial's steps are done)
    """Raised from the step-end callback to leave ``Trainer._fit`` after the last step."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="coqui_runner.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, help="Coqui config.json (a Tacotron 2 recipe)")
    p.add_argument("--train-data", type=Path, help="LJSpeech-style folder: metadata.csv, wavs/")
    p.add_argument("--val-data", type=Path, help="LJSpeech-style folder for the evals")
    p.add_argument("--out", type=Path, help="where Coqui writes its run folder")
    p.add_argument("--steps", type=int, default=150, help="training steps of the trial")
    p.add_argument("--eval-every", type=int, default=30, help="an eval every N steps (and after the last)")
    p.add_argument("--seed", type=int, default=0, help="Coqui's training_seed")
    p.add_argument("--tiny", action="store_true", help="shrink Tacotron 2's widths (0.6M params, for a CPU)")
    p.add_argument(
        "--bare",
        action="store_true",
        help="Coqui alone: no hooks, no step lines (bench/bench_coqui_overhead.py)",
    )
    p.add_argument(
        "--timing",
        type=Path,
        default=None,
        metavar="FILE",
        help="write each step's end (wall and CPU seconds) and the process's CPU to FILE (JSON)",
    )
    p.add_argument(
        "--write-config",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the example recipe's config.json to FILE and exit",
    )
    return p.parse_args(argv)


def check_args(a: argparse.Namespace) -> None:
    for flag, value in (("--config", a.config), ("--train-data", a.train_data), ("--val-data", a.val_data)):
        if value is None:
            raise BadInput(f"{flag} is required")
    if a.out is None:
        raise BadInput("--out is required (the trial's folder: {run_dir})")
    if not a.config.is_file():
        raise BadInput(f"--config {a.config}: no such file")
    for flag, folder in (("--train-data", a.train_data), ("--val-data", a.val_data)):
        if not (folder / "metadata.csv").is_file():
            raise BadInput(
                f"{flag} {folder}: no metadata.csv there (an LJSpeech-style folder; build one with "
                "`python -m tts_model.corpus --out DIR --utterances 200`)"
            )
    if a.steps < 1 or a.eval_every < 1:
        raise BadInput(f"--steps and --eval-every must be >= 1, got {a.steps} and {a.eval_every}")


def import_coqui() -> None:
    """Coqui's ``trainer`` package, not the project's: say so in one line when the wrong one wins."""
    try:
        import trainer
    except ImportError:
        raise BadInput("coqui-tts-trainer is not installed: pip install -e '.[coqui]'") from None
    if not hasattr(trainer, "Trainer"):
        raise BadInput(
            f"`import trainer` found {Path(trainer.__file__).parent}, not coqui-tts-trainer's: run this file "
            "with `python -I` (the project's own `trainer` package shadows Coqui's)"
        )
    try:
        import TTS  # noqa: F401
    except ImportError:
        raise BadInput("coqui-tts is not installed: pip install -e '.[coqui]'") from None


# -- the recipe -------------------------------------------------------------------------------------
def example_config() -> Any:
    """The example recipe (examples/coqui/config.json): Coqui's Tacotron 2 defaults, except what a CPU
    trial needs (characters, no phonemizer, 22.05 kHz, r=7, batch 8, no extra spectral losses) and NoamLR
    stepped per step (``scheduler_after_epoch=False``: Coqui's default counts its warmup in epochs)."""
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.shared_configs import BaseDatasetConfig, CharactersConfig
    from TTS.tts.configs.tacotron2_config import Tacotron2Config

    chars = CharactersConfig(
        characters_class="TTS.tts.utils.text.characters.Graphemes",
        pad="<PAD>",
        eos="<EOS>",
        bos="<BOS>",
        blank="<BLNK>",
        characters="abcdefghijklmnopqrstuvwxyz'",
        punctuations='!,.?:;"- ',
    )
    audio = BaseAudioConfig(
        sample_rate=22050,
        do_trim_silence=False,  # eSpeak speech has little silence; trimming costs librosa time per item
        num_mels=80,
        hop_length=256,
        win_length=1024,
        fft_size=1024,
        mel_fmax=8000.0,
    )
    return Tacotron2Config(
        run_name="coqui-tacotron2",
        audio=audio,
        batch_size=8,
        eval_batch_size=8,
        num_loader_workers=0,
        num_eval_loader_workers=0,
        text_cleaner="basic_cleaners",
        use_phonemes=False,
        characters=chars,
        add_blank=False,
        datasets=[BaseDatasetConfig(formatter="ljspeech", meta_file_train="metadata.csv", path="")],
        r=7,
        gradual_training=None,
        max_decoder_steps=500,
        mixed_precision=False,
        scheduler_after_epoch=False,
        decoder_diff_spec_alpha=0.0,
        postnet_diff_spec_alpha=0.0,
        decoder_ssim_alpha=0.0,
        postnet_ssim_alpha=0.0,
        test_sentences=[],
    )


def plumb(config: Any, a: argparse.Namespace) -> None:
    """What a trial changes of the user's recipe: where it runs and what it keeps, never how it trains."""
    from TTS.tts.configs.shared_configs import BaseDatasetConfig

    if config.model != "tacotron2":
        raise BadInput(f"--config {a.config}: model {config.model!r}; this runner trains tacotron2 recipes")
    if config.lr_scheduler == "NoamLR" and config.lr_scheduler_params.get("warmup_steps", 1) < 1:
        raise BadInput(f"--config {a.config}: NoamLR needs lr_scheduler_params.warmup_steps >= 1")
    config.output_path = str(a.out)
    config.datasets = [
        BaseDatasetConfig(formatter="ljspeech", meta_file_train="metadata.csv", path=str(a.train_data))
    ]
    config.training_seed = a.seed
    config.epochs = 10**9  # the step budget ends the run
    config.run_eval = False  # evals come from the step callback, every --eval-every steps
    config.test_delay_epochs = 10**9  # no test synthesis (Griffin-Lim) during a trial
    config.save_step = config.print_step = config.plot_step = config.log_model_step = 10**9
    config.save_checkpoints = False
    config.save_best_after = 10**12
    config.save_on_interrupt = False
    config.print_eval = False
    config.dashboard_logger = "tensorboard"  # replaced by a DummyLogger below: nothing is written


def tiny_tacotron2(config: Any) -> Any:
    """Coqui's Tacotron 2 with its fixed widths shrunk: the stock class, built with a Decoder whose
    widths are fixed properties and a narrower Postnet patched in; the 512-wide embedding swapped after."""
    from unittest import mock

    import TTS.tts.models.tacotron2 as t2
    from torch import nn
    from TTS.tts.layers.tacotron.tacotron2 import ConvBNBlock, Decoder

    def fixed(value: int) -> property:
        return property(lambda self: value, lambda self, _v: None)

    small_decoder = type(
        "SmallDecoder",
        (Decoder,),
        {
            "query_dim": fixed(TINY["rnn"]),
            "decoder_rnn_dim": fixed(TINY["rnn"]),
            "prenet_dim": fixed(TINY["prenet"]),
        },
    )

    class SmallPostnet(nn.Module):
        def __init__(self, in_out_channels: int, num_convs: int = TINY["postnet_convs"]) -> None:
            super().__init__()
            ch = [in_out_channels] + [TINY["postnet"]] * (num_convs - 1) + [in_out_channels]
            self.convolutions = nn.ModuleList(
                ConvBNBlock(ch[i], ch[i + 1], kernel_size=5, activation="tanh" if i < num_convs - 1 else None)
                for i in range(num_convs)
            )

        def forward(self, x: Any) -> Any:
            for layer in self.convolutions:
                x = layer(x)
            return x

    config.encoder_in_features = config.decoder_in_features = TINY["embedding"]
    with mock.patch.object(t2, "Decoder", small_decoder), mock.patch.object(t2, "Postnet", SmallPostnet):
        model = t2.Tacotron2(config)
    model.embedding = nn.Embedding(model.num_chars, TINY["embedding"], padding_idx=0)
    return model


def load_samples(config: Any, val_data: Path) -> tuple[list, list]:
    from TTS.tts.configs.shared_configs import BaseDatasetConfig
    from TTS.tts.datasets import load_tts_samples

    train, _ = load_tts_samples(config, eval_split=False)
    val_config = config.copy()
    val_config.datasets = [
        BaseDatasetConfig(formatter="ljspeech", meta_file_train="metadata.csv", path=str(val_data))
    ]
    val, _ = load_tts_samples(val_config, eval_split=False)
    return train, val


# -- the numbers --------------------------------------------------------------------------------------
def diagonality(attn: Any, text_lengths: Any, dec_lengths: Any, band: float = BAND) -> float:
    """Share of attention mass within |n/N - t/T| < max(band, 1/N), mean over real decoder steps: a
    copy of ``tts_model.losses.attention_diagonality`` (this process cannot import the project).
    Uniform attention scores about 2 x band; a sharp diagonal 1."""
    import torch

    b, t_dec, n_text = attn.shape
    n = (torch.arange(n_text, dtype=torch.float32) + 0.5)[None, None, :]
    t = (torch.arange(t_dec, dtype=torch.float32) + 0.5)[None, :, None]
    big_n = text_lengths.float().clamp_min(1.0)[:, None, None]
    big_t = dec_lengths.float().clamp_min(1.0)[:, None, None]
    dec_mask = torch.arange(t_dec)[None, :] < dec_lengths[:, None]  # (B, T_dec)
    text_mask = torch.arange(n_text)[None, :] < text_lengths[:, None]  # (B, N)
    valid = dec_mask[:, :, None] & text_mask[:, None, :]
    half = torch.maximum(torch.tensor(band), 1.0 / big_n)
    inside = ((n / big_n - t / big_t).abs() < half) & valid
    mass = (attn.float() * inside).sum(-1)  # (B, T_dec)
    steps = dec_mask.float()
    return float((mass * steps).sum() / steps.sum().clamp_min(1.0))


def emit(row: dict[str, Any]) -> None:
    """One metrics line, flushed at once (``-I`` ignores PYTHONUNBUFFERED). NaN and inf go out as JSON's
    NaN / Infinity, which Python's json reads back."""
    print(json.dumps(row), flush=True)


class Lines:
    """The model's hooks and the Trainer's step-end callback, turned into metrics lines.

    Per step: ``before_backward_pass`` gives the losses, ``before_gradient_clipping`` the gradients
    (their norm before any clip), a wrapped ``train_step`` the attention; ``on_train_step_end`` prints
    the line, runs the eval when one is due, and ends the run after ``steps``."""

    def __init__(self, model: Any, *, steps: int, eval_every: int, bare: bool = False) -> None:
        """``bare``: Coqui alone, to measure what the lines cost: no hook wrapped, no step line, the
        evals as usual."""
        self.model, self.steps, self.eval_every, self.bare = model, steps, eval_every, bare
        self.pending: dict[str, float] = {}
        self.val: list[tuple[float, int]] = []  # (diagonality, decoder steps) per eval batch
        # At each step's end (--timing): wall clock, this process's CPU, and the wall time the steps
        # spent so far in this class's own code (the numbers and the lines: what a trial adds).
        self.ends: list[tuple[float, float, float]] = []
        self.own_s = 0.0
        model.train_log = lambda *a, **k: None  # Coqui's draw figures and run Griffin-Lim
        model.eval_log = lambda *a, **k: None
        if not bare:
            self._wrap(model)

    def _wrap(self, model: Any) -> None:
        import torch

        train_step, before_backward = model.train_step, model.before_backward_pass

        def train_step_and_attention(batch: dict, criterion: Any, optimizer_idx: int | None = None) -> Any:
            outputs, loss_dict = train_step(batch, criterion, optimizer_idx)
            began = time.perf_counter()
            r = model.decoder.r
            dec_lengths = (batch["mel_lengths"] + r - 1) // r
            with torch.no_grad():
                value = diagonality(outputs["alignments"].detach(), batch["text_lengths"], dec_lengths)
            if model.training:
                self.pending["alignment"] = value
                self.own_s += time.perf_counter() - began
            else:  # Coqui's eval_step calls train_step under inference_mode
                self.val.append((value, int(dec_lengths.sum())))
            return outputs, loss_dict

        def losses(loss_dict: dict, optimizer: Any) -> None:
            before_backward(loss_dict, optimizer)
            began = time.perf_counter()
            for ours, theirs in (("loss", "loss"), ("decoder", "decoder_loss"), ("postnet", "postnet_loss"),
                                 ("stopnet", "stopnet_loss"), ("ga", "ga_loss"), ("coqui_align_error", "align_error")):  # fmt: skip
                if theirs in loss_dict:
                    value = loss_dict[theirs]
                    self.pending[ours] = float(value.detach()) if torch.is_tensor(value) else float(value)
            self.own_s += time.perf_counter() - began

        def grads() -> None:
            began = time.perf_counter()
            found = [p.grad for p in model.parameters() if p.grad is not None]
            self.pending["grad_norm"] = float(torch.nn.utils.get_total_norm(found)) if found else 0.0
            self.own_s += time.perf_counter() - began

        model.train_step = train_step_and_attention
        model.before_backward_pass = losses
        model.before_gradient_clipping = grads

    def on_train_step_end(self, trainer: Any) -> None:
        n = trainer.total_steps_done
        if self.bare:
            self.ends.append((time.time(), time.process_time(), 0.0))
            self._maybe_eval_and_end(trainer, n)
            return
        began = time.perf_counter()
        row, self.pending = self.pending, {}
        optimizer = trainer.optimizer[0] if isinstance(trainer.optimizer, list) else trainer.optimizer
        lr = optimizer.param_groups[0]["lr"]
        emit(
            {
                "step": n,
                "loss": row.get("loss", math.nan),
                "grad_norm": row.get("grad_norm", math.nan),
                "mel": row.get("postnet", math.nan),
                "alignment": row.get("alignment", math.nan),
                "lr": lr,
                **{
                    k: row[k]
                    for k in ("decoder", "postnet", "stopnet", "ga", "coqui_align_error")
                    if k in row
                },
            }
        )
        self.own_s += time.perf_counter() - began
        self.ends.append((time.time(), time.process_time(), self.own_s))
        self._maybe_eval_and_end(trainer, n)

    def _maybe_eval_and_end(self, trainer: Any, n: int) -> None:
        if n % self.eval_every == 0 or n >= self.steps:
            self.evaluate(trainer, n)
        if n >= self.steps:
            raise BudgetSpent

    def evaluate(self, trainer: Any, n: int) -> None:
        """Coqui's own eval over the validation folder; its running averages restart per eval (Coqui
        averages every eval of an epoch together)."""
        from trainer.generic_utils import KeepAverage

        trainer.keep_avg_eval, self.val = KeepAverage(), []
        trainer.eval_epoch()
        trainer.model.train()
        avg = trainer.keep_avg_eval.avg_values
        frames = sum(w for _, w in self.val)
        emit(
            {
                "step": n,
                "metric": float(avg.get("avg_postnet_loss", math.nan)),
                "alignment": sum(v * w for v, w in self.val) / frames if frames else math.nan,
                "val_decoder": float(avg.get("avg_decoder_loss", math.nan)),
                "val_loss": float(avg.get("avg_loss", math.nan)),
            }
        )


def train(a: argparse.Namespace) -> None:
    import torch
    from TTS.config import load_config
    from TTS.tts.models import setup_model

    from trainer import Trainer, TrainerArgs  # coqui-tts-trainer's (pyproject: why isort is off here)
    from trainer.logging.dummy_logger import DummyLogger

    try:
        config = load_config(str(a.config))
    except Exception as e:  # noqa: BLE001  (any unreadable config is one line)
        raise BadInput(f"--config {a.config}: Coqui cannot read it: {str(e).splitlines()[0]}") from None
    plumb(config, a)
    torch.manual_seed(a.seed)  # the model's initial weights: Coqui seeds only once the Trainer starts
    model = tiny_tacotron2(config) if a.tiny else setup_model(config)
    train_samples, val_samples = load_samples(config, a.val_data)
    if not train_samples or not val_samples:
        raise BadInput(f"no utterances in {a.train_data if not train_samples else a.val_data}")
    lines = Lines(model, steps=a.steps, eval_every=a.eval_every, bare=a.bare)
    trainer = Trainer(
        TrainerArgs(),
        config,
        str(a.out),
        model=model,
        train_samples=train_samples,
        eval_samples=val_samples,
        parse_command_line_args=False,
        callbacks={"on_train_step_end": lines.on_train_step_end},
        dashboard_logger=DummyLogger(),
    )
    for handler in list(logging.getLogger("trainer").handlers):  # one log file per Trainer, never closed
        if isinstance(handler, logging.FileHandler):
            logging.getLogger("trainer").removeHandler(handler)
            handler.close()
    for name in ("trainer", "TTS"):  # their INFO lines are not metrics; warnings still show
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        trainer._fit()  # not fit(): it turns every exception into exit 1 and deletes the run folder
    except BudgetSpent:
        pass
    if a.timing is not None:
        wall, cpu, own = zip(*lines.ends, strict=True)
        timing = {
            "step_end_wall": wall,
            "step_end_cpu": cpu,
            "step_end_own": own,
            "process_cpu": time.process_time(),
        }
        a.timing.write_text(json.dumps(timing), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        if a.write_config is None:
            check_args(a)  # before the imports: a typo is one line in a tenth of a second
        import_coqui()
        if a.write_config is not None:
            example_config().save_json(str(a.write_config))
            return 0
        began = time.monotonic()
        train(a)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    print(f"done: {a.steps} steps in {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
