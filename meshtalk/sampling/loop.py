"""The reference's sampling loop: the whole context model over the last receptive field for every (frame, head),
in the reference's order. Readable, and T x H full passes (the release takes 9.9 s for 126 frames at H = 16 on
2 CPU threads; docs/model.md has this implementation's figures): the labels every faster path must give.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from meshtalk.model import ContextModel
from meshtalk.sampling.noise import Sample, scaled_gumbel


def sample_reference(context: ContextModel, audio_code: Tensor, *, argmax: bool = False, noise: Tensor | None = None,
                     generator: torch.Generator | None = None, noise_scale: float = 1.0) -> Sample:
    """Labels in the reference's order: a full context-model pass per (frame, head).

    Args:
        context: the context model.
        audio_code: B x T x audio_dim.
        argmax: take the most likely class instead of sampling.
        noise: B x T x H x C uniform draws; drawn with ``draw_sampling_noise(generator=generator)`` when None.
        noise_scale: factor on the Gumbel noise (1 = the reference's temperature-1 sampling).

    Raises:
        InputError: ``noise`` of the wrong shape.
    """
    B, T, _ = audio_code.shape
    H, C = context.heads, context.classes
    gumbel = scaled_gumbel(audio_code, H, C, argmax=argmax, noise=noise, generator=generator, noise_scale=noise_scale)
    one_hot = audio_code.new_zeros(B, T, H, C)
    with torch.no_grad():
        for t in range(T):
            start = max(0, t + 1 - context.receptive_field)  # earlier frames cannot change frame t
            for h in range(H):
                logprobs = context(one_hot[:, start : t + 1], audio_code[:, start : t + 1])[:, -1, h]  # (B, C)
                scores = logprobs if gumbel is None else logprobs + gumbel[:, t, h]
                one_hot[:, t, h] = F.one_hot(scores.argmax(dim=-1), C).to(one_hot.dtype)
    return Sample(labels=one_hot.argmax(dim=-1), one_hot=one_hot)
