"""The inference core: from audio codes to meshes, shared by evaluation, animation, rendering and training.

- ``audio_codes``: the audio code of every frame of a stored sentence (its mel windows through the audio encoder);
- ``reconstruct``: audio codes and geometry through the encoder, argmax code, decoder (what stage 1 learned);
- ``decode_samples``: audio codes -> context-model labels (``meshtalk.sampling``) -> decoder, one sequence at a time;
- ``animate``: the same from log-mel windows, on tensors;
- ``smooth_regions``: the reference's post-processing, Gaussian smoothing in time blended by a forehead mask and
  then a neck mask.

Every consumer computes its predictions here, so that ``meshtalk evaluate``, ``meshtalk animate``, ``meshtalk
render --compare`` and the trainer's validation score and show the same thing. Streaming long audio (features block
by block, labels in segments, the decoder's state carried over) is ``meshtalk.animate``'s; this module works on
whole tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit
from torch import Tensor

from meshtalk.data import SequenceData
from meshtalk.device import map_on_threads
from meshtalk.model import MeshTalk, quantize
from meshtalk.sampling import sample

# --- from audio codes ----------------------------------------------------------------------------------------------


@torch.no_grad()
def audio_codes(model: MeshTalk, sequence: SequenceData, *, chunk_frames: int = 256) -> Tensor:
    """The audio code of every frame of a sentence, ``chunk_frames`` frames at a time. -> 1 x T x audio_dim."""
    device = next(model.parameters()).device
    parts = []
    for first in range(0, sequence.n_frames, chunk_frames):
        count = min(chunk_frames, sequence.n_frames - first)
        mel = torch.from_numpy(sequence.mel_windows(first, count)).to(device)  # (n, 80, 101)
        parts.append(model.encoder.audio(mel[None]))  # (1, n, audio_dim)
    return torch.cat(parts, dim=1)


@torch.no_grad()
def reconstruct(model: MeshTalk, audio_code: Tensor, vertices: Tensor, template: Tensor) -> Tensor:
    """Encoder (given audio codes) + argmax code + decoder.

    Shapes: audio code B x T x audio_dim, vertices B x T x V x 3 mm, template B x V x 3 mm -> B x T x V x 3 mm.
    """
    expression = model.encoder.expression(vertices)
    logprobs = model.encoder.fusion(expression, audio_code)
    return model.decoder(template, quantize(logprobs).one_hot)


@torch.no_grad()
def decode_samples(model: MeshTalk, audio_code: Tensor, template: Tensor, *, argmax: bool = False,
                   generator: torch.Generator | None = None, sampler: str = "fast") -> Tensor:
    """Audio codes -> context-model labels -> decoder (``animate`` from audio codes computed elsewhere).
    B x T x audio_dim, B x V x 3 -> B x T x V x 3.

    Samples are decoded one sequence at a time (a decoded batch is B copies of the geometry).
    """
    labels = sample(model.context, audio_code, method=sampler, argmax=argmax, generator=generator)
    return torch.cat([model.decoder(template[b : b + 1], labels.one_hot[b : b + 1])
                      for b in range(labels.one_hot.shape[0])])


# --- from log-mel windows, and the reference's post-processing -----------------------------------------------------


@dataclass
class Animation:
    """Geometry decoded from sampled labels."""

    geometry: Tensor  # B x T x V x 3, mm
    labels: Tensor  # B x T x H


def animate(model: MeshTalk, mel: Tensor, template: Tensor, *, argmax: bool = False, noise: Tensor | None = None,
            generator: torch.Generator | None = None, noise_scale: float = 1.0, method: str = "fast") -> Animation:
    """Face geometry for speech: audio code -> labels sampled from the context model -> decoder.

    Args:
        model: the model (put it in eval mode).
        mel: B x T x 80 x 101 log-mel windows (``model.frontend`` makes them from B x T x 16000 audio windows).
        template: B x V x 3 neutral faces, mm.
        argmax, noise, generator, noise_scale, method: as in ``meshtalk.sampling.sample``.

    Returns:
        The geometry before post-processing (see ``smooth_regions``) and the labels.
    """
    with torch.no_grad():
        audio_code = model.encoder.audio(mel)  # (B, T, 128)
        drawn = sample(model.context, audio_code, method=method, argmax=argmax, noise=noise, generator=generator,
                       noise_scale=noise_scale)
        geometry = model.decoder(template, drawn.one_hot)  # (B, T, V, 3)
    return Animation(geometry=geometry, labels=drawn.labels)


def gaussian_kernel(size: int = 9, sigma: float = 2.0) -> Tensor:
    """Normalised Gaussian weights over ``size`` frames centred on the middle one, (size,) float32."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-offsets.square() / (2 * sigma * sigma))
    return (weights / weights.sum()).float()


