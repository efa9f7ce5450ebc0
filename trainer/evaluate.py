"""Validation: the teacher-forced mel the search scores, and the free-running decode that keeps it honest.

Teacher forcing alone can lie: a prototype at lr 0.1 had one of the best teacher-forced val mels while
its attention stayed uniform, a model that cannot speak. So the last eval also decodes a few validation
sentences greedily and measures, per sentence, whether they stop within a sane length, how close they land
to the target after DTW on the two-anchor scale of `tts_model.speech_measure` (the decode ratio), and how
monotonically the attention walks the text; `trainer.speech.speaks` turns that into the verdict word.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

from trainer.config import GuardConfig
from trainer.loss_terms import decoder_lengths
from trainer.speech import speaks
from tts_model.batching import Batch
from tts_model.dataset import Example
from tts_model.inference import greedy_decode
from tts_model.losses import (
    attention_diagonality,
    attention_sharpness,
    diagonality_over_prior,
    masked_mel_loss,
)
from tts_model.speech_anchors import DecodeReference
from tts_model.speech_measure import SentenceMeasure, SpeechMeasure, measure_sentence

EVAL_SEED = 1234  # prenet dropout stays on at eval; a fixed seed makes val mel repeatable


@dataclass(frozen=True, slots=True)
class DecodeMetrics:
    """The free-running decode of an eval. Fields after `dtw` have defaults so the evals stored in older
    checkpoints (asdict() of this class, loaded back with DecodeMetrics(**d)) still load."""

    sentences: int
    stop_rate: float  # fraction of sentences whose stop token fired before the length cap
    length_ratio: float  # median decoded frames / target frames
    dtw: float  # mean over sentences of the DTW mel L1 to the target (tts_model.inference.dtw_distance)
    per_sentence: tuple[SentenceMeasure, ...] = ()  # empty in evals from before the speech measure
    speaks: bool = False  # trainer.speech.speaks at this run's thresholds; False when not measured

    def __post_init__(self) -> None:
        # A checkpoint holds asdict() of this record, so its sentences come back as mappings.
        rows = tuple(SentenceMeasure(**s) if isinstance(s, Mapping) else s for s in self.per_sentence)
        object.__setattr__(self, "per_sentence", rows)

    @property
    def measure(self) -> SpeechMeasure:
        return SpeechMeasure(self.per_sentence)

    @property
    def ratio(self) -> float:
        """The median decode ratio (0 = another eSpeak rendering of the words, 1 = a constant frame)."""
        return self.measure.ratio

    @property
    def walk(self) -> float:
        """The median attention walk (share of text positions visited in order)."""
        return self.measure.walk


@dataclass(frozen=True, slots=True)
class EvalMetrics:
    step: int
    val_mel: float  # unweighted L1 of the postnet log-mel, teacher forced: the search's objective
    stop_accuracy: float
    # Teacher-forced stop probability at each utterance's last frame minus its mean over the other frames,
    # averaged: how well the stop head knows where speech ends (0: not at all; an untrained head says ~0.5
    # everywhere; 1: fires at the end only). Continuous where the free-running decode's stop is all or nothing.
    stop_end_margin: float
    diagonality: float  # attention mass near the diagonal, 1 = perfectly aligned
    sharpness: float
    decode: DecodeMetrics | None = None
    # The diagonality as a share of the room above the seed's KL prior's own on the same lengths
    # (`diagonality_over_prior`): 0 = no more diagonal than that prior, 1 = a sharp diagonal. What
    # "aligned" is judged on (GuardConfig.aligned_over_prior), since a KL-trained model passes the raw
    # 0.3 bar by sitting on its prior (0.44). NaN: not measured (an older checkpoint, a foreign trainer).
    over_prior: float = math.nan

    def as_dict(self) -> dict[str, float]:
        """Scalar metrics by name, as the telemetry logs them per eval; with a decode also `decode_ratio`
        (the median) and `speaks` (0 or 1), the names the study and its report read."""
        row = {k: v for k, v in asdict(self).items() if k != "decode"}
        d = self.decode
        if d is not None:
            row.update(
                decode_sentences=d.sentences,
                decode_stop_rate=d.stop_rate,
                decode_length_ratio=d.length_ratio,
                decode_dtw=d.dtw,
                decode_ratio=d.ratio,  # NaN when not measured (no anchors, or an older checkpoint)
                decode_walk=d.walk,
                speaks=float(d.speaks),
            )
        return row


@dataclass(frozen=True, slots=True)
class EvalSample:
    """One validation sentence, for the PNG (target vs predicted mel, attention) and the WAV."""

    target: torch.Tensor  # (T, n_mels)
    predicted: torch.Tensor  # (T, n_mels) teacher forced
    attention: torch.Tensor  # (T_dec, L)
    decoded: torch.Tensor | None  # (T', n_mels) free running


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: list[Batch],
    decode_examples: Sequence[Example | DecodeReference],
    *,
    step: int,
    reduction_factor: int,
    device: torch.device,
    guards: GuardConfig | None = None,
) -> tuple[EvalMetrics, EvalSample]:
    """decode_examples: plain examples give no decode ratio; `TrainData.decode_examples` attaches the
    anchors. guards: the thresholds of `speaks` (default GuardConfig())."""
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(EVAL_SEED)
        mel_sum = stop_correct = stop_total = stop_margin_sum = diag_sum = sharp_sum = over_sum = 0.0
        frames = utterances = 0
        sample: EvalSample | None = None
        for batch in batches:
            batch = batch.to(device)
            # Never the "prior" form's attention prior, at any point of its fade: the eval measures the model
            # as free-running decoding uses it, which has no length to build the prior from. With the prior
            # in, the diagonality would be largely the prior's own (the beta-binomial alone scores 0.76 on
            # the embedded corpus's validation set, bench/aligned_measure.py), so "aligned" could be passed
            # by the prior, and val mel would credit the prior's help. The price: while the prior is on,
            # the eval sees the model off the condition it trains in.
            out = model(batch.text, batch.text_lengths, batch.mel, batch.mel_lengths)
            n_frames = int(batch.mel_lengths.sum())
            mel_sum += (
                float(masked_mel_loss(out.mel_after.float(), batch.mel, batch.mel_lengths, None)) * n_frames
            )
            frames += n_frames
            mask = torch.arange(batch.mel.shape[1], device=device)[None, :] < batch.mel_lengths[:, None]
            predicted_stop = out.stop_logits.float() > 0
            stop_correct += float(((predicted_stop == (batch.stop_target > 0.5)) & mask).sum())
            stop_total += float(mask.sum())
            stop_margin_sum += float(stop_end_margins(out.stop_logits.float(), batch.mel_lengths).sum())
            dec_lengths = decoder_lengths(batch.mel_lengths, reduction_factor)
            bsz = batch.text.shape[0]
            diag_sum += attention_diagonality(out.attention.float(), batch.text_lengths, dec_lengths) * bsz
            sharp_sum += attention_sharpness(out.attention.float(), batch.text_lengths, dec_lengths) * bsz
            over_sum += diagonality_over_prior(out.attention.float(), batch.text_lengths, dec_lengths) * bsz
            utterances += bsz
            if sample is None:
                t, n = int(batch.mel_lengths[0]), int(batch.text_lengths[0])
                sample = EvalSample(
                    target=batch.mel[0, :t].cpu(),
                    predicted=out.mel_after[0, :t].float().cpu(),
                    attention=out.attention[0, : int(dec_lengths[0]), :n].float().cpu(),
                    decoded=None,
                )
        decode, decoded = (
            _decode(model, decode_examples, device, guards or GuardConfig())
            if decode_examples
            else (None, None)
        )
    model.train(was_training)
    assert sample is not None, "the validation set has no batch"
    metrics = EvalMetrics(
        step=step,
        val_mel=mel_sum / max(frames, 1),
        stop_accuracy=stop_correct / max(stop_total, 1.0),
        stop_end_margin=stop_margin_sum / max(utterances, 1),
        diagonality=diag_sum / max(utterances, 1),
        sharpness=sharp_sum / max(utterances, 1),
        decode=decode,
        over_prior=over_sum / max(utterances, 1),
    )
    if decoded is not None:
        sample = EvalSample(sample.target, sample.predicted, sample.attention, decoded)
    return metrics, sample


def stop_end_margins(stop_logits: torch.Tensor, mel_lengths: torch.Tensor) -> torch.Tensor:
    """(B,) p(stop) at each utterance's last real frame minus its mean p(stop) over the frames before it."""
    p = torch.sigmoid(stop_logits)  # (B, T)
    last = (mel_lengths - 1).clamp_min(0)
    frames = torch.arange(p.shape[1], device=p.device)[None, :]
    before = (frames < last[:, None]).to(p.dtype)
    mean_before = (p * before).sum(1) / before.sum(1).clamp_min(1.0)
    return p.gather(1, last[:, None])[:, 0] - mean_before


