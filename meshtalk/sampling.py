"""Sampling labels from the context model, frame by frame and head by head.

Two implementations give the same labels for the same noise:
- ``sample_reference`` runs the whole context model over the last receptive field for every (frame, head), in
  the reference's order: readable, and T x H full passes (the release takes 9.9 s for 126 frames at H = 16 on
  2 CPU threads; docs/model.md has this implementation's figures);
- ``sample_fast`` uses the mask structure. At the current frame, head h of any layer depends only on labels
  < h, so it is final once those are chosen: each (frame, head) step computes just head h's channels of each
  layer from the inputs it may see. The audio terms of all frames are computed at once, the historic terms once
  per frame from cached per-layer inputs of the past frames.
Their log-probs differ only by float rounding (the sums run in another order), so a label can only differ at an
exact tie within rounding; the tests find none.

Noise: uniform draws B x T x H x C, turned into Gumbel noise as in the quantiser. ``draw_sampling_noise`` draws
them the reference's way (one ``torch.rand(B, C)`` per (frame, head), frame-major), so that
``torch.manual_seed(4)`` reproduces the reference's seeded sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from facedata.errors import InputError
from meshtalk.model import LEAKY_SLOPE, ContextModel, MaskedLayer, gumbel_noise


@dataclass
class Sample:
    """Labels drawn from the context model."""

    labels: Tensor  # B x T x H, int64
    one_hot: Tensor  # B x T x H x C


def draw_sampling_noise(batch: int, frames: int, heads: int, classes: int, *, generator: torch.Generator | None = None,
                        device: torch.device | str | None = None) -> Tensor:
    """Uniform draws for sampling, B x T x H x C: one ``torch.rand(B, C)`` per (frame, head), frame-major."""
    draws = [torch.rand(batch, classes, generator=generator, device=device) for _ in range(frames * heads)]
    if not draws:
        return torch.empty(batch, frames, heads, classes, device=device)
    return torch.stack(draws, dim=1).reshape(batch, frames, heads, classes)  # (B, T, H, C)


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
    gumbel = _gumbel(audio_code, H, C, argmax=argmax, noise=noise, generator=generator, noise_scale=noise_scale)
    one_hot = audio_code.new_zeros(B, T, H, C)
    with torch.no_grad():
        for t in range(T):
            start = max(0, t + 1 - context.receptive_field)  # earlier frames cannot change frame t
            for h in range(H):
                logprobs = context(one_hot[:, start : t + 1], audio_code[:, start : t + 1])[:, -1, h]  # (B, C)
                scores = logprobs if gumbel is None else logprobs + gumbel[:, t, h]
                one_hot[:, t, h] = F.one_hot(scores.argmax(dim=-1), C).to(one_hot.dtype)
    return Sample(labels=one_hot.argmax(dim=-1), one_hot=one_hot)


def sample_fast(context: ContextModel, audio_code: Tensor, *, argmax: bool = False, noise: Tensor | None = None,
                generator: torch.Generator | None = None, noise_scale: float = 1.0,
                prefix: Tensor | None = None) -> Sample:
    """The labels of ``sample_reference`` (same arguments) at a fraction of the cost.

    ``prefix`` (B x P x H labels, P <= T) gives the labels of the first P frames instead of sampling them (their
    noise, drawn or given, is not used): with the last ``context.receptive_field`` labels of a sequence and their
    audio codes in front, the next frames are sampled as if the whole sequence had been sampled at once, so that
    long audio can be sampled in chunks.

    At the current frame, head h of every layer depends only on labels < h, so each (frame, head) step computes
    head h's channels of each layer from the current-frame inputs it may see (a row block of the masked weight,
    columns up to its own head). The rest is computed as early and as batched as possible:
    - the biases and audio terms of all frames at once;
    - the historic term's far tap (frame t - 1 - d) for d + 1 frames at once, as soon as their inputs are known;
    - the near tap (frame t - 1) once per frame, from cached per-layer inputs of past frames;
    - the embedding of a one-hot is a column of its weight: each chosen label adds its column to the embedding
      of the heads above it.

    Raises:
        InputError: ``noise`` or ``prefix`` of the wrong shape.
    """
    B, T, _ = audio_code.shape
    H, C = context.heads, context.classes
    given = 0 if prefix is None else prefix.shape[1]
    if prefix is not None and (prefix.dim() != 3 or prefix.shape[0] != B or prefix.shape[2] != H or given > T):
        raise InputError("prefix", "wrong shape", expected=f"({B}, <= {T}, {H})", actual=tuple(prefix.shape))
    if prefix is not None:
        prefix = prefix.to(device=audio_code.device, dtype=torch.long)
    gumbel = _gumbel(audio_code, H, C, argmax=argmax, noise=noise, generator=generator, noise_scale=noise_scale)
    if gumbel is not None:
        gumbel = gumbel.permute(1, 2, 0, 3).contiguous()  # (T, H, B, C): gumbel[t, h] is contiguous
    embedding, layers, logits = context.embedding, list(context.layers), context.logits
    K = embedding.out_per_head
    with torch.no_grad():
        # Current frame: the embedding, the output of each context layer, the logits. (B, ch)
        emb = audio_code.new_zeros(B, H * K)
        acts = [audio_code.new_zeros(B, H * K) for _ in layers]
        z = audio_code.new_zeros(B, H * C)
        inputs = [emb, *acts[:-1]]  # input of each context layer
        # Terms of each context layer that do not depend on the current frame: biases, audio and (added ahead)
        # the far historic tap. (T, B, ch)
        pending = [(layer.masked.bias + layer.history.bias + layer.audio(audio_code)).transpose(0, 1).contiguous()
                   for layer in layers]
        past = [audio_code.new_zeros(T, B, H * K) for _ in layers]  # inputs of every frame: (T, B, ch_in)
        far = [layer.history.weight[:, : H * K] for layer in layers]  # (ch_out, ch_in) views
        near = [layer.history.weight[:, H * K :] for layer in layers]

        # Views used at step h, the same for every frame: (rows of head h's output, visible inputs, weight block).
        layer_steps = [[_head_step(layer, h, x, a) for layer, x, a in zip(layers, inputs, acts, strict=True)]
                       for h in range(H)]
        logit_steps = [_head_step(logits, h, acts[-1], z) for h in range(H)]
        # Columns of label classes of head h, rows of the heads above it (the embedding is always strict).
        emb_columns = [embedding.masked.weight[(h + 1) * K :, h * C : (h + 1) * C].t().contiguous()
                       for h in range(H)]  # (C, (H - 1 - h) * K): row c is class c's column
        emb_above = [emb[:, (h + 1) * K :] for h in range(H)]

        labels = []
        for t in range(T):
            emb.copy_(embedding.masked.bias)
            for i, layer in enumerate(layers):
                d = layer.dilation
                if t % (d + 1) == 0:  # far taps of frames t .. t + d, whose inputs t - 1 - d .. t - 1 are known
                    lo, hi = max(t, d + 1), min(t + d, T - 1)
                    if lo <= hi:
                        pending[i][lo : hi + 1].view(-1, H * K).addmm_(
                            past[i][lo - 1 - d : hi - d].view(-1, H * K), far[i].t())
                acts[i].copy_(pending[i][t])
                if t >= 1:
                    acts[i].addmm_(past[i][t - 1], near[i].t())
            z.copy_(logits.masked.bias)
            for h in range(H):
                for out, x, weight in layer_steps[h]:
                    if x.shape[1]:
                        out.addmm_(x, weight)
                    F.leaky_relu_(out, LEAKY_SLOPE)
                out, x, weight = logit_steps[h]
                if x.shape[1]:
                    out.addmm_(x, weight)
                if t < given:
                    label = prefix[:, t, h]  # type: ignore[index]
                else:
                    scores = F.log_softmax(out, dim=-1)  # (B, C)
                    if gumbel is not None:
                        scores = scores + gumbel[t, h]
                    label = scores.argmax(dim=-1)  # (B,)
                labels.append(label)
                if h + 1 < H:
                    emb_above[h].add_(emb_columns[h][label])
            for i in range(len(layers)):
                past[i][t].copy_(inputs[i])
    # T x H tensors of (B,), frame-major -> (B, T, H)
    labels = torch.stack(labels, dim=1).reshape(B, T, H) if labels else audio_code.new_zeros(B, T, H).long()
    one_hot = F.one_hot(labels, C).to(audio_code.dtype)  # (B, T, H, C)
    return Sample(labels=labels, one_hot=one_hot)


def _head_step(layer: MaskedLayer, h: int, inputs: Tensor, out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """What head h of ``layer`` computes at the current frame: ``out_h += inputs_visible @ weight_h``.

    Returns views: head h's output channels (B, out_per_head), the current-frame inputs it sees (B, cols) (heads
    < h, or <= h for an inclusive layer) and the matching weight block, transposed (cols, out_per_head).
    """
    rows = slice(h * layer.out_per_head, (h + 1) * layer.out_per_head)
    cols = (h + 1 if layer.inclusive else h) * layer.in_per_head
    return out[:, rows], inputs[:, :cols], layer.masked.weight[rows, :cols].t()


SAMPLERS = {"fast": sample_fast, "reference": sample_reference}


def sample(context: ContextModel, audio_code: Tensor, *, method: str = "fast", **options) -> Sample:
    """``sample_fast`` or ``sample_reference`` by name; ``options`` as theirs.

    Raises:
        InputError: an unknown method, or noise of the wrong shape.
    """
    if method not in SAMPLERS:
        raise InputError("sampler", "unknown method", expected=" or ".join(SAMPLERS), actual=repr(method))
    return SAMPLERS[method](context, audio_code, **options)


def _gumbel(audio_code: Tensor, heads: int, classes: int, *, argmax: bool, noise: Tensor | None,
            generator: torch.Generator | None, noise_scale: float) -> Tensor | None:
    """Scaled Gumbel noise B x T x H x C, or None for argmax."""
    if argmax:
        return None
    B, T, _ = audio_code.shape
    if noise is None:
        noise = draw_sampling_noise(B, T, heads, classes, generator=generator, device=audio_code.device)
    if tuple(noise.shape) != (B, T, heads, classes):
        raise InputError("noise", "wrong shape", expected=(B, T, heads, classes), actual=tuple(noise.shape))
    return noise_scale * gumbel_noise(noise.to(audio_code.dtype))
