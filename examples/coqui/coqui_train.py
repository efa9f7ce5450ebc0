"""One trial: Coqui's Trainer on the plumbed recipe, with the metrics lines hooked in, until the step
budget is spent. Coqui's ``trainer`` is imported here, inside the function, after ``import_coqui`` has
made sure it is Coqui's and not the project's."""

from __future__ import annotations

import argparse
import json
import logging
import time

from coqui_input import BadInput
from coqui_lines import BudgetSpent, Lines
from coqui_recipe import load_samples, plumb
from coqui_tiny import tiny_tacotron2


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
