"""Losses and attention metrics as pure functions of tensors and lengths: every one masks padding itself,
so a caller cannot forget to, and a test can feed hand-made tensors.

Positions on the alignment diagonal are bin centres, (n + 0.5) / N against (t + 0.5) / T, so a
one-symbol text or a one-step decoder still has its prior centred on the only cell.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_Q_FLOOR = 1e-8  # the attention is clamped here inside the KL, so log(q) stays finite


def _frame_mask(lengths: Tensor, max_len: int) -> Tensor:
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]  # (B, T)


def masked_mel_loss(
    pred: Tensor, target: Tensor, mel_lengths: Tensor, huber_delta: float | None = None
) -> Tensor:
    """Mean over real frames and mel bins of L1 (`huber_delta=None`) or Huber with that delta, in fp32
    (Huber cannot back-propagate a bf16/fp16 prediction against an fp32 target)."""
    pred, target = pred.float(), target.float()
    mask = _frame_mask(mel_lengths, pred.shape[1])[..., None].to(pred.dtype)  # (B, T, 1)
    if huber_delta is None:
        err = (pred - target).abs()
    else:
        err = F.huber_loss(pred, target, reduction="none", delta=huber_delta)
    return (err * mask).sum() / (mask.sum() * pred.shape[-1]).clamp_min(1.0)


def stop_loss(
    logits: Tensor,
    target: Tensor,
    mel_lengths: Tensor,
    pos_weight: float | Tensor = 5.0,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Weighted BCE over real frames. Smoothing moves targets to t*(1-a) + a/2; with pos_weight > 1 it puts a
    floor under the loss, so totals are not comparable across smoothing settings (compare mel instead).
    A training loop passes `pos_weight` as a tensor on the logits' device, built once: made from a float
    here it is a host-to-device copy on every call."""
    mask = _frame_mask(mel_lengths, logits.shape[1]).to(logits.dtype)  # (B, T)
    target = target.to(logits.dtype) * (1.0 - label_smoothing) + label_smoothing / 2.0
    if isinstance(pos_weight, Tensor):
        weight = pos_weight.to(logits.dtype)
    else:
        weight = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight, reduction="none")
    return (bce * mask).sum() / mask.sum().clamp_min(1.0)


def _offsets(text_lengths: Tensor, dec_lengths: Tensor, t_dec: int, n_text: int) -> tuple[Tensor, Tensor]:
    """(n/N - t/T) at bin centres (B, T_dec, L), and the valid-cell mask (B, T_dec, L)."""
    dev = text_lengths.device
    n = (torch.arange(n_text, device=dev, dtype=torch.float32) + 0.5)[None, None, :]
    t = (torch.arange(t_dec, device=dev, dtype=torch.float32) + 0.5)[None, :, None]
    big_n = text_lengths.float().clamp_min(1.0)[:, None, None]
    big_t = dec_lengths.float().clamp_min(1.0)[:, None, None]
    valid = _frame_mask(dec_lengths, t_dec)[:, :, None] & _frame_mask(text_lengths, n_text)[:, None, :]
    return n / big_n - t / big_t, valid


def alignment_prior(
    text_lengths: Tensor, dec_lengths: Tensor, width: float, *, shape: tuple[int, int] | None = None
) -> Tensor:
    """(B, T_dec, L) diagonal Gaussian prior with std `width` in (n/N - t/T); each valid step sums to 1 over
    its N real text positions; padded cells are 0. `shape` = (T_dec, L) when the tensors are padded wider."""
    t_dec, n_text = shape or (int(dec_lengths.max()), int(text_lengths.max()))
    offset, valid = _offsets(text_lengths, dec_lengths, t_dec, n_text)
    logits = (-0.5 * (offset / width) ** 2).masked_fill(~valid, float("-inf"))
    prior = torch.softmax(logits, dim=-1)
    return prior.masked_fill(~valid, 0.0)  # rows of padded steps were all -inf (NaN): zero them


