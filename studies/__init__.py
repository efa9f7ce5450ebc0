"""Study definitions, storage, the objective that runs one trial, reports."""

from common import our_trainer

# Before any module here imports `trainer`: with the `coqui` extra installed, site-packages holds
# coqui-tts-trainer's package of the same name (common/our_trainer.py says when that matters).
our_trainer.claim()
