from __future__ import annotations

import math

import pytest
import torch

from tts_model.losses import (
    alignment_kl,
    alignment_prior,
    attention_diagonality,
    attention_sharpness,
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
    ]
    assert all(math.isfinite(v.item()) for v in values)
    for metric in (attention_diagonality, attention_sharpness):
        assert 0.0 <= metric(attn, tl, dl) <= 1.0 + 1e-6
    one = alignment_prior(torch.tensor([1]), torch.tensor([1]), 0.2)
    assert one.item() == pytest.approx(1.0)