def alignment_kl(attn: Tensor, text_lengths: Tensor, dec_lengths: Tensor, width: float = 0.2) -> Tensor:
    """The seed's "KL loss": mean over valid decoder steps of KL(prior || attention), attention clamped at 1e-8.

    attn (B, T_dec, L) is the head-averaged cross-attention. 0 when attention equals the prior. At width 0.2
    uniform attention scores 0.48, a Gaussian diagonal of width 0.02 ~8.8 and a one-hot diagonal ~14: this
    direction of KL is mass-covering, so it penalises a sharp alignment MORE than no alignment at all."""
    b, t_dec, n_text = attn.shape
    p = alignment_prior(text_lengths, dec_lengths, width, shape=(t_dec, n_text))
    q = attn.float().clamp_min(_Q_FLOOR)
    plogp = torch.where(p > 0, p * (p.clamp_min(1e-30).log() - q.log()), torch.zeros_like(p))
    steps = _frame_mask(dec_lengths, t_dec).float()  # (B, T_dec)
    return (plogp.sum(-1) * steps).sum() / steps.sum().clamp_min(1.0)


def guided_attention_loss(attn: Tensor, text_lengths: Tensor, dec_lengths: Tensor, g: float = 0.2) -> Tensor:
    """Tachibana et al. (2017): mean over valid (t, n) of attention x (1 - exp(-(n/N - t/T)^2 / (2 g^2)))."""
    b, t_dec, n_text = attn.shape
    offset, valid = _offsets(text_lengths, dec_lengths, t_dec, n_text)
    penalty = 1.0 - torch.exp(-(offset**2) / (2.0 * g * g))
    valid_f = valid.float()
    return (attn.float() * penalty * valid_f).sum() / valid_f.sum().clamp_min(1.0)


@torch.no_grad()
def beta_binomial_log_prior(
    text_lengths: Tensor, dec_lengths: Tensor, scaling: float, *, shape: tuple[int, int] | None = None
) -> Tensor:
    """(B, T_dec, L) log of the beta-binomial alignment prior of Badlani et al. (2022): decoder step t of T
    puts BetaBinomial(n = N - 1, a = scaling * t, b = scaling * (T + 1 - t)) on text position n (t from 1),
    a band along the diagonal that narrows towards both ends. A smaller `scaling` widens it (NeMo's
    Magpie-TTS uses 0.5). Padded cells are 0: no bias where the scores are masked or unused."""
    t_dec, n_text = shape or (int(dec_lengths.max()), int(text_lengths.max()))
    dev = text_lengths.device
    k = torch.arange(n_text, device=dev, dtype=torch.float32)[None, None, :]  # (1, 1, L)
    t = torch.arange(1, t_dec + 1, device=dev, dtype=torch.float32)[None, :, None]  # (1, T_dec, 1)
    n = (text_lengths.float().clamp_min(1.0) - 1.0)[:, None, None]  # (B, 1, 1)
    big_t = dec_lengths.float().clamp_min(1.0)[:, None, None]
    valid = _frame_mask(dec_lengths, t_dec)[:, :, None] & _frame_mask(text_lengths, n_text)[:, None, :]
    # Clamped so padded cells stay finite before they are zeroed.
    a = scaling * t.minimum(big_t)  # (B, T_dec, 1)
    b = scaling * (big_t + 1.0 - t).clamp_min(1.0)
    k = k.minimum(n)  # (B, 1, L)
    log_pmf = (
        torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
        + _log_beta(k + a, n - k + b) - _log_beta(a, b)
    )  # fmt: skip
    return log_pmf.masked_fill(~valid, 0.0)


def _log_beta(x: Tensor, y: Tensor) -> Tensor:
    return torch.lgamma(x) + torch.lgamma(y) - torch.lgamma(x + y)


def annealed_log_prior(log_prior: Tensor, strength: float) -> Tensor:
    """The prior faded towards no prior: log(p + (1 - p)(1 - strength)), as NeMo's Magpie-TTS fades it
    (the prior interpolated towards all ones). strength 1: the prior (floored at 1e-8, so a cell it rules
    out gets -18.4, not -inf); strength 0: all zeros, no bias."""
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"annealed_log_prior: strength must be in [0, 1], got {strength}")
    p = log_prior.exp()
    return (p + (1.0 - p) * (1.0 - strength)).clamp_min(_Q_FLOOR).log()