def smooth_in_time(geometry: Tensor, *, size: int = 9, sigma: float = 2.0) -> Tensor:
    """Gaussian smoothing along T with replicate padding. (..., T, V, 3) -> same shape.

    A weighted sum of ``size`` shifted copies: on (T, V, 3) geometry this is several times faster than a
    convolution over V * 3 one-channel signals, which had to transpose the data twice.
    """
    T = geometry.shape[-3]
    half = size // 2
    first, last = geometry[..., :1, :, :], geometry[..., -1:, :, :]
    padded = torch.cat([first.expand(*first.shape[:-3], half, *first.shape[-2:]), geometry,
                        last.expand(*last.shape[:-3], half, *last.shape[-2:])], dim=-3)  # (..., T + size - 1, V, 3)
    out = torch.zeros_like(geometry)
    for k, weight in enumerate(gaussian_kernel(size, sigma).tolist()):
        out.add_(padded[..., k : k + T, :, :], alpha=weight)
    return out


def smooth_regions(geometry: Tensor, masks: list[Tensor], *, size: int = 9, sigma: float = 2.0,
                   threads: int = 1) -> Tensor:
    """The reference's post-processing: for each mask in turn, ``smoothed * m + geometry * (1 - m)``.

    Each pass smooths the result of the previous one (the reference passes the forehead mask, then the neck mask).
    Only vertices of nonzero weight are smoothed: the others keep their values exactly, and the masks cover a
    small part of the face. Vertices are smoothed independently, so a pass may split them over ``threads``
    threads (each with its operations on one core); the values do not depend on it.

    Args:
        geometry: (..., T, V, 3), mm.
        masks: per-vertex weights in [0, 1], each (V,).
    """
    out = geometry
    lead = geometry.shape[:-2]  # (..., T)

    def blend(index: Tensor, weight: Tensor) -> None:
        # The vertices' 3 K values gathered from each frame's row of V * 3: 3.6x faster than gathering K vertices of
        # 3 values (index_select along the vertex axis) and 1.4x to write back, the same values.
        columns = (index[:, None] * 3 + torch.arange(3, device=index.device)).reshape(-1)  # (3 K,)
        if out.device.type == "cpu" and out.dtype == torch.float32 and not out.requires_grad:
            # In place, one compiled pass: the same values to float rounding.
            _smooth_columns(out.view(-1, out.shape[-3], out.shape[-2] * 3).numpy(), columns.numpy(),
                            weight.expand(-1, 3).reshape(-1).numpy(), gaussian_kernel(size, sigma).numpy())
            return
        rows = out.view(*lead, -1)  # (..., T, V * 3)
        part = rows.index_select(-1, columns).view(*lead, -1, 3)  # (..., T, K, 3)
        blended = smooth_in_time(part, size=size, sigma=sigma) * weight + part * (1 - weight)
        rows.index_copy_(-1, columns, blended.view(*lead, -1))

    for mask in masks:
        m = mask.to(geometry)
        index = torch.nonzero(m).squeeze(1)  # (K,)
        if index.numel() == 0:
            continue
        weight = m[index][:, None]  # (K, 1)
        if out is geometry:
            out = geometry.clone(memory_format=torch.contiguous_format)  # rows of V * 3 values (see blend)
        parts = max(1, min(threads, index.numel()))  # disjoint vertices: no write meets another
        pieces = zip(index.tensor_split(parts), weight.tensor_split(parts), strict=True)
        map_on_threads(lambda piece: blend(*piece), pieces, parts)
    return out


@njit(nogil=True, cache=True)
def _smooth_columns(rows: np.ndarray, columns: np.ndarray, weights: np.ndarray, kernel: np.ndarray) -> None:
    """``smooth_regions``' blend of one mask in place on ``rows`` (N, T, V * 3) float32: the mask's columns gathered
    frame by frame, each frame's smoothed values summed over the shifted frames as ``smooth_in_time`` (replicate
    padding, the taps in the same order), then ``smoothed * w + x * (1 - w)`` written back. The sums run along
    the gathered columns, which vectorise."""
    N, T, _ = rows.shape
    M = columns.shape[0]
    size = kernel.shape[0]
    half = size // 2
    gathered = np.empty((T, M), np.float32)
    total = np.empty(M, np.float32)
    keep = np.float32(1.0) - weights
    for n in range(N):
        for t in range(T):
            row = rows[n, t]
            for i in range(M):
                gathered[t, i] = row[columns[i]]
        for t in range(T):
            total[:] = 0.0
            for k in range(size):
                tap, shifted = kernel[k], gathered[min(max(t + k - half, 0), T - 1)]
                for i in range(M):
                    total[i] += tap * shifted[i]
            row, own = rows[n, t], gathered[t]
            for i in range(M):
                row[columns[i]] = total[i] * weights[i] + own[i] * keep[i]
