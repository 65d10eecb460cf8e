"""Audio to animation with a trained model, and the reference's post-processing.

Inference uses the audio encoder, the context model and the decoder; the expression encoder and fusion MLP are
not needed. The reference then smooths the result in time where a forehead mask and then a neck mask say so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from meshtalk.model import MeshTalk
from meshtalk.sampling import sample


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
    """Gaussian smoothing along T with replicate padding. (..., T, V, 3) -> same shape."""
    *lead, T, V, _ = geometry.shape
    x = geometry.reshape(-1, T, V * 3).transpose(1, 2).reshape(-1, 1, T)  # (N*V*3, 1, T)
    half = size // 2
    x = F.pad(x, (half, half), mode="replicate")  # (N*V*3, 1, T + size - 1)
    kernel = gaussian_kernel(size, sigma).to(geometry)
    x = F.conv1d(x, kernel.view(1, 1, size))  # (N*V*3, 1, T)
    return x.reshape(-1, V * 3, T).transpose(1, 2).reshape(*lead, T, V, 3)


def smooth_regions(geometry: Tensor, masks: list[Tensor], *, size: int = 9, sigma: float = 2.0) -> Tensor:
    """The reference's post-processing: for each mask in turn, ``smoothed * m + geometry * (1 - m)``.

    Each pass smooths the result of the previous one (the reference passes the forehead mask, then the neck mask).

    Args:
        geometry: (..., T, V, 3), mm.
        masks: per-vertex weights in [0, 1], each (V,).
    """
    for mask in masks:
        m = mask.to(geometry)[:, None]  # (V, 1)
        geometry = smooth_in_time(geometry, size=size, sigma=sigma) * m + geometry * (1 - m)
    return geometry