def forward_sum_loss(
    attn: Tensor, text_lengths: Tensor, dec_lengths: Tensor, blank_logprob: float = -1.0
) -> Tensor:
    """The forward-sum alignment loss (Badlani et al. 2022, RAD-TTS; NeMo's ForwardSumLoss): minus the log
    of the total probability, summed over every monotonic path that visits each text symbol in order, that
    the decoder steps emit the text, computed by CTC with the attention as the emission probabilities and
    an extra blank (log prob `blank_logprob` before normalising) that lets a step emit nothing.

    attn (B, T_dec, L) rows sum to 1 over the real text. Mean over the batch of the loss per symbol
    (`F.ctc_loss`'s "mean"); an utterance with fewer steps than symbols cannot be aligned and counts 0.
    Unlike the KL and guided losses it names no position: any monotonic walk through all the text scores
    well, however its pace varies. On CUDA, `F.ctc_loss` copies the two length tensors to the host (a
    sync per call)."""
    b, t_dec, n_text = attn.shape
    log_attn = attn.float().clamp_min(_Q_FLOOR).log()  # (B, T_dec, L); padded keys at log(1e-8)
    with_blank = F.pad(log_attn, (1, 0), value=blank_logprob).log_softmax(-1)  # (B, T_dec, 1 + L)
    targets = torch.arange(1, n_text + 1, device=attn.device).expand(b, n_text)  # symbol n is class n + 1
    return F.ctc_loss(
        with_blank.transpose(0, 1),  # (T_dec, B, 1 + L)
        targets,
        dec_lengths,
        text_lengths,
        blank=0,
        reduction="mean",
        zero_infinity=True,
    )


@torch.no_grad()
def attention_diagonality(
    attn: Tensor, text_lengths: Tensor, dec_lengths: Tensor, band: float = 0.1
) -> float:
    """Fraction of attention mass within the band |n/N - t/T| < max(band, 1/N), mean over valid steps.

    1.0 = every step attends on the diagonal; uniform attention scores about 2 x band (0.2). The band widens
    to one symbol for short texts, where a bin is wider than 0.1."""
    b, t_dec, n_text = attn.shape
    offset, valid = _offsets(text_lengths, dec_lengths, t_dec, n_text)
    half = torch.maximum(torch.tensor(band), 1.0 / text_lengths.float().clamp_min(1.0))[:, None, None]
    inside = (offset.abs() < half) & valid
    steps = _frame_mask(dec_lengths, t_dec).float()
    mass = (attn.float() * inside).sum(-1)  # (B, T_dec)
    return float((mass * steps).sum() / steps.sum().clamp_min(1.0))


@torch.no_grad()
def attention_sharpness(attn: Tensor, text_lengths: Tensor, dec_lengths: Tensor) -> float:
    """Mean over valid decoder steps of the largest attention weight over real text: 1.0 = one-hot, 1/N =
    uniform. Together with diagonality it tells "aligned" from "sharp but stuck on one symbol"."""
    b, t_dec, n_text = attn.shape
    text_mask = _frame_mask(text_lengths, n_text)[:, None, :]
    peak = attn.float().masked_fill(~text_mask, 0.0).amax(-1)  # (B, T_dec)
    steps = _frame_mask(dec_lengths, t_dec).float()
    return float((peak * steps).sum() / steps.sum().clamp_min(1.0))


@torch.no_grad()
def diagonality_over_prior(
    attn: Tensor, text_lengths: Tensor, dec_lengths: Tensor, *, width: float = 0.2, band: float = 0.1
) -> float:
    """How far the attention's diagonality rises above the seed's KL prior's own on the same lengths, as a
    share of the room above it: (d - d_prior) / (1 - d_prior), d = `attention_diagonality`, the prior the
    Gaussian band of std `width` (`alignment_prior`).

    The raw diagonality cannot say "aligned" for a KL-trained model: the KL loss pulls the attention onto
    its broad prior, which alone scores 0.44, above the 0.3 bar. On this scale the prior itself scores 0, a
    sharp diagonal 1, and attention less diagonal than the prior (untrained, uniform, collapsed) is
    negative, whatever the lengths of the batch."""
    t_dec, n_text = attn.shape[1:]
    prior = alignment_prior(text_lengths, dec_lengths, width, shape=(t_dec, n_text))
    own = attention_diagonality(prior, text_lengths, dec_lengths, band)
    return (attention_diagonality(attn, text_lengths, dec_lengths, band) - own) / max(1.0 - own, 1e-6)
