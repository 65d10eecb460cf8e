"""The one configuration of a MeshTalk model, with named presets.

Presets:
- ``meshtalk``: the released model (H = 16 heads, C = 128 classes, V = 6172 vertices). Its weights can be
  imported (``meshtalk import-reference``).
- ``meshtalk-h64``: the paper supplement's H = 64 (the context model alone has 272 M parameters).
- ``seed``: the simplified variant of the seed report. The report fixes the structure; where it is silent this
  project chooses, and says so here: the audio encoder keeps the input conv and the first three dilated blocks
  of the reference (dilations 2, 4, 6, kernel 5, dropout 0.2 after each block, Xavier-uniform init) and averages
  its 49 remaining time steps; the expression encoder (two linear layers, a one-layer LSTM and the code layer)
  and the joint encoder (three linear layers) are the reference's; the decoder is the reference's with a
  one-layer LSTM; the context model is the reference's. The report's "C = 128, heads = 164" matches no released
  model, so H keeps the released 16.

The golden test model is ``MeshTalkConfig.preset("meshtalk", heads=4, classes=8, n_vertices=64)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from facedata.errors import InputError

ContextMask = Literal["strict", "first-strict"]
CONTEXT_MASKS: tuple[str, ...] = ("strict", "first-strict")


@dataclass(frozen=True)
class MeshTalkConfig:
    """Sizes and options of every MeshTalk module. The defaults are the released model.

    Attributes:
        n_vertices: V, vertices of the face topology.
        heads: H, categorical latent heads.
        classes: C, categories per head.
        audio_dim: size of the audio code.
        expression_dim: size of the expression code.
        n_mels: mel bins of the log-mel input (the window is 101 mel frames, one second).
        audio_kernel_size: kernel of every audio-encoder convolution.
        audio_dilations: dilations of the residual audio-encoder blocks, in order.
        audio_dropout: dropout after each audio-encoder block in training.
        expression_hidden: width of the expression encoder's first layer.
        expression_lstm_layers: layers of the expression encoder's LSTM.
        fusion_hidden: width of the two hidden layers of the fusion MLP.
        decoder_hidden: widths of the decoder's three template-encoding layers (the U-Net's levels).
        decoder_lstm_layers: layers of the decoder's temporal LSTM.
        context_channels_per_head: channels per head inside the context model.
        context_dilations: dilations of the context model's historic convolutions, one per context layer.
        context_mask: ``strict`` (the reference: every layer lets head i see only heads < i of the current frame)
            or ``first-strict`` (only the embedding is strict; later layers let head i see heads <= i, so every
            head is conditioned on the audio; the released weights were not trained for it).
        gumbel_noise_scale: factor on the Gumbel noise of the stage-1 quantiser (1 = the reference).
    """

    n_vertices: int = 6172
    heads: int = 16
    classes: int = 128
    audio_dim: int = 128
    expression_dim: int = 128
    n_mels: int = 80
    audio_kernel_size: int = 5
    audio_dilations: tuple[int, ...] = (2, 4, 6, 2, 4, 6)
    audio_dropout: float = 0.2
    expression_hidden: int = 256
    expression_lstm_layers: int = 1
    fusion_hidden: int = 256
    decoder_hidden: tuple[int, int, int] = (512, 256, 128)
    decoder_lstm_layers: int = 2
    context_channels_per_head: int = 64
    context_dilations: tuple[int, ...] = (1, 2, 4, 8)
    context_mask: ContextMask = "strict"
    gumbel_noise_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("n_vertices", "heads", "classes", "audio_dim", "expression_dim", "n_mels", "audio_kernel_size",
                     "expression_hidden", "expression_lstm_layers", "fusion_hidden", "decoder_lstm_layers",
                     "context_channels_per_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"config.{name}", "not a positive integer", expected=">= 1", actual=repr(value))
        for name in ("audio_dilations", "decoder_hidden", "context_dilations"):
            value = getattr(self, name)
            if not value or not all(isinstance(v, int) and v >= 1 for v in value):
                raise InputError(f"config.{name}", "not a list of positive integers", expected="[>= 1, ...]",
                                 actual=repr(value))
        if len(self.decoder_hidden) != 3:
            raise InputError("config.decoder_hidden", "wrong length", expected=3, actual=len(self.decoder_hidden))
        if self.context_mask not in CONTEXT_MASKS:
            raise InputError("config.context_mask", "unknown mask mode", expected=" or ".join(CONTEXT_MASKS),
                             actual=repr(self.context_mask))
        if not 0.0 <= self.audio_dropout < 1.0:
            raise InputError("config.audio_dropout", "out of range", expected="[0, 1)", actual=self.audio_dropout)
        if not self.gumbel_noise_scale >= 0.0:
            raise InputError("config.gumbel_noise_scale", "negative", expected=">= 0", actual=self.gumbel_noise_scale)
        if self.mel_frames_out < 1:
            raise InputError("config.audio_dilations", "the audio encoder consumes more than its 101-frame window",
                             expected="sum(4 * dilation) <= 96", actual=sum(self.audio_dilations))

    @property
    def mel_frames_out(self) -> int:
        """Time steps left after the audio encoder's convolutions (1 for the reference), averaged into the code."""
        k = self.audio_kernel_size - 1
        return MEL_FRAMES - k - sum(k * d for d in self.audio_dilations)

    @property
    def context_receptive_field(self) -> int:
        """Frames a context-model output depends on, the current one included (20 for the reference)."""
        return 1 + sum(1 + d for d in self.context_dilations)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MeshTalkConfig:
        """A named preset (``meshtalk``, ``meshtalk-h64``, ``seed``), with fields replaced by ``overrides``.

        Raises:
            InputError: an unknown preset or field.
        """
        if name not in PRESETS:
            raise InputError("config", "unknown preset", expected=", ".join(PRESETS), actual=repr(name))
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MeshTalkConfig:
        """Build from a plain dict (as saved in checkpoints); lists become tuples.

        Raises:
            InputError: a key that is not a field, or an invalid value.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise InputError("config", f"unknown key {unknown[0]!r}", expected=f"one of {sorted(fields)}",
                             actual=", ".join(unknown))
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (tuples become lists), loadable with ``torch.load(weights_only=True)``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> MeshTalkConfig:
        """A copy with some fields changed."""
        return self.from_dict({**self.to_dict(), **changes})


MEL_FRAMES = 101  # one second of 100 Hz mel frames per mesh frame

PRESETS: dict[str, dict[str, Any]] = {
    "meshtalk": {},
    "meshtalk-h64": {"heads": 64},
    "seed": {"audio_dilations": (2, 4, 6), "decoder_lstm_layers": 1},
}
