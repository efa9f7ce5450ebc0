from __future__ import annotations

import math

import pytest
import torch

from tts_model.losses import (
    alignment_kl,
    alignment_prior,
    annealed_log_prior,
    attention_diagonality,
    attention_sharpness,
    beta_binomial_log_prior,
    diagonality_over_prior,
    forward_sum_loss,
    guided_attention_loss,
    masked_mel_loss,
    stop_loss,
)

N, T = 50, 100  # text symbols, decoder steps


def _one(n: int = N, t: int = T) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([n]), torch.tensor([t])


def _uniform(n: int = N, t: int = T) -> torch.Tensor:
    return torch.full((1, t, n), 1.0 / n)


def test_prior_rows_sum_to_one_over_real_positions_only():
    prior = alignment_prior(torch.tensor([5, 3]), torch.tensor([4, 2]), 0.2)
    assert prior.shape == (2, 4, 5)
    assert torch.allclose(prior[0].sum(-1), torch.ones(4))
    assert torch.allclose(prior[1, :2].sum(-1), torch.ones(2))
    assert (prior[1, :, 3:] == 0).all() and (prior[1, 2:] == 0).all()


def test_kl_reference_values_at_width_0_2():
    tl, dl = _one()
    prior = alignment_prior(tl, dl, 0.2)
    assert alignment_kl(prior, tl, dl, 0.2).item() == pytest.approx(0.0, abs=1e-5)
    uniform = alignment_kl(_uniform(), tl, dl, 0.2).item()
    sharp = alignment_kl(alignment_prior(tl, dl, 0.02), tl, dl, 0.2).item()
    assert uniform == pytest.approx(0.477, abs=0.01)
    assert sharp == pytest.approx(8.8, abs=0.1)
    # The seed's KL direction is mass-covering: a sharp diagonal costs more than no alignment at all.
    assert 0.0 < uniform < sharp


def test_kl_is_non_negative_on_random_attention():
    torch.manual_seed(0)
    tl, dl = torch.tensor([7, 3, 1]), torch.tensor([9, 1, 4])
    logits = torch.randn(3, 9, 7).masked_fill(torch.arange(7)[None, None, :] >= tl[:, None, None], -torch.inf)
    attn = torch.softmax(logits, -1)
    assert alignment_kl(attn, tl, dl).item() >= 0.0


def test_guided_prefers_sharp_diagonal_over_uniform():
    tl, dl = _one()
    sharp = alignment_prior(tl, dl, 0.02)
    assert guided_attention_loss(sharp, tl, dl).item() < guided_attention_loss(_uniform(), tl, dl).item()


@pytest.mark.parametrize("loss", [alignment_kl, guided_attention_loss])
def test_alignment_losses_ignore_padded_cells(loss):
    tl, dl = torch.tensor([6, 4]), torch.tensor([8, 5])
    attn = alignment_prior(tl, dl, 0.05)
    noisy = attn.clone()
    noisy[1, 5:] = 0.7  # padded decoder steps
    noisy[1, :, 4:] = 0.3  # padded text positions
    assert loss(attn, tl, dl).item() == pytest.approx(loss(noisy, tl, dl).item(), abs=1e-6)


def test_metrics_separate_diagonal_from_uniform():
    tl, dl = _one()
    sharp = alignment_prior(tl, dl, 0.02)
    assert attention_diagonality(sharp, tl, dl) == pytest.approx(1.0, abs=1e-3)
    assert attention_diagonality(_uniform(), tl, dl) < 0.25
    assert attention_sharpness(_uniform(), tl, dl) == pytest.approx(1.0 / N)
    stuck = torch.zeros(1, T, N)
    stuck[..., 0] = 1.0  # sharp but attending to one symbol forever
    assert attention_sharpness(stuck, tl, dl) == 1.0 and attention_diagonality(stuck, tl, dl) < 0.15


