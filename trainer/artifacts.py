"""What a person looks at after an eval: target vs predicted mel with the attention map, and a WAV."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from trainer.evaluate import EvalSample  # noqa: E402
from tts_model.audio import FeatureConfig  # noqa: E402
from tts_model.inference import griffin_lim, write_wav  # noqa: E402


def write_eval_plot(path: Path, sample: EvalSample, *, step: int, val_mel: float) -> Path:
    panels = [("target log-mel", sample.target.T), ("predicted (teacher forced)", sample.predicted.T)]
    if sample.decoded is not None:
        panels.append(("free-running decode", sample.decoded.T))
    fig, axes = plt.subplots(len(panels) + 1, 1, figsize=(10, 2.6 * (len(panels) + 1)))
    for ax, (title, image) in zip(axes, panels, strict=False):
        ax.imshow(image.numpy(), origin="lower", aspect="auto", interpolation="none")
        ax.set_title(title)
        ax.set_ylabel("mel bin")
    ax = axes[-1]
    ax.imshow(sample.attention.T.numpy(), origin="lower", aspect="auto", interpolation="none")
    ax.set_title("cross-attention (alignment layer, head-averaged)")
    ax.set_xlabel("decoder step")
    ax.set_ylabel("text position")
    fig.suptitle(f"step {step}  val mel {val_mel:.4f}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_eval_wav(path: Path, sample: EvalSample, features: FeatureConfig) -> Path | None:
    """Griffin-Lim of the free-running decode (what the model says on its own), if there is one."""
    if sample.decoded is None:
        return None
    wave = griffin_lim(sample.decoded, features)
    write_wav(path, wave, features.sample_rate)
    return path