def _decode(
    model: torch.nn.Module,
    examples: Sequence[Example | DecodeReference],
    device: torch.device,
    guards: GuardConfig,
) -> tuple[DecodeMetrics, torch.Tensor]:
    rows: list[SentenceMeasure] = []
    first: torch.Tensor | None = None
    for item in examples:
        ref = item if isinstance(item, DecodeReference) else DecodeReference(item, None)
        ex = ref.example
        target_frames = ex.mel.shape[0]
        result = greedy_decode(model, ex.text.to(device), max_frames=2 * target_frames + 20)
        mel = result.mel.float().cpu()  # (T', n_mels)
        first = mel if first is None else first
        rows.append(
            measure_sentence(
                id=ex.id,
                decoded_mel=mel,
                attention=result.attention.float().cpu(),  # (T_dec, L)
                stopped=result.stopped,
                reference=ex.mel,
                anchors=ref.anchors,
            )
        )
    measure = SpeechMeasure(tuple(rows))
    metrics = DecodeMetrics(
        sentences=len(rows),
        stop_rate=measure.stop_rate,
        length_ratio=measure.length_ratio,
        dtw=sum(s.dtw for s in rows) / len(rows),
        per_sentence=measure.sentences,
        speaks=speaks(measure, guards),
    )
    assert first is not None
    return metrics, first
