"""The MeshTalk model (Richard et al., ICCV 2021): encoders, categorical latent, vertex decoder, context model.

Shapes: B batch, T mesh frames (30 fps), V vertices, H latent heads, C classes per head. Geometry is in mm.
Every activation is a LeakyReLU of slope 0.2; there is no normalisation layer. Module and buffer names are this
project's; ``meshtalk.reference`` maps the released checkpoint's names onto them.

Data flow:
- training, stage 1: (log-mel, geometry) -> audio and expression codes -> fusion log-probs (B x T x H x C)
  -> Gumbel one-hot -> decoder(template, one-hot) -> geometry;
- training, stage 2: the frozen encoder's argmax labels -> context model (teacher forcing) -> log-probs;
- inference: audio code -> labels sampled from the context model -> decoder(template, one-hot) -> geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facedata.audio import N_FFT, WIN_LENGTH, hann_window, log_mel, mel_filterbank
from meshtalk.config import MeshTalkConfig

LEAKY_SLOPE = 0.2
GUMBEL_EPS = 1e-10


def leaky(x: Tensor) -> Tensor:
    return F.leaky_relu(x, LEAKY_SLOPE)


class AudioFrontEnd(nn.Module):
    """One-second 16 kHz windows -> log-mel, with the reference's STFT window and mel filterbank as buffers.

    Shapes: audio B x T x 16000 -> log-mel B x T x 80 x 101.
    """

    def __init__(self, n_mels: int = 80):
        super().__init__()
        self.register_buffer("window", hann_window(WIN_LENGTH))  # (800,)
        self.register_buffer("filterbank", mel_filterbank(n_fft=N_FFT, n_mels=n_mels))  # (1025, n_mels)

    def forward(self, audio: Tensor) -> Tensor:
        return log_mel(audio, self.window, self.filterbank)


class AudioEncoder(nn.Module):
    """Log-mel windows -> audio code, each mesh frame on its own.

    An input convolution and residual dilated blocks shrink the 101 mel frames of a window (to 1 for the
    reference); the rest is averaged over time and projected. A block averages (not sums) its input, centre-cropped,
    with its output. Shapes: B x T x n_mels x 101 -> B x T x audio_dim.
    """

    def __init__(self, config: MeshTalkConfig, channels: int = 128):
        super().__init__()
        k = config.audio_kernel_size
        self.input_conv = nn.Conv1d(config.n_mels, channels, k)
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, k, dilation=d) for d in config.audio_dilations)
        self.dropout = nn.Dropout(config.audio_dropout)
        self.code = nn.Linear(channels, config.audio_dim)
        for conv in (self.input_conv, *self.convs):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.constant_(conv.bias, 0.01)

    def forward(self, mel: Tensor) -> Tensor:
        B, T, n_mels, n_frames = mel.shape
        x = leaky(self.input_conv(mel.reshape(B * T, n_mels, n_frames)))  # (B*T, 128, 97)
        for conv in self.convs:
            y = self.dropout(leaky(conv(x)))
            crop = (x.shape[-1] - y.shape[-1]) // 2  # 2 * dilation on each side
            x = (x[:, :, crop : x.shape[-1] - crop] + y) / 2
        x = self.code(x.mean(dim=-1))  # (B*T, audio_dim)
        return x.reshape(B, T, -1)  # (B, T, audio_dim)


class ExpressionEncoder(nn.Module):
    """Absolute geometry (the template is not subtracted) -> expression code, through a causal LSTM.

    Shapes: B x T x V x 3 (mm) -> B x T x expression_dim.
    """

    def __init__(self, config: MeshTalkConfig):
        super().__init__()
        V, d = config.n_vertices, config.expression_dim
        self.register_buffer("mean", torch.zeros(V, 3))  # per-vertex normalisation, mm
        self.register_buffer("stddev", torch.ones(V, 3))
        hidden = config.expression_hidden
        self.layers = nn.ModuleList([nn.Linear(V * 3, hidden), nn.Linear(hidden, d)])
        self.lstm = nn.LSTM(d, d, num_layers=config.expression_lstm_layers, batch_first=True)
        self.code = nn.Linear(d, d)

    def forward(self, vertices: Tensor) -> Tensor:
        B, T = vertices.shape[:2]
        x = ((vertices - self.mean) / self.stddev).reshape(B, T, -1)  # (B, T, V*3)
        for layer in self.layers:
            x = leaky(layer(x))
        x, _ = self.lstm(x)  # (B, T, expression_dim)
        return self.code(x)


class FusionMLP(nn.Module):
    """(expression code, audio code) -> log-probabilities of the categorical latent.

    Shapes: B x T x expression_dim, B x T x audio_dim -> B x T x H x C (log-softmax over C).
    """

    def __init__(self, config: MeshTalkConfig):
        super().__init__()
        self.heads, self.classes = config.heads, config.classes
        hidden = config.fusion_hidden
        self.layers = nn.ModuleList([
            nn.Linear(config.expression_dim + config.audio_dim, hidden),
            nn.Linear(hidden, hidden),
            nn.Linear(hidden, config.heads * config.classes),
        ])

    def forward(self, expression_code: Tensor, audio_code: Tensor) -> Tensor:
        x = torch.cat([expression_code, audio_code], dim=-1)  # (B, T, expression_dim + audio_dim)
        x = leaky(self.layers[0](x))
        x = leaky(self.layers[1](x))
        x = self.layers[2](x)  # (B, T, H*C)
        x = x.reshape(*x.shape[:-1], self.heads, self.classes)  # (B, T, H, C)
        return F.log_softmax(x, dim=-1)


@dataclass
class Codes:
    """What the multimodal encoder gives for a batch."""

    audio: Tensor  # B x T x audio_dim
    expression: Tensor  # B x T x expression_dim
    logprobs: Tensor  # B x T x H x C


class MultimodalEncoder(nn.Module):
    """Audio encoder, expression encoder and fusion MLP: the part frozen in stage 2."""

    def __init__(self, config: MeshTalkConfig):
        super().__init__()
        self.audio = AudioEncoder(config)
        self.expression = ExpressionEncoder(config)
        self.fusion = FusionMLP(config)

    def forward(self, mel: Tensor, vertices: Tensor) -> Codes:
        """mel B x T x n_mels x 101, vertices B x T x V x 3 (mm) -> codes and log-probs."""
        audio, expression = self.audio(mel), self.expression(vertices)
        return Codes(audio=audio, expression=expression, logprobs=self.fusion(expression, audio))


@dataclass
class Quantized:
    """A categorical latent drawn from log-probabilities."""

    one_hot: Tensor  # B x T x H x C, exactly 0/1, with straight-through gradients towards the softmax
    labels: Tensor  # B x T x H, int64


def gumbel_noise(uniform: Tensor) -> Tensor:
    """Gumbel noise from uniform draws in [0, 1): ``-log(-log(clamp(u, 1e-10, 1)))``, same shape."""
    return -torch.log(-torch.log(torch.clamp(uniform, GUMBEL_EPS, 1.0)))


def quantize(logprobs: Tensor, uniform: Tensor | None = None, *, noise_scale: float = 1.0) -> Quantized:
    """Straight-through Gumbel-softmax at temperature 1, or argmax when ``uniform`` is None.

    The forward value is the hard one-hot ``argmax(softmax(logprobs + noise_scale * g))``; the gradient is the
    softmax's. ``hard + (soft - soft.detach())`` has the reference's gradient and an exact 0/1 value.

    Args:
        logprobs: B x T x H x C.
        uniform: B x T x H x C draws of ``torch.rand`` (the Gumbel noise ``g`` is made from them), or None.
        noise_scale: factor on ``g`` (1 = the reference).
    """
    scores = logprobs if uniform is None else logprobs + noise_scale * gumbel_noise(uniform)
    soft = F.softmax(scores, dim=-1)
    labels = soft.argmax(dim=-1)  # (B, T, H)
    hard = F.one_hot(labels, logprobs.shape[-1]).to(soft.dtype)  # (B, T, H, C)
    return Quantized(one_hot=hard + (soft - soft.detach()), labels=labels)


class VertexDecoder(nn.Module):
    """Template + one-hot latent -> geometry: a fully connected U-Net around a temporal LSTM.

    The template is encoded to three levels (widths 512, 256, 128 by default), fused with the flattened one-hot
    (head-major), run through the LSTM, and decoded with a skip connection at every level, the last one to the
    normalised template itself. The template's encoding is computed once per sequence and broadcast over T.
    Shapes: template B x V x 3 (mm), one-hot B x T x H x C -> B x T x V x 3 (mm).
    """

    def __init__(self, config: MeshTalkConfig):
        super().__init__()
        V = config.n_vertices
        h1, h2, h3 = config.decoder_hidden
        self.register_buffer("mean", torch.zeros(V, 3))  # per-vertex normalisation, mm
        self.register_buffer("stddev", torch.ones(V, 3))
        self.down = nn.ModuleList([nn.Linear(V * 3, h1), nn.Linear(h1, h2), nn.Linear(h2, h3)])
        self.code_fusion = nn.Linear(h3 + config.heads * config.classes, h3)
        self.lstm = nn.LSTM(h3, h3, num_layers=config.decoder_lstm_layers, batch_first=True)
        self.up = nn.ModuleList([nn.Linear(h3, h2), nn.Linear(h2, h1), nn.Linear(h1, V * 3)])
        self.vertex_bias = nn.Parameter(torch.zeros(V * 3))

    def forward(self, template: Tensor, one_hot: Tensor) -> Tensor:
        B, T = one_hot.shape[:2]
        x0 = ((template - self.mean) / self.stddev).reshape(B, 1, -1)  # (B, 1, V*3)
        x1 = leaky(self.down[0](x0))  # (B, 1, 512)
        x2 = leaky(self.down[1](x1))  # (B, 1, 256)
        x3 = leaky(self.down[2](x2))  # (B, 1, 128)
        z = torch.cat([x3.expand(B, T, -1), one_hot.reshape(B, T, -1)], dim=-1)  # (B, T, 128 + H*C)
        y, _ = self.lstm(leaky(self.code_fusion(z)))  # (B, T, 128)
        y = x2 + leaky(self.up[0](y))  # (B, T, 256)
        y = x1 + leaky(self.up[1](y))  # (B, T, 512)
        y = x0 + leaky(self.up[2](y)) + self.vertex_bias  # (B, T, V*3)
        return y.reshape(B, T, -1, 3) * self.stddev + self.mean  # (B, T, V, 3)


def head_mask(heads: int, in_per_head: int, out_per_head: int, *, inclusive: bool) -> Tensor:
    """Which inputs of the current frame each output may see: (H*out_per_head) x (H*in_per_head), 0/1.

    Channels are head-major. Output head i sees input heads < i (strict) or <= i (inclusive).
    """
    out_head = torch.arange(heads * out_per_head) // out_per_head  # (H*out,)
    in_head = torch.arange(heads * in_per_head) // in_per_head  # (H*in,)
    visible = in_head[None, :] <= out_head[:, None] if inclusive else in_head[None, :] < out_head[:, None]
    return visible.float()


class MaskedLayer(nn.Module):
    """One context-model layer: a head-masked 1x1 over the current frame + the audio code + a historic term.

    ``output[t] = masked(x[t]) + audio(a[t]) + history([x[t - 1 - dilation], x[t - 1]])``; the audio term only
    when ``use_audio``, the historic term (the reference's kernel-2 dilated convolution, written as one linear
    layer over the two past frames, zeros before the start) only when ``dilation`` is given. The embedding and
    logits layers own audio weights they never use, as the released checkpoint does.
    Shapes: x B x T x (H*in_per_head), audio code B x T x audio_dim -> B x T x (H*out_per_head).
    """

    def __init__(self, heads: int, in_per_head: int, out_per_head: int, audio_dim: int, *, dilation: int | None,
                 inclusive: bool, use_audio: bool):
        super().__init__()
        ch_in, ch_out = heads * in_per_head, heads * out_per_head
        self.in_per_head, self.out_per_head = in_per_head, out_per_head
        self.inclusive, self.use_audio, self.dilation = inclusive, use_audio, dilation
        self.masked = nn.Linear(ch_in, ch_out)
        self.audio = nn.Linear(audio_dim, ch_out)
        # Columns: frame t - 1 - dilation, then frame t - 1.
        self.history = None if dilation is None else nn.Linear(2 * ch_in, ch_out)
        # Derived from the config, so not saved: checkpoints stay valid whatever the mask's dtype or device.
        self.register_buffer("mask", head_mask(heads, in_per_head, out_per_head, inclusive=inclusive),
                             persistent=False)

    def forward(self, x: Tensor, audio_code: Tensor) -> Tensor:
        y = F.linear(x, self.masked.weight * self.mask, self.masked.bias)
        if self.use_audio:
            y = y + self.audio(audio_code)
        if self.history is not None:
            T, d = x.shape[1], self.dilation
            far = F.pad(x, (0, 0, d + 1, 0))[:, :T]  # (B, T, ch_in): frame t holds x[t - 1 - d]
            near = F.pad(x, (0, 0, 1, 0))[:, :T]  # (B, T, ch_in): frame t holds x[t - 1]
            y = y + self.history(torch.cat([far, near], dim=-1))
        return y


class ContextModel(nn.Module):
    """Autoregressive prior over the labels: masked convolutions over heads (current frame) and time (past).

    An embedding of the one-hot (strict mask, no activation), context layers with historic convolutions of
    growing dilation (LeakyReLU after each), and a logits layer (log-softmax over C). In the reference every
    layer is strictly masked, so head h depends on the current frame's heads <= h - 6 and head 0 is a constant.
    With ``context_mask="first-strict"`` only the embedding is strict and head h depends on heads < h.
    Shapes: one-hot B x T x H x C, audio code B x T x audio_dim -> log-probs B x T x H x C.
    """

    def __init__(self, config: MeshTalkConfig):
        super().__init__()
        H, C, K, A = config.heads, config.classes, config.context_channels_per_head, config.audio_dim
        inclusive = config.context_mask == "first-strict"
        self.heads, self.classes = H, C
        self.receptive_field = config.context_receptive_field
        self.embedding = MaskedLayer(H, C, K, A, dilation=None, inclusive=False, use_audio=False)
        self.layers = nn.ModuleList(
            MaskedLayer(H, K, K, A, dilation=d, inclusive=inclusive, use_audio=True) for d in config.context_dilations
        )
        self.logits = MaskedLayer(H, K, C, A, dilation=None, inclusive=inclusive, use_audio=False)

    def forward(self, one_hot: Tensor, audio_code: Tensor) -> Tensor:
        B, T, H, C = one_hot.shape
        x = self.embedding(one_hot.reshape(B, T, H * C), audio_code)  # (B, T, H*K)
        for layer in self.layers:
            x = leaky(layer(x, audio_code))  # (B, T, H*K)
        x = self.logits(x, audio_code).reshape(B, T, H, C)  # (B, T, H, C)
        return F.log_softmax(x, dim=-1)


class MeshTalk(nn.Module):
    """The whole model: audio front-end, multimodal encoder, vertex decoder and context model.

    Training objectives live in ``meshtalk.objectives``, sampling in ``meshtalk.sampling``, the audio-to-animation
    pipeline in ``meshtalk.animate``.
    """

    def __init__(self, config: MeshTalkConfig):
        super().__init__()
        self.config = config
        self.frontend = AudioFrontEnd(config.n_mels)
        self.encoder = MultimodalEncoder(config)
        self.decoder = VertexDecoder(config)
        self.context = ContextModel(config)

    def set_vertex_statistics(self, mean_mm: Tensor, stddev_mm: Tensor) -> None:
        """Set the per-vertex normalisation (V x 3, mm) of the expression encoder and the decoder."""
        for module in (self.encoder.expression, self.decoder):
            module.mean.copy_(mean_mm)
            module.stddev.copy_(stddev_mm)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters per module (buffers excluded), as the spec lists them."""

        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        return {
            "audio_encoder": count(self.encoder.audio),
            "expression_encoder": count(self.encoder.expression),
            "fusion": count(self.encoder.fusion),
            "encoder": count(self.encoder),
            "decoder": count(self.decoder),
            "context": count(self.context),
            "total": count(self),
        }
