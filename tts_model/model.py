"""Autoregressive transformer TTS (Transformer-TTS / Tacotron lineage), written out so that norm placement
and the cross-attention weights are ours to control and inspect.

Masks are applied exactly once: encoder self-attention and cross-attention mask padded text keys,
decoder self-attention is causal (so real frames never see padded ones), and every conv stack zeroes
padded positions before each conv, so a padded utterance gives the same outputs at its real positions
as the same utterance alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tts_model.config import ModelConfig, PriorLayers


@dataclass
class ModelOutput:
    mel_before: Tensor  # (B, T, n_mels) decoder output
    mel_after: Tensor  # (B, T, n_mels) after the residual postnet
    stop_logits: Tensor  # (B, T)
    attention: Tensor  # (B, T_dec, L) head-averaged cross-attention of the alignment layer
    attentions: list[Tensor]  # every decoder layer's (B, T_dec, L) head-averaged cross-attention
    # Every layer's (B, T_dec, L) head-averaged cross-attention before the alignment prior: what
    # free-running decoding (which has no prior) would attend. The list `attentions` without a prior.
    unbiased_attentions: list[Tensor] = field(default_factory=list)
    alignment_layer: int = -1  # the index of `attention` in both lists (ModelConfig.alignment_layer)


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B, max_len) bool, True at real positions."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def sinusoid(length: int, dim: int, device: torch.device) -> Tensor:
    """(length, dim) sinusoidal positions; computed per call, so no length limit and no buffer to save."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe


class Scores(nn.Module):
    """q.k^T, before the 1/sqrt(d) scale: the tensor an explicit attention holds in fp16 under autocast.
    A module of its own (no weights) so a forward hook sees it: the trainer's fp16 headroom watches it
    (``trainer/peaks.py``)."""

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        return q @ k.transpose(-2, -1)  # (B, H, T, S)


