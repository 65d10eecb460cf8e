"""The speculative path's draft: the waves' computation of one frame with int8 weights (a scale per output
channel) and float32 activations, as one compiled loop (``LoopDrafter``, numba) or in torch's operations
(``Drafter``: the tests' reference, and the fallback where compiling fails). It proposes labels; the exact model
decides them (``meshtalk.sampling.speculative``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from meshtalk.device import on_huge_pages
from meshtalk.model import LEAKY_SLOPE, ContextModel
from meshtalk.sampling.kernels import DRAFT_TABLE_COLUMNS, DRAFT_WAVE_COLUMNS, add_int8_rows, draft_frame
from meshtalk.sampling.schedule import Step

log = logging.getLogger(__name__)


def _quantize_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per row (output channel): (..., rows, cols) -> int8 values and float32 scales (..., rows)."""
    scale = (weight.abs().amax(dim=-1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    return (weight / scale[..., None]).round_().clamp_(-127, 127).to(torch.int8).contiguous(), scale.float()


def _gemv_int8(q: Tensor, scale: Tensor, x: Tensor) -> Tensor:
    """(..., rows, cols) int8 weights times (..., cols) float32 -> (..., rows) float32, accumulated in float32."""
    return (q.to(torch.float32) * x.unsqueeze(-2)).sum(-1) * scale


class Drafter:
    """The draft of one frame in torch's operations: the waves' computation with int8 weights (per-row scales)
    and float32 activations, one function of plain tensors.

    ``add_far(layer, inputs (n, HK), out (n, HK))`` adds the far taps of ``layer`` of n frames (their inputs
    d + 1 frames before each) to ``out``; ``step(start (L, HK): biases, audio terms and far taps, previous inputs
    (L, HK), noise (H, C), labels (H,), keep (H,) bool)`` -> (labels (H,), this frame's layer inputs (L, HK));
    labels where ``keep`` are kept. The far taps are apart so that a caller can take them for d + 1 frames at
    once, reading their weights once (the inputs of frames t .. t + d are known at frame t).

    ``w`` is the context model's ``meshtalk.sampling.layout.WeightLayout``, whose blocks are quantised; the layout
    makes and keeps its drafters, so this module does not import it."""

    def __init__(self, context: ContextModel, w: Any):
        self.ok = True
        self.weights: list[Tensor] = []
        L, C = len(context.layers), context.classes
        K = context.embedding.out_per_head
        pairs: list[tuple[Tensor, Tensor]] = []  # int8 values and scales, packed below

        def add(pair: tuple[Tensor, Tensor]) -> int:
            pairs.append(pair)
            return len(pairs) - 1

        with torch.no_grad():
            plan = [([(s, add(_quantize_rows(w.block(s).t())) if s.cols else None) for s in wave.steps],
                     wave.first, wave.stop) for wave in w.waves]
            finish = [(s, add(_quantize_rows(w.block(s).t())) if s.cols else None) for s in w.finish]
            near = add(_quantize_rows(w.near_t.transpose(1, 2)))  # (L, HK, HK) rows = outputs
            self._far = add(_quantize_rows(torch.stack([f.t() for f in w.far_t])))  # (L, HK, HK) rows = outputs
            # Two flat tensors instead of ~50.
            places, q_at, s_at = [], 0, 0
            for q, scale in pairs:
                places.append((q_at, tuple(q.shape), s_at, scale.numel()))
                q_at, s_at = q_at + q.numel(), s_at + scale.numel()
            self._places = places
            # The int8 values on 2 MB pages: the draft reads all of them for every frame it proposes.
            self.weights = [*on_huge_pages([torch.cat([q.flatten() for q, _ in pairs]),
                                            torch.cat([sc.flatten() for _, sc in pairs])]),
                            w.emb_rows, w.emb_bias, w.logit_bias, w.class_offset]

        def gemv(weights: list[Tensor], index: int, x: Tensor) -> Tensor:
            q_at, shape, s_at, n = places[index]
            q = weights[0][q_at : q_at + math.prod(shape)].view(shape)
            return _gemv_int8(q, weights[1][s_at : s_at + n].view(shape[:-1]), x)

        def frame(weights: list[Tensor], start: Tensor, previous: Tensor, noise: Tensor, given: Tensor,
                  keep: Tensor) -> tuple[Tensor, Tensor]:
            emb_rows, emb, logit_bias, offset = weights[2:]
            start = start + gemv(weights, near, previous)  # (L, HK)
            outputs: list[list[Tensor]] = [[] for _ in range(L + 1)]  # computed head blocks per level

            def run(step: Step, index: int | None) -> Tensor:
                y = start[step.level, step.lo * K : step.hi * K] if step.level < L else \
                    logit_bias[step.lo * C : step.hi * C]
                if index is not None:
                    source = emb if step.level == 0 else torch.cat(outputs[step.level - 1])
                    y = y + gemv(weights, index, source[: step.cols])
                return F.leaky_relu(y, LEAKY_SLOPE) if step.level < L else y

            chosen = []
            for steps, a, b in plan:
                for step, index in steps:
                    outputs[step.level].append(run(step, index))
                scores = outputs[L][-1].view(b - a, C) + noise[a:b]  # the wave's logits are the last block
                pick = torch.where(keep[a:b], given[a:b], scores.argmax(dim=-1))
                chosen.append(pick)
                emb = emb + emb_rows[pick + offset[a:b]].sum(0)
            for step, index in finish:
                outputs[step.level].append(run(step, index))
            inputs = torch.stack([emb, *(torch.cat(outputs[i]) for i in range(L - 1))])  # (L, HK)
            return torch.cat(chosen), inputs

        self._fn: Any = frame

    def add_far(self, layer: int, inputs: Tensor, out: Tensor) -> None:
        q_at, shape, s_at, n = self._places[self._far]
        q = self.weights[0][q_at : q_at + math.prod(shape)].view(shape)[layer]  # (HK, HK) rows = outputs
        out += (inputs @ q.to(torch.float32).t()) * self.weights[1][s_at : s_at + n].view(shape[:-1])[layer]

    def step(self, start: Tensor, previous: Tensor, noise: Tensor, given: Tensor, keep: Tensor
             ) -> tuple[Tensor, Tensor]:
        return self._fn(self.weights, start, previous, noise, given, keep)


class LoopDrafter:
    """``Drafter``'s frame as one compiled loop (``meshtalk.sampling.kernels.draft_frame``, numba): one head per
    product (no zero blocks), 11.3 MB of int8 for the released model, of which a frame reads 8.5 MB when its caller
    takes the far taps for d + 1 frames at once; 0.85 ms a frame with the far taps in it against 1.15-1.47 ms for
    ``torch.compile`` of ``Drafter`` (measured in one process), and no compilation of seconds on a process's first
    sequence (numba keeps its compiled code on disk). ``add_far`` and ``step`` as
    ``Drafter``'s; they keep no state between calls, so threads may draft with one drafter at once."""

    def __init__(self, context: ContextModel, w: Any):
        self.ok = True
        L, H, C = len(context.layers), context.heads, context.classes
        HK = H * context.embedding.out_per_head
        with torch.no_grad():
            def columns(m: Tensor) -> tuple[Tensor, Tensor]:  # (cols, width) -> int8 (cols, width), scales (width,)
                if m.shape[0] == 0:  # a head that sees no input here
                    return m.to(torch.int8), m.new_ones(m.shape[1])
                q, scale = _quantize_rows(m.t())
                return q.t().contiguous(), scale

            rows, waves, blocks, scales = [], [], [], []
            q_at = s_at = 0
            for steps, first, stop in [*((wave.steps, wave.first, wave.stop) for wave in w.narrow_waves),
                                       (w.narrow_finish, 0, 0)]:
                waves.append((len(rows), len(rows) + len(steps), first, stop))
                for step in steps:
                    q, scale = columns(w.block(step))
                    width = q.shape[1]
                    rows.append((step.level, step.lo * width // (step.hi - step.lo), width, step.cols, q_at, s_at))
                    blocks.append(q.reshape(-1))
                    scales.append(scale)
                    q_at, s_at = q_at + q.numel(), s_at + scale.numel()
            taps = [columns(tap) for layer in range(L) for tap in (w.near_t[layer], w.far[layer])]
            packed = on_huge_pages([torch.cat(blocks), torch.cat([q.reshape(-1) for q, _ in taps])])
        self.weights = [*packed, torch.cat(scales), torch.cat([scale for _, scale in taps])]
        self._q, self._taps_q = packed[0].numpy(), packed[1].numpy()
        self._s, self._taps_s = self.weights[2].numpy(), self.weights[3].numpy()
        self._table = np.array(rows, dtype=np.int64).reshape(-1, DRAFT_TABLE_COLUMNS)
        self._waves = np.array(waves, dtype=np.int64).reshape(-1, DRAFT_WAVE_COLUMNS)
        self._fixed = (w.emb_rows.numpy(), w.emb_bias.numpy(), w.logit_bias.numpy(), LEAKY_SLOPE)
        self._HK = HK
        try:  # compiling (or loading from numba's cache) happens on the first call: fail here, not mid-sequence
            zeros = torch.zeros(L, HK)
            self.add_far(0, zeros[:1], zeros[:1])
            self.step(zeros, zeros, torch.zeros(H, C), torch.zeros(H, dtype=torch.long),
                      torch.zeros(H, dtype=torch.bool))
        except Exception as error:  # any compiler failure: the eager draft gives the same labels
            log.warning("compiling the sampler's draft failed (%s); drafting eagerly", error)
            self.ok = False

    def add_far(self, layer: int, inputs: Tensor, out: Tensor) -> None:
        block = 2 * layer + 1  # the taps are near, far of each layer in turn
        add_int8_rows(out.numpy(), inputs.numpy(), self._taps_q, block * self._HK * self._HK, self._taps_s,
                      block * self._HK)

    def step(self, start: Tensor, previous: Tensor, noise: Tensor, given: Tensor, keep: Tensor
             ) -> tuple[Tensor, Tensor]:
        labels, inputs = torch.empty(given.shape, dtype=torch.long), torch.empty(start.shape)
        draft_frame(start.numpy(), previous.numpy(), noise.numpy(), given.numpy(), keep.numpy(), labels.numpy(),
                    inputs.numpy(), self._taps_q, self._taps_s, self._q, self._s, self._table, self._waves,
                    *self._fixed)
        return labels, inputs