def test_mel_loss_masks_padding_and_huber_differs():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 6, 4) * 3, torch.randn(2, 6, 4)
    lengths = torch.tensor([6, 3])
    l1 = masked_mel_loss(pred, target, lengths)
    changed = pred.clone()
    changed[1, 3:] = 100.0
    assert masked_mel_loss(changed, target, lengths).item() == pytest.approx(l1.item())
    manual = torch.cat([(pred - target)[0].abs().flatten(), (pred - target)[1, :3].abs().flatten()]).mean()
    assert l1.item() == pytest.approx(manual.item(), rel=1e-6)
    huber = masked_mel_loss(pred, target, lengths, huber_delta=1.0)
    assert huber.item() < l1.item()


def test_stop_loss_masks_padding_and_label_smoothing_changes_it():
    logits = torch.tensor([[-4.0, -4.0, 4.0, 9.0], [-4.0, 4.0, -9.0, -9.0]])
    target = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0]])
    lengths = torch.tensor([4, 2])
    plain = stop_loss(logits, target, lengths)
    padded_changed = logits.clone()
    padded_changed[1, 2:] = 50.0
    assert stop_loss(padded_changed, target, lengths).item() == pytest.approx(plain.item())
    smoothed = stop_loss(logits, target, lengths, label_smoothing=0.1)
    assert smoothed.item() > plain.item()
    assert stop_loss(logits, target, lengths, pos_weight=1.0).item() < plain.item()


@pytest.mark.parametrize(("n", "t"), [(1, 1), (1, 7), (7, 1), (2, 3)])
def test_losses_finite_on_edge_lengths(n, t):
    torch.manual_seed(n * 10 + t)
    tl, dl = torch.tensor([n, max(1, n - 1)]), torch.tensor([t, 1])
    attn = torch.softmax(torch.randn(2, t, n), -1)
    attn = attn.masked_fill(torch.arange(n)[None, None, :] >= tl[:, None, None], 0.0)
    values = [
        alignment_kl(attn, tl, dl),
        guided_attention_loss(attn, tl, dl),
        masked_mel_loss(torch.randn(2, t, 3), torch.randn(2, t, 3), dl, huber_delta=0.5),
        stop_loss(torch.randn(2, t), torch.ones(2, t), dl, label_smoothing=0.1),
        forward_sum_loss(attn, tl, dl),  # t < n cannot be aligned: counted 0, not inf
        beta_binomial_log_prior(tl, dl, 0.5).sum(),
    ]
    assert all(math.isfinite(v.item()) for v in values)
    for metric in (attention_diagonality, attention_sharpness):
        assert 0.0 <= metric(attn, tl, dl) <= 1.0 + 1e-6
    one = alignment_prior(torch.tensor([1]), torch.tensor([1]), 0.2)
    assert one.item() == pytest.approx(1.0)


# --- the "prior" form: the beta-binomial score prior and the forward-sum loss ---------------------------


def test_beta_binomial_prior_is_a_diagonal_band_over_real_positions_only():
    tl, dl = torch.tensor([30, 12]), torch.tensor([60, 20])
    log_prior = beta_binomial_log_prior(tl, dl, 0.5)
    assert log_prior.shape == (2, 60, 30)
    prior = log_prior.exp()
    assert torch.allclose(prior[0].sum(-1), torch.ones(60), atol=1e-5)
    assert torch.allclose(prior[1, :20, :12].sum(-1), torch.ones(20), atol=1e-5)
    assert (log_prior[1, 20:] == 0).all() and (log_prior[1, :, 12:] == 0).all()  # padding: no bias
    peaks = prior[0].argmax(-1)  # (60,) its mode walks the text from the first symbol to the last
    assert peaks[0] == 0 and peaks[-1] == 29 and (peaks.diff() >= 0).all()
    assert attention_diagonality(prior[:1], tl[:1], dl[:1]) > attention_diagonality(
        _uniform(30, 60), *_one(30, 60)
    )

    # A smaller scaling is a broader band: the text position spreads more around its mean at each step.
    def spread(p: torch.Tensor) -> float:
        pos = torch.arange(30.0)
        mean = (p * pos).sum(-1, keepdim=True)
        return float(((p * (pos - mean) ** 2).sum(-1)).sqrt().mean())

    widths = [spread(beta_binomial_log_prior(tl[:1], dl[:1], s).exp()[0]) for s in (0.1, 0.5, 2.0, 10.0)]
    assert widths == sorted(widths, reverse=True)


