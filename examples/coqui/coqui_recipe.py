"""The recipe side of a trial: the example config.json this folder ships, what a trial changes of the
user's recipe (where it runs and what it keeps, never how it trains), and the two data folders' samples."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from coqui_input import BadInput


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
