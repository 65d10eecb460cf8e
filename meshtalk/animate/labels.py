"""Label planning: how a sequence's labels are sampled (one chain, or segments side by side) and the labels
piece by piece.

The context model sees only the last ``receptive_field`` (20) frames, so a sequence is sampled in pieces: one chain,
each piece started from the last 20 labels of the one before (``sample_fast(prefix=...)``), exactly the labels of
sampling it whole; or segments of L frames sampled side by side as one batch, each warmed up on the 20 frames
before it (several times faster on long audio; the chain restarts at each boundary, which the geometry crossfades
over in ``meshtalk.animate.stream``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from facedata.audio import MESH_FPS
from facedata.errors import InputError
from meshtalk.device import map_on_threads, torch_threads, usable_cores
from meshtalk.sampling import draw_sampling_noise, sample_fast


@dataclass(frozen=True)
class LabelPlan:
    """How a sequence's labels are sampled.

    Attributes:
        samples: S sequences of labels for the same audio.
        seed: seeds the sampling noise (see ``iter_labels``).
        argmax: take the most likely class at every step instead of sampling.
        noise_scale: factor on the Gumbel noise (1 = the reference's sampling).
        segment_frames: None samples one chain over the whole sequence; L cuts it into segments of L frames
            sampled side by side, each warmed up on the ``receptive_field`` frames before it.
        batch_segments: segments sampled together at most (the memory of one batch).
        chunk_frames: frames per piece of the single chain.
        threads: the segments of a batch are sampled in this many parts side by side, one thread each, every
            operation on one core (None: the cores this process may use; see ``iter_labels``).
    """

    samples: int = 1
    seed: int = 0
    argmax: bool = False
    noise_scale: float = 1.0
    segment_frames: int | None = None
    batch_segments: int = 32
    chunk_frames: int = 600
    threads: int | None = None

    def check(self, receptive_field: int) -> None:
        """Raises InputError for values that cannot work with a context model of this receptive field."""
        if self.samples < 1:
            raise InputError("--samples", "no sample", expected=">= 1", actual=self.samples)
        if self.segment_frames is not None and self.segment_frames < receptive_field:
            raise InputError("--segment-seconds", "segments shorter than the context model's receptive field",
                             expected=f">= {receptive_field} frames ({receptive_field / MESH_FPS:.2f} s), or 0",
                             actual=f"{self.segment_frames} frames")
        if self.batch_segments < 1 or self.chunk_frames < 1 or (self.threads is not None and self.threads < 1):
            raise InputError("label plan", "batch and chunk sizes and threads", expected=">= 1",
                             actual=(self.batch_segments, self.chunk_frames, self.threads))


def segment_bounds(n_frames: int, segment_frames: int, warmup: int) -> list[tuple[int, int, int]]:
    """(first input frame, first own frame, stop) of each segment.

    Segment 0 owns frames [0, warmup + L): it needs no warm-up, and owning ``warmup`` more frames makes every
    segment the same number of sampler steps. Segment k >= 1 owns [warmup + k L, warmup + (k + 1) L) and is
    warmed up on the ``warmup`` frames before it.
    """
    bounds = [(0, 0, min(n_frames, warmup + segment_frames))]
    start = warmup + segment_frames
    while start < n_frames:
        bounds.append((start - warmup, start, min(n_frames, start + segment_frames)))
        start += segment_frames
    return bounds


def _sample_parts(context: Any, audio: Tensor, noise: Tensor | None, plan: LabelPlan, parts: list[slice]) -> Tensor:
    """``sample_fast``'s labels of the rows of ``audio`` (B x T x audio_dim, noise B x T x H x C), each slice of
    ``parts`` on its own thread; B x T x H."""

    def part(rows: slice) -> Tensor:
        return sample_fast(context, audio[rows], argmax=plan.argmax, noise_scale=plan.noise_scale,
                           noise=None if noise is None else noise[rows], draft="none").labels

    return torch.cat(map_on_threads(part, parts, len(parts)))


def _split_rows(segments: int, samples: int, parts: int) -> list[slice]:
    """Rows of a segment-major batch (``segments`` x ``samples`` rows) cut into at most ``parts`` slices of whole
    segments, as even as they go."""
    parts = max(1, min(parts, segments))
    edges = [round(k * segments / parts) * samples for k in range(parts + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(edges)]


def segment_seed(seed: int, segment: int) -> int:
    """The noise seed of a segment: ``seed`` for the first (so a one-segment sequence matches ``animate``)."""
    return (seed + 1_000_003 * segment) % (2**63)


@dataclass(frozen=True)
class LabelPiece:
    """Labels of consecutive frames: ``labels`` S x n x H of frames [first, first + n); for a segment after the
    first, ``warmup`` S x W x H holds the labels its warm-up drew for the W frames before ``first``."""

    first: int
    labels: Tensor
    warmup: Tensor | None = None


@torch.no_grad()
def iter_labels(context: Any, codes: Callable[[int, int], Tensor], n_frames: int, plan: LabelPlan
                ) -> Iterator[LabelPiece]:
    """Labels of frames [0, n_frames) in order, piece by piece.

    Args:
        context: the model's context model.
        codes: ``codes(a, b)`` gives the audio codes of frames [a, b), (b - a, audio_dim).
        plan: samples, seed, mode (see ``LabelPlan``).

    Noise: the single chain draws it from one generator seeded with ``seed``, frame-major as
    ``meshtalk.sampling.draw_sampling_noise``, so it equals ``animate(..., generator=torch.Generator()
    .manual_seed(seed))`` on the whole sequence whatever the piece size; segment k draws from its own generator
    seeded with ``segment_seed(seed, k)``, so a segment's labels do not depend on how segments are batched.
    Every sampler operation runs on one core: its steps are small matrix products, which two intra-op threads on
    two busy cores made 3 to 30 times slower (docs/animation.md). Segments use the other cores instead: a batch is
    cut into ``plan.threads`` parts sampled on as many threads at once (each part's operations release the
    interpreter while they compute), which on a busy machine degrades to taking turns on one core; the labels are
    the same however a batch is cut (each segment has its own noise, and rows of a batch do not mix).
    """
    H, C, W = context.heads, context.classes, context.receptive_field
    S = plan.samples
    if plan.segment_frames is None:
        generator = torch.Generator().manual_seed(plan.seed)
        previous: Tensor | None = None  # (S, <= W, H): the last labels of the chain
        for a in range(0, n_frames, plan.chunk_frames):
            b = min(n_frames, a + plan.chunk_frames)
            given = 0 if previous is None else previous.shape[1]
            audio = codes(a - given, b)[None].expand(S, -1, -1)  # (S, given + n, audio_dim)
            noise = None
            if not plan.argmax:
                fresh = draw_sampling_noise(S, b - a, H, C, generator=generator)  # (S, n, H, C)
                noise = torch.cat([fresh.new_zeros(S, given, H, C), fresh], dim=1)
            with torch_threads(1):
                # Waves, not speculation: its draft's compilation (seconds, once per process) would cost more
                # than it saves on a sentence (meshtalk.sampling); the labels are the same.
                drawn = sample_fast(context, audio, argmax=plan.argmax, noise=noise, noise_scale=plan.noise_scale,
                                    prefix=previous, draft="none")
            labels = drawn.labels[:, given:]  # (S, n, H)
            previous = labels[:, -W:] if previous is None else torch.cat([previous, labels], dim=1)[:, -W:]
            yield LabelPiece(a, labels)
        return
    bounds = segment_bounds(n_frames, plan.segment_frames, W)
    steps = max(stop - first for first, _, stop in bounds)
    threads = plan.threads or usable_cores()
    for g in range(0, len(bounds), plan.batch_segments):
        group = list(range(g, min(len(bounds), g + plan.batch_segments)))
        lo, hi = bounds[group[0]][0], bounds[group[-1]][2]
        block = codes(lo, hi)  # (hi - lo, audio_dim)
        rows, noise = [], []
        for k in group:
            first, _, stop = bounds[k]
            # A short last segment is padded at its end: the model is causal, so that changes none of its labels.
            rows.append(F.pad(block[first - lo : stop - lo], (0, 0, 0, steps - (stop - first))))  # (steps, A)
            if not plan.argmax:
                generator = torch.Generator().manual_seed(segment_seed(plan.seed, k))
                noise.append(draw_sampling_noise(S, steps, H, C, generator=generator))  # (S, steps, H, C)
        # Rows segment-major, the S samples of a segment together: (K * S, steps, audio_dim).
        audio = torch.stack(rows).repeat_interleave(S, dim=0)
        drawn = _sample_parts(context, audio, torch.cat(noise) if noise else None, plan,
                              _split_rows(len(group), S, threads))
        labels = drawn.reshape(len(group), S, steps, H)
        for i, k in enumerate(group):
            first, own, stop = bounds[k]
            yield LabelPiece(own, labels[i, :, own - first : stop - first],
                             labels[i, :, : own - first] if own > first else None)