def test_annealed_prior_fades_to_no_bias():
    tl, dl = torch.tensor([20]), torch.tensor([40])
    log_prior = beta_binomial_log_prior(tl, dl, 0.5)
    whole = annealed_log_prior(log_prior, 1.0)
    assert torch.allclose(whole, log_prior.clamp_min(math.log(1e-8)), atol=1e-5)
    assert (annealed_log_prior(log_prior, 0.0) == 0).all()
    half = annealed_log_prior(log_prior, 0.5)
    assert (half <= 0).all() and (half >= math.log(0.5) - 1e-6).all()  # p/2 + 1/2: in [log 0.5, 0]
    spread = [float(annealed_log_prior(log_prior, s).std()) for s in (1.0, 0.75, 0.5, 0.25, 0.0)]
    assert spread == sorted(spread, reverse=True) and spread[-1] == 0.0
    with pytest.raises(ValueError, match="strength"):
        annealed_log_prior(log_prior, 1.5)


def _anti_diagonal(n: int = N, t: int = T) -> torch.Tensor:
    return alignment_prior(*_one(n, t), 0.02).flip(-1)  # reads the text backwards


def test_forward_sum_prefers_a_monotonic_walk_to_uniform_and_backwards():
    tl, dl = _one()
    diagonal = forward_sum_loss(alignment_prior(tl, dl, 0.02), tl, dl).item()
    uniform = forward_sum_loss(_uniform(), tl, dl).item()
    backwards = forward_sum_loss(_anti_diagonal(), tl, dl).item()
    assert 0.0 < diagonal < 0.25 * uniform < uniform < backwards
    # Any pace will do: a walk that spends the first half of the steps on the first fifth of the text is
    # still monotonic and scores near the even diagonal, unlike the KL and guided losses' fixed diagonal.
    uneven = torch.zeros(1, T, N)
    pos = (
        torch.cat([torch.linspace(0, N / 5 - 1, T // 2), torch.linspace(N / 5, N - 1, T // 2)]).round().long()
    )
    uneven[0, torch.arange(T), pos] = 1.0
    uneven = 0.9 * uneven + 0.1 / N
    assert forward_sum_loss(uneven, tl, dl).item() < 0.5 * uniform
    assert (
        guided_attention_loss(uneven, tl, dl).item()
        > guided_attention_loss(alignment_prior(tl, dl, 0.02), tl, dl).item()
    )


def test_forward_sum_ignores_padding_and_gives_gradients():
    tl, dl = torch.tensor([6, 4]), torch.tensor([12, 9])
    attn = alignment_prior(tl, dl, 0.1)
    alone = forward_sum_loss(attn[1:, :9, :4], tl[1:], dl[1:])
    noisy = attn.clone()
    noisy[1, 9:] = 0.7  # padded decoder steps
    both = forward_sum_loss(noisy, tl, dl)
    first = forward_sum_loss(attn[:1], tl[:1], dl[:1])
    assert both.item() == pytest.approx((alone.item() + first.item()) / 2, rel=1e-5)
    logits = torch.randn(2, 12, 6, requires_grad=True)
    forward_sum_loss(torch.softmax(logits, -1), tl, dl).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_diagonality_over_prior_puts_the_kl_prior_at_zero():
    """The KL prior passes the raw 0.3 bar by itself (0.44); on this scale it scores 0 whatever the lengths,
    a sharp diagonal ~1, and less diagonal attention (uniform, untrained, collapsed) below 0."""
    for n, t in ((50, 100), (12, 30), (30, 31)):
        tl, dl = _one(n, t)
        assert attention_diagonality(alignment_prior(tl, dl, 0.2), tl, dl) > 0.3
        assert diagonality_over_prior(alignment_prior(tl, dl, 0.2), tl, dl) == pytest.approx(0.0, abs=1e-6)
        assert diagonality_over_prior(alignment_prior(tl, dl, 0.02), tl, dl) > 0.95
        assert diagonality_over_prior(_uniform(n, t), tl, dl) < -0.3
    # Measured against the prior of its own width: a narrower KL prior is not "aligned" by itself either.
    tl, dl = _one()
    assert diagonality_over_prior(alignment_prior(tl, dl, 0.1), tl, dl, width=0.1) == pytest.approx(
        0.0, abs=1e-6
    )
