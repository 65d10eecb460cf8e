"""The decoder stream and the smoothing: labels to smoothed meshes in pieces of bounded size.

- ``DecoderStream``: the vertex decoder run piece by piece, the template's encoding once and the LSTM's state
  carried over (the same values as decoding the whole sequence);
- ``StreamSmoother``: ``meshtalk.inference.smooth_regions`` as a delay line of ``4 * len(masks)`` frames;
- ``animate_speech``: speech -> audio codes -> labels (``iter_labels``) -> geometry -> smoothed frames, yielded in
  frame order, crossfading from one label segment to the next; ``StageTimes`` adds up the time of each stage.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from meshtalk.animate.labels import LabelPiece, LabelPlan, iter_labels
from meshtalk.animate.speech import Speech, speech_codes
from meshtalk.device import map_on_threads
from meshtalk.inference import smooth_regions
from meshtalk.model import LEAKY_SLOPE, MeshTalk, VertexDecoder, leaky


@dataclass
class DecoderStream:
    """The vertex decoder run piece by piece: the template's encoding once, the LSTM's state carried over.

    ``decode(one_hot)`` is ``VertexDecoder.forward(template, one_hot)`` on the pieces put together, to float
    rounding (test_animate checks it). It is two steps, which a caller may run apart: ``rows`` (the code fusion,
    the LSTM and the first up layers: small and stateful) and ``vertices`` (the last layer, to V * 3 outputs, most
    of the arithmetic: each row on its own). ``vertices`` takes the rows of several pieces at once, because the
    last layer reads its 38 MB of weights once per call whatever the rows: 20 rows cost half as much as 100
    (docs/animation.md). It runs on ``threads`` threads, each on its own rows with its operations on one core:
    unlike intra-op threads, that does not make the LSTM's small steps wait for a descheduled thread on busy
    cores.
    """

    decoder: VertexDecoder
    template: Tensor  # 1 x V x 3, mm
    levels: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
    state: tuple[Tensor, Tensor] | None = None
    threads: int = 1

    @torch.no_grad()
    def decode(self, one_hot: Tensor) -> Tensor:
        """S x n x H x C one-hot labels of the next n frames -> S x n x V x 3 geometry, mm."""
        return self.vertices([self.rows(one_hot)])[0]

    @torch.no_grad()
    def rows(self, one_hot: Tensor) -> Tensor:
        """S x n x H x C one-hot labels of the next n frames -> S x n x F, the last layer's inputs (F = 512 in the
        released config; the LSTM's state moves on)."""
        d = self.decoder
        B, T = one_hot.shape[:2]
        x1, x2, x3 = self._levels()[1:]
        z = torch.cat([x3.expand(B, T, -1), one_hot.reshape(B, T, -1)], dim=-1)  # (B, T, 128 + H*C)
        y, self.state = d.lstm(leaky(d.code_fusion(z)), self.state)  # (B, T, 128)
        y = x2 + leaky(d.up[0](y))  # (B, T, 256)
        return x1 + leaky(d.up[1](y))  # (B, T, 512)

    @torch.no_grad()
    def vertices(self, pieces: list[Tensor]) -> list[Tensor]:
        """The geometry (S x n x V x 3, mm) of each piece of ``rows`` (S x n x F), in one pass of the last layer over
        all of them."""
        d = self.decoder
        x0 = self._levels()[0]
        y = torch.cat([p.reshape(-1, p.shape[-1]) for p in pieces])  # (rows, 512)
        out = y.new_empty(y.shape[0], x0.shape[-1])  # (rows, V*3)
        # (leaky(up) + x0 + bias) * stddev + mean as leaky(up) * stddev + offset: two passes over the large rows
        # instead of five, the same values to float rounding.
        stddev = d.stddev.reshape(-1)
        offset = (x0.reshape(-1) + d.vertex_bias) * stddev + d.mean.reshape(-1)  # (V*3,)

        def last(rows: slice) -> None:
            # In place: the (rows, V*3) outputs are the large tensors, and each new one costs page faults.
            part = torch.addmm(d.up[2].bias, y[rows], d.up[2].weight.t(), out=out[rows])
            torch.addcmul(offset, F.leaky_relu_(part, LEAKY_SLOPE), stddev, out=part)

        n = y.shape[0]
        edges = [round(k * n / self.threads) for k in range(self.threads + 1)]
        map_on_threads(last, [slice(a, b) for a, b in itertools.pairwise(edges) if b > a], self.threads)
        sizes = [p.shape[0] * p.shape[1] for p in pieces]
        return [part.view(p.shape[0], p.shape[1], -1, 3) for part, p in zip(out.split(sizes), pieces, strict=True)]

    def _levels(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The template's encoding at each level of the decoder, computed once."""
        if self.levels is None:
            d = self.decoder
            x0 = ((self.template - d.mean) / d.stddev).reshape(1, 1, -1)  # (1, 1, V*3)
            x1 = leaky(d.down[0](x0))  # (1, 1, 512)
            x2 = leaky(d.down[1](x1))  # (1, 1, 256)
            self.levels = (x0, x1, x2, leaky(d.down[2](x2)))  # (1, 1, 128)
        return self.levels


class StreamSmoother:
    """``smooth_regions`` over a sequence that arrives in pieces.

    A smoothed frame depends on the frames within ``size // 2`` of it per mask (the passes chain), so pieces are
    held back by that many frames: ``push`` returns the frames that are final, and the last push (the one that
    reaches ``n_frames``) returns the rest. The replicate padding is applied at the sequence's ends only.
    """

    def __init__(self, masks: list[Tensor], n_frames: int, *, size: int = 9, sigma: float = 2.0, threads: int = 1):
        self.masks, self.n_frames, self.size, self.sigma, self.threads = masks, n_frames, size, sigma, threads
        self.reach = (size // 2) * len(masks)
        self.buffer: Tensor | None = None  # unsmoothed frames [buffer_start, received)
        self.buffer_start = 0
        self.received = 0
        self.emitted = 0

    def push(self, geometry: Tensor) -> Tensor:
        """(..., n, V, 3) next frames -> (..., m, V, 3) smoothed frames [emitted, emitted + m)."""
        if not self.masks:
            self.received += geometry.shape[-3]
            self.emitted = self.received
            return geometry
        self.buffer = geometry if self.buffer is None else torch.cat([self.buffer, geometry], dim=-3)
        self.received += geometry.shape[-3]
        ready = self.received if self.received >= self.n_frames else self.received - self.reach
        if ready <= self.emitted:
            return geometry[..., :0, :, :]
        lo = max(0, self.emitted - self.reach)
        block = self.buffer[..., lo - self.buffer_start :, :, :]
        smoothed = smooth_regions(block, self.masks, size=self.size, sigma=self.sigma, threads=self.threads)
        out = smoothed[..., self.emitted - lo : ready - lo, :, :]
        self.emitted = ready
        keep = max(0, self.emitted - self.reach)  # the next output needs frames from here on
        self.buffer = self.buffer[..., keep - self.buffer_start :, :, :]
        self.buffer_start = keep
        return out


@dataclass
class StageTimes:
    """Wall seconds per stage, summed over the pieces. A stage timed inside another counts for itself only (the
    sampler asks for audio codes while it runs)."""

    seconds: dict[str, float] = field(default_factory=dict)
    _inner: list[float] = field(default_factory=list)  # time of nested stages, per open stage

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            nested = self._inner.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - nested
            if self._inner:
                self._inner[-1] += elapsed


def animate_speech(model: MeshTalk, speech: Speech, template_mm: np.ndarray, *, plan: LabelPlan,
                   smoothing_masks: list[np.ndarray], times: StageTimes | None = None,
                   decode_frames: int = 300, audio_frontend: str = "utterance", threads: int = 1
                   ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Stream the animation of ``speech``: yields (first frame, S x n x V x 3 float32 mm, S x n x H labels) in
    frame order, holding at most a few pieces of ``decode_frames`` frames (and one batch of label segments).

    With segments (``plan.segment_frames``), the geometry crossfades from one segment to the next over the W
    frames where they overlap (the later segment's warm-up): the earlier segment's frames are held back, the
    warm-up labels are decoded from the decoder state before them, and the two are blended linearly, so that the
    face moves from one chain's state to the other's instead of jumping. The labels saved for those frames are
    the earlier segment's.

    ``audio_frontend``: ``utterance`` (the store's features) or ``reference`` (the release's per-window log-mel,
    ``meshtalk.frontend``; give it ``speech.n_frames`` of ``reference_frame_count``). ``threads``: the audio
    codes', the decoder's and the smoothing's (``speech_codes``, ``DecoderStream``, ``StreamSmoother``); the
    sampler's are ``plan.threads``.
    """
    from meshtalk.frontend import check_frontend, reference_speech_codes

    times = times or StageTimes()
    T = speech.n_frames
    device = next(model.parameters()).device
    C = model.config.classes

    reference = check_frontend(audio_frontend) == "reference"

    def codes(a: int, b: int) -> Tensor:
        with times.stage("audio codes"):
            if reference:
                return reference_speech_codes(model, speech.audio_16k, a, b)
            return speech_codes(model.encoder.audio, speech.audio_16k, a, b, threads=threads).to(device)

    decoder = DecoderStream(model.decoder, torch.from_numpy(template_mm).to(device)[None], threads=threads)

    def rows(labels: Tensor) -> Tensor:
        with times.stage("decode"):
            return decoder.rows(F.one_hot(labels, C).to(torch.float32))  # (S, n, F)

    def vertices(pieces: list[Tensor]) -> list[Tensor]:
        with times.stage("decode"):
            return decoder.vertices(pieces)  # each (S, n, V, 3)

    smoother = StreamSmoother([torch.from_numpy(np.asarray(m)).to(device) for m in smoothing_masks], T, threads=threads)
    queued: list[Tensor] = []  # labels of frames given to the smoother and not yet out of it
    emitted = 0

    def emit(geometry: Tensor, labels: Tensor) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        nonlocal queued, emitted
        with times.stage("smooth"):
            ready = smoother.push(geometry)
        queued.append(labels)
        n = ready.shape[-3]
        if n:
            waiting = torch.cat(queued, dim=1)
            yield emitted, ready.cpu().numpy(), waiting[:, :n].cpu().numpy()
            queued = [waiting[:, n:]]
            emitted += n

    # The last layer runs once per part of a piece, on the part's rows and, with segments, the rows of the frames
    # crossfaded before it and held back after it (a 4 s segment: 20 + 100 + 20 rows in one call, not three).
    held: tuple[Any, Tensor, Tensor] | None = None  # decoder state before the held frames, their geometry, labels
    for piece in _timed(iter_labels(model.context, codes, T, plan), times, "labels"):
        labels = piece.labels  # (S, n, H)
        n = labels.shape[1]
        hold = plan.segment_frames is not None and piece.first + n < T  # a later segment will blend in
        W = model.context.receptive_field if hold else 0
        calls: list[list[tuple[str, Tensor]]] = [[("own", labels[:, a : min(n - W, a + decode_frames)])]
                                                 for a in range(0, n - W, decode_frames)] or [[]]
        tail: tuple[Tensor, Tensor] | None = None  # geometry and labels of the frames to crossfade
        if held is not None and piece.warmup is not None:
            state, tail_geometry, tail_labels = held
            tail, held = (tail_geometry, tail_labels), None
            decoder.state = state  # the warm-up's frames follow the same state as the held ones
            calls[0].insert(0, ("warm", piece.warmup[:, -tail_geometry.shape[1] :]))
        if hold:
            calls[-1].append(("hold", labels[:, n - W :]))
        for call in (c for c in calls if c):
            inputs = []
            for kind, part in call:  # in frame order: the LSTM's state moves on from one to the next
                if kind == "hold":
                    state = decoder.state
                inputs.append(rows(part))
            for (kind, part), geometry in zip(call, vertices(inputs), strict=True):
                if kind == "warm" and tail is not None:
                    ramp = torch.arange(1, part.shape[1] + 1, dtype=geometry.dtype, device=device) / (part.shape[1] + 1)
                    yield from emit(torch.lerp(tail[0], geometry, ramp[:, None, None]), tail[1])
                elif kind == "hold":
                    held = (state, geometry, part)
                else:
                    yield from emit(geometry, part)
    if held is not None:  # not reached: the last segment holds nothing back
        yield from emit(held[1], held[2])


def _timed(pieces: Iterator[LabelPiece], times: StageTimes, stage: str) -> Iterator[LabelPiece]:
    """Iterate, adding the time spent producing each item to ``stage``."""
    while True:
        with times.stage(stage):
            piece = next(pieces, None)
        if piece is None:
            return
        yield piece