class Attention(nn.Module):
    """Multi-head attention. Self-attention goes through SDPA (fast, no weights); cross-attention computes
    its softmax explicitly because the alignment loss and the metrics need the weights."""

    def __init__(self, dim: int, heads: int, dropout: float, *, kv_dim: int | None = None) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.scores = Scores()

    def _split(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # (B, H, T, d_head)

    def forward(
        self,
        x: Tensor,
        kv: Tensor,
        *,
        key_mask: Tensor | None,
        causal: bool = False,
        weights: bool = False,
        score_bias: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Output, then with `weights` the (B, H, T, S) attention and, with a `score_bias` (B, T, S)
        added to the scores before the softmax, the attention without it (else None)."""
        q = self._split(self.q(x))
        k, v = (self._split(t) for t in self.kv(kv).chunk(2, dim=-1))
        p = self.dropout if self.training else 0.0
        attn = unbiased = None
        if not weights:
            mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, S) True = attend
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        else:
            scores = self.scores(q, k) / math.sqrt(q.shape[-1])  # (B, H, T, S)
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
            attn = self._softmax(scores.float(), key_mask)
            if score_bias is not None:  # = softmax(log_softmax(scores) + log prior), as NeMo writes it
                unbiased = attn
                attn = self._softmax(scores.float() + score_bias[:, None].float(), key_mask)
            y = F.dropout(attn.to(v.dtype), p, self.training) @ v
        y = y.transpose(1, 2).reshape(x.shape)
        return self.out(y), attn, unbiased

    @staticmethod
    def _softmax(scores: Tensor, key_mask: Tensor | None) -> Tensor:
        attn = torch.softmax(scores, dim=-1)
        if key_mask is not None:  # a row with every key masked is NaN after softmax: make it zero
            attn = attn.masked_fill(~key_mask[:, None, None, :], 0.0)
        return attn


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(dim, dim * mult), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim * mult, dim)
        )


class Block(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; each sublayer residual, post- or pre-norm."""

    def __init__(self, dim: int, heads: int, cfg: ModelConfig, *, cross_dim: int | None = None) -> None:
        super().__init__()
        self.pre = cfg.norm == "pre"
        self.self_attn = Attention(dim, heads, cfg.attention_dropout)
        self.cross_attn = (
            None if cross_dim is None else Attention(dim, heads, cfg.attention_dropout, kv_dim=cross_dim)
        )
        self.ff = FeedForward(dim, cfg.ffn_mult, cfg.dropout)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2 if cross_dim is None else 3))
        self.drop = nn.Dropout(cfg.dropout)

    def _residual(self, x: Tensor, norm: nn.Module, fn) -> tuple[Tensor, tuple[Tensor | None, ...]]:
        y, *weights = fn(norm(x) if self.pre else x)
        x = x + self.drop(y)
        return (x if self.pre else norm(x)), tuple(weights)

    def forward(
        self,
        x: Tensor,
        *,
        self_mask: Tensor | None,
        causal: bool,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        score_bias: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Output, the (B, H, T, S) cross-attention (None without memory) and, given a `score_bias` for the
        cross-attention scores, the cross-attention without it."""
        x, _ = self._residual(
            x, self.norms[0], lambda h: self.self_attn(h, h, key_mask=self_mask, causal=causal)
        )
        attn = unbiased = None
        if self.cross_attn is not None:
            cross = self.cross_attn
            x, (attn, unbiased) = self._residual(
                x,
                self.norms[1],
                lambda h: cross(h, memory, key_mask=memory_mask, weights=True, score_bias=score_bias),
            )
        x, _ = self._residual(x, self.norms[-1], lambda h: (self.ff(h),))
        return x, attn, unbiased


class ConvStack(nn.Module):
    """Conv1d -> channel LayerNorm -> activation -> dropout, zeroing padded frames before every conv.
    LayerNorm over channels (not BatchNorm) keeps each frame independent of the batch and its padding."""

    def __init__(self, channels: list[int], kernel: int, dropout: float, *, last_linear: bool) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(a, b, kernel, padding=kernel // 2) for a, b in zip(channels, channels[1:], strict=False)
        )
        n = len(self.convs) - (1 if last_linear else 0)
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in channels[1 : n + 1])
        self.dropout = dropout

    def forward(self, x: Tensor, mask: Tensor, act) -> Tensor:  # x (B, T, C), mask (B, T)
        keep = mask[..., None].to(x.dtype)
        for i, conv in enumerate(self.convs):
            x = conv((x * keep).transpose(1, 2)).transpose(1, 2)
            if i < len(self.norms):
                x = F.dropout(act(self.norms[i](x)), self.dropout, self.training)
        return x * keep


class TransformerTTS(nn.Module):
    def __init__(self, cfg: ModelConfig, n_symbols: int, n_mels: int = 80) -> None:
        super().__init__()
        self.cfg, self.n_mels, self.r = cfg, n_mels, cfg.reduction_factor
        e, d = cfg.enc_dim, cfg.dec_dim
        self.embed = nn.Embedding(n_symbols, e, padding_idx=0)
        self.enc_prenet = ConvStack(
            [e] * (cfg.enc_prenet_layers + 1), cfg.conv_kernel, cfg.dropout, last_linear=False
        )
        self.enc_proj = nn.Linear(e, e)
        self.enc_alpha = nn.Parameter(torch.ones(()))  # scaled positional encoding (Transformer-TTS)
        self.encoder = nn.ModuleList(Block(e, cfg.enc_heads, cfg) for _ in range(cfg.enc_layers))
        self.enc_norm = nn.LayerNorm(e) if cfg.norm == "pre" else nn.Identity()
        self.prenet = nn.ModuleList(
            [nn.Linear(n_mels, cfg.prenet_dim), nn.Linear(cfg.prenet_dim, cfg.prenet_dim)]
        )
        self.dec_proj = nn.Linear(cfg.prenet_dim, d)
        self.dec_alpha = nn.Parameter(torch.ones(()))
        self.decoder = nn.ModuleList(Block(d, cfg.dec_heads, cfg, cross_dim=e) for _ in range(cfg.dec_layers))
        self.dec_norm = nn.LayerNorm(d) if cfg.norm == "pre" else nn.Identity()
        self.mel_head = nn.Linear(d, self.r * n_mels)
        self.stop_head = nn.Linear(d, self.r)
        pc = cfg.postnet_channels
        channels = [n_mels] + [pc] * (cfg.postnet_layers - 1) + [n_mels]
        self.postnet = ConvStack(channels, cfg.conv_kernel, cfg.dropout, last_linear=True)

    # -- pieces, public so that greedy decoding can run the decoder one step at a time --
    def encode(self, text: Tensor, text_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """text (B, L) -> memory (B, L, enc_dim), text mask (B, L)."""
        mask = length_mask(text_lengths, text.shape[1])
        x = self.enc_prenet(self.embed(text), mask, F.relu)
        x = self.enc_proj(x) + self.enc_alpha * sinusoid(x.shape[1], x.shape[2], x.device)
        x = F.dropout(x, self.cfg.dropout, self.training)
        for block in self.encoder:
            x, _, _ = block(x, self_mask=mask, causal=False)
        return self.enc_norm(x), mask

    def decoder_prenet(self, frames: Tensor) -> Tensor:
        """frames (B, T_dec, n_mels) -> (B, T_dec, dec_dim). Dropout is on in train AND eval mode."""
        x = frames
        for layer in self.prenet:
            x = F.dropout(F.relu(layer(x)), self.cfg.prenet_dropout, training=True)
        return self.dec_proj(x)

    def decode(
        self,
        x: Tensor,
        memory: Tensor,
        memory_mask: Tensor,
        *,
        log_prior: Tensor | None = None,
        prior_layers: PriorLayers = "all",
    ) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
        """Prenet output (B, T_dec, dec_dim) -> mel (B, T_dec*r, n_mels), stop logits (B, T_dec*r),
        per-layer head-averaged cross-attention [(B, T_dec, L)], and the same before `log_prior`.

        log_prior (B, T_dec, L): an alignment prior added to the cross-attention scores before the softmax
        (Badlani et al. 2022) of every decoder layer (`prior_layers` "all", as NeMo's Magpie-TTS does for
        the layers that attend to the text) or of the alignment layer only ("alignment"). Only training
        passes one: it needs the utterance's length, which decoding does not know.
        """
        b, t, _ = x.shape
        x = x + self.dec_alpha * sinusoid(t, x.shape[2], x.device)
        x = F.dropout(x, self.cfg.dropout, self.training)
        attentions, unbiased = [], []
        with_prior = self._prior_layers(prior_layers)
        for i, block in enumerate(self.decoder):
            bias = log_prior if i in with_prior else None
            x, attn, raw = block(
                x, self_mask=None, causal=True, memory=memory, memory_mask=memory_mask, score_bias=bias
            )
            attentions.append(attn.mean(dim=1))
            unbiased.append(attentions[-1] if raw is None else raw.mean(dim=1))
        x = self.dec_norm(x)
        mel = self.mel_head(x).view(b, t * self.r, self.n_mels)
        return mel, self.stop_head(x).view(b, t * self.r), attentions, unbiased

    def _prior_layers(self, which: PriorLayers) -> range | tuple[int]:
        if which == "all":
            return range(self.cfg.dec_layers)
        if which == "alignment":
            return (self.cfg.alignment_layer % self.cfg.dec_layers,)
        raise ValueError(f"prior_layers must be 'all' or 'alignment', got {which!r}")

    def postnet_residual(self, mel: Tensor, mel_mask: Tensor) -> Tensor:
        return mel + self.postnet(mel, mel_mask, torch.tanh)

    def forward(
        self,
        text: Tensor,
        text_lengths: Tensor,
        mel: Tensor,
        mel_lengths: Tensor,
        *,
        log_prior: Tensor | None = None,
        prior_layers: PriorLayers = "all",
    ) -> ModelOutput:
        """Teacher-forced pass. The decoder input at step k is the last frame of group k-1 (zeros at step 0).
        A mel length that is not a multiple of r is padded inside and cropped back. log_prior: see `decode`,
        (B, ceil(T / r), L)."""
        memory, memory_mask = self.encode(text, text_lengths)
        b, t, _ = mel.shape
        t_dec = -(-t // self.r)
        padded = F.pad(mel, (0, 0, 0, t_dec * self.r - t))  # (B, T_dec*r, n_mels)
        last = padded[:, self.r - 1 :: self.r]  # (B, T_dec, n_mels) last frame of each group
        dec_in = torch.cat([torch.zeros_like(last[:, :1]), last[:, :-1]], dim=1)
        mel_before, stop, attentions, unbiased = self.decode(
            self.decoder_prenet(dec_in), memory, memory_mask, log_prior=log_prior, prior_layers=prior_layers
        )
        mel_before, stop = mel_before[:, :t], stop[:, :t]
        mel_after = self.postnet_residual(mel_before, length_mask(mel_lengths, t))
        return ModelOutput(
            mel_before=mel_before,
            mel_after=mel_after,
            stop_logits=stop,
            attention=attentions[self.cfg.alignment_layer],
            attentions=attentions,
            unbiased_attentions=unbiased,
            alignment_layer=self.cfg.alignment_layer,
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
