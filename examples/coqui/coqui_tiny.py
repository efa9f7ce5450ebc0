"""``--tiny``: Coqui's Tacotron 2 small enough for a CPU trial (0.6M parameters). Its embedding (512),
LSTMs (1024) and postnet (512) widths are fixed in Coqui's code, not read from the config."""

from __future__ import annotations

from typing import Any

TINY = {"embedding": 64, "rnn": 128, "prenet": 64, "postnet": 64, "postnet_convs": 3}


def tiny_tacotron2(config: Any) -> Any:
    """Coqui's Tacotron 2 with its fixed widths shrunk: the stock class, built with a Decoder whose
    widths are fixed properties and a narrower Postnet patched in; the 512-wide embedding swapped after."""
    from unittest import mock

    import TTS.tts.models.tacotron2 as t2
    from torch import nn
    from TTS.tts.layers.tacotron.tacotron2 import ConvBNBlock, Decoder

    def fixed(value: int) -> property:
        return property(lambda self: value, lambda self, _v: None)

    small_decoder = type(
        "SmallDecoder",
        (Decoder,),
        {
            "query_dim": fixed(TINY["rnn"]),
            "decoder_rnn_dim": fixed(TINY["rnn"]),
            "prenet_dim": fixed(TINY["prenet"]),
        },
    )

    class SmallPostnet(nn.Module):
        def __init__(self, in_out_channels: int, num_convs: int = TINY["postnet_convs"]) -> None:
            super().__init__()
            ch = [in_out_channels] + [TINY["postnet"]] * (num_convs - 1) + [in_out_channels]
            self.convolutions = nn.ModuleList(
                ConvBNBlock(ch[i], ch[i + 1], kernel_size=5, activation="tanh" if i < num_convs - 1 else None)
                for i in range(num_convs)
            )

        def forward(self, x: Any) -> Any:
            for layer in self.convolutions:
                x = layer(x)
            return x

    config.encoder_in_features = config.decoder_in_features = TINY["embedding"]
    with mock.patch.object(t2, "Decoder", small_decoder), mock.patch.object(t2, "Postnet", SmallPostnet):
        model = t2.Tacotron2(config)
    model.embedding = nn.Embedding(model.num_chars, TINY["embedding"], padding_idx=0)
    return model
