"""What every sampler shares: the ``Sample`` it returns and its noise.

Noise: uniform draws B x T x H x C, turned into Gumbel noise as in the quantiser. ``draw_sampling_noise`` draws
them the reference's way (one ``torch.rand(B, C)`` per (frame, head), frame-major), so that
``torch.manual_seed(4)`` reproduces the reference's seeded sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from facedata.errors import InputError
from meshtalk.model import gumbel_noise


@dataclass
class Sample:
    """Labels drawn from the context model."""

    labels: Tensor  # B x T x H, int64
    one_hot: Tensor  # B x T x H x C


def draw_sampling_noise(batch: int, frames: int, heads: int, classes: int, *, generator: torch.Generator | None = None,
                        device: torch.device | str | None = None) -> Tensor:
    """Uniform draws for sampling, B x T x H x C: one ``torch.rand(B, C)`` per (frame, head), frame-major."""
    if torch.empty(0, device=device).device.type == "cpu":
        # The CPU generator fills a tensor element by element in memory order, so one (T*H, B, C) draw is the
        # stream of the T*H draws of (B, C) (tests/meshtalk/test_sampling.py): 30,000 calls fewer for a minute of
        # speech, 0.24 s of it. Other devices draw in parallel blocks, where only the calls themselves are the same.
        draws = torch.rand(frames * heads, batch, classes, generator=generator, device=device)
        return draws.transpose(0, 1).reshape(batch, frames, heads, classes)  # (B, T, H, C)
    draws = [torch.rand(batch, classes, generator=generator, device=device) for _ in range(frames * heads)]
    if not draws:
        return torch.empty(batch, frames, heads, classes, device=device)
    return torch.stack(draws, dim=1).reshape(batch, frames, heads, classes)  # (B, T, H, C)


def scaled_gumbel(audio_code: Tensor, heads: int, classes: int, *, argmax: bool, noise: Tensor | None,
                  generator: torch.Generator | None, noise_scale: float) -> Tensor | None:
    """Scaled Gumbel noise B x T x H x C, or None for argmax."""
    if argmax:
        return None
    B, T, _ = audio_code.shape
    if noise is None:
        noise = draw_sampling_noise(B, T, heads, classes, generator=generator, device=audio_code.device)
    if tuple(noise.shape) != (B, T, heads, classes):
        raise InputError("noise", "wrong shape", expected=(B, T, heads, classes), actual=tuple(noise.shape))
    return noise_scale * gumbel_noise(noise.to(device=audio_code.device, dtype=audio_code.dtype))
