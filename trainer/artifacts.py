"""What a person looks at after an eval: target vs predicted mel with the attention map, a WAV, and the
eval's sample itself saved for later (a study's report draws its best trial's without training it again)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from trainer.evaluate import EvalSample  # noqa: E402
from trainer.results import TrainResult  # noqa: E402
from tts_model.audio import FeatureConfig  # noqa: E402
from tts_model.cache import atomic_write  # noqa: E402
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


SAMPLE_FIELDS = ("target", "predicted", "attention", "decoded")  # EvalSample's tensors, as saved


@dataclass(frozen=True, slots=True)
class SavedSample:
    """A run's last eval, kept on disk so a report can show its mel, attention and voice later."""

    step: int
    val_mel: float
    sample: EvalSample


def save_sample(path: Path, result: TrainResult) -> None:
    """Keep the last eval's sample (a few small tensors); nothing when the run never evaluated."""
    sample, final = result.last_sample, result.final_eval
    if sample is None or final is None:
        return
    state = {"step": final.step, "val_mel": final.val_mel, **{k: getattr(sample, k) for k in SAMPLE_FIELDS}}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_sample(path: Path) -> SavedSample:
    state = torch.load(path, weights_only=True)
    sample = EvalSample(state["target"], state["predicted"], state["attention"], state.get("decoded"))
    return SavedSample(step=int(state["step"]), val_mel=float(state["val_mel"]), sample=sample)
