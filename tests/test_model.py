from __future__ import annotations

import dataclasses

import pytest
import torch

from common.errors import UserError
from tts_model.config import MODEL_SIZES, ModelConfig, model_config
from tts_model.losses import beta_binomial_log_prior, masked_mel_loss, stop_loss
from tts_model.model import TransformerTTS, count_parameters

N_SYMBOLS, N_MELS = 40, 16


def _model(**overrides) -> TransformerTTS:
    torch.manual_seed(0)
    cfg = model_config("tiny", postnet_channels=16, **overrides)
    return TransformerTTS(cfg, N_SYMBOLS, n_mels=N_MELS)


def _batch(lengths_text: list[int], lengths_mel: list[int], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b = len(lengths_text)
    text = torch.zeros(b, max(lengths_text), dtype=torch.long)
    mel = torch.zeros(b, max(lengths_mel), N_MELS)
    for i, (n, t) in enumerate(zip(lengths_text, lengths_mel, strict=True)):
        text[i, :n] = torch.randint(2, N_SYMBOLS, (n,), generator=g)
        mel[i, :t] = torch.randn(t, N_MELS, generator=g)
    return text, torch.tensor(lengths_text), mel, torch.tensor(lengths_mel)


def test_sizes_build_checked_configs():
    assert MODEL_SIZES == {"tiny", "small", "normal", "big"}
    normal = model_config("normal")
    assert (normal.enc_dim, normal.enc_layers, normal.dec_dim, normal.dec_layers) == (256, 4, 768, 8)
    assert normal.enc_dim // normal.enc_heads == 64 and normal.dec_dim // normal.dec_heads == 64
    big = model_config("big")
    assert big.dec_dim * big.dec_layers > normal.dec_dim * normal.dec_layers
    assert model_config("tiny", norm="pre").norm == "pre"
    counts = [count_parameters(TransformerTTS(model_config(s), N_SYMBOLS)) for s in ("tiny", "small")]
    assert counts[0] < counts[1]


def test_unknown_size_and_field_are_user_errors():
    with pytest.raises(UserError, match="tiny, small, normal, big"):
        model_config("huge")
    with pytest.raises(UserError, match="dec_dimm"):
        model_config("tiny", dec_dimm=3)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("enc_heads", 3, "divisible"),
        ("dec_heads", 5, "divisible"),
        ("reduction_factor", 0, "reduction_factor"),
        ("norm", "sandwich", "norm"),
        ("dropout", 1.0, "dropout"),
        ("alignment_layer", 2, "alignment_layer"),
        ("conv_kernel", 4, "odd"),
    ],
)
def test_config_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(ModelConfig(), **{field: value})


def test_forward_shapes_and_attention_masking():
    model = _model(reduction_factor=3)
    text, tl, mel, ml = _batch([7, 4], [11, 8])  # T=11 is not a multiple of r=3
    out = model(text, tl, mel, ml)
    assert out.mel_before.shape == out.mel_after.shape == (2, 11, N_MELS)
    assert out.stop_logits.shape == (2, 11)
    assert out.attention.shape == (2, 4, 7) and len(out.attentions) == model.cfg.dec_layers
    assert torch.allclose(out.attention.sum(-1), torch.ones(2, 4), atol=1e-5)
    assert (out.attention[1, :, 4:] == 0).all()  # padded text gets no attention


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_padding_does_not_change_real_positions(norm):
    model = _model(norm=norm, prenet_dropout=0.0).eval()
    text, tl, mel, ml = _batch([9, 5], [14, 7])
    batched = model(text, tl, mel, ml)
    alone = model(text[1:, :5], tl[1:], mel[1:, :7], ml[1:])
    for field in ("mel_before", "mel_after", "stop_logits"):
        a, b = getattr(alone, field)[0], getattr(batched, field)[1, :7]
        assert torch.allclose(a, b, atol=1e-5), field
    steps = alone.attention.shape[1]
    assert torch.allclose(alone.attention[0], batched.attention[1, :steps, :5], atol=1e-6)


def test_a_log_prior_biases_every_layer_and_the_unbiased_attention_is_the_plain_one():
    model = _model(prenet_dropout=0.0, reduction_factor=3).eval()
    text, tl, mel, ml = _batch([7, 4], [12, 9])  # 4 and 3 decoder steps
    plain = model(text, tl, mel, ml)
    assert all(a is u for a, u in zip(plain.attentions, plain.unbiased_attentions, strict=True))
    log_prior = beta_binomial_log_prior(tl, torch.tensor([4, 3]), 0.5, shape=(4, 7))
    biased = model(text, tl, mel, ml, log_prior=log_prior)
    for layer in range(model.cfg.dec_layers):
        # The first layer sees the same input either way: its attention without the prior is the plain one.
        if layer == 0:
            assert torch.allclose(biased.unbiased_attentions[0], plain.attentions[0], atol=1e-6)
        assert not torch.allclose(biased.attentions[layer], biased.unbiased_attentions[layer], atol=1e-3)
        assert (biased.attentions[layer][1, :, 4:] == 0).all()  # padded text still gets nothing
    assert not torch.allclose(biased.mel_after, plain.mel_after)
    # On the alignment layer only: the layers before it attend as without a prior.
    last = model(text, tl, mel, ml, log_prior=log_prior, prior_layers="alignment")
    assert torch.allclose(last.attentions[0], plain.attentions[0], atol=1e-6)
    assert last.attentions[0] is last.unbiased_attentions[0] and last.alignment_layer == -1
    assert not torch.allclose(last.attention, last.unbiased_attentions[-1], atol=1e-3)
    # A prior of zeros is no prior.
    zero = model(text, tl, mel, ml, log_prior=torch.zeros(2, 4, 7))
    assert torch.allclose(zero.mel_after, plain.mel_after, atol=1e-6)


def test_decoder_is_causal():
    model = _model(prenet_dropout=0.0, reduction_factor=2).eval()
    text, tl, mel, ml = _batch([6], [12])
    changed = mel.clone()
    changed[:, 8:] += 1.0  # frames of groups 4 and 5 feed steps 5 and later only
    a, b = model(text, tl, mel, ml), model(text, tl, changed, ml)
    assert torch.allclose(a.mel_before[:, :10], b.mel_before[:, :10], atol=1e-6)
    assert not torch.allclose(a.mel_before[:, 10:], b.mel_before[:, 10:])


def test_prenet_dropout_stays_on_in_eval():
    model = _model().eval()
    text, tl, mel, ml = _batch([6], [8])
    assert not torch.allclose(model(text, tl, mel, ml).mel_before, model(text, tl, mel, ml).mel_before)


def test_bf16_autocast_is_finite_with_padding():
    model = _model()
    text, tl, mel, ml = _batch([9, 2], [12, 4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(text, tl, mel, ml)
    assert all(torch.isfinite(t.float()).all() for t in (out.mel_after, out.stop_logits, out.attention))


def test_tiny_model_overfits_a_fixed_batch():
    model = _model()
    text, tl, mel, ml = _batch([10, 8, 6, 9], [20, 16, 12, 18])
    stop_target = (torch.arange(20)[None, :] >= (ml - 1)[:, None]).float()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(50):
        out = model(text, tl, mel, ml)
        loss = (
            masked_mel_loss(out.mel_before, mel, ml)
            + masked_mel_loss(out.mel_after, mel, ml)
            + stop_loss(out.stop_logits, stop_target, ml)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses[::10]
