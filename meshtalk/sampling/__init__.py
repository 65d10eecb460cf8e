"""Sampling labels from the context model, frame by frame and head by head.

Two implementations give the same labels for the same noise:
- ``sample_reference`` (``loop``) runs the whole context model over the last receptive field for every (frame,
  head), in the reference's order: readable, and T x H full passes;
- ``sample_fast`` (``fast``) uses the mask structure, in one of two ways:
  - *waves* (``waves``, any batch): at the current frame head h of a strict layer depends only on the previous
    layer's heads < h, so with the reference's six strict levels label h depends only on labels <= h - 6, and a
    frame's 16 labels come in three waves of six (one head at a time with the first-strict mask; ``schedule``).
    Each wave computes, for every layer, the row block of heads that its known inputs make final (one matrix
    product over the visible columns), then chooses its labels at once. The audio terms of all frames are computed
    at once, the far historic taps in blocks of d + 1 frames, the near taps once per frame;
  - *speculative* (``speculative``, one sequence on the CPU, the released model's size): a cheap *draft* of the
    context model (``draft``: int8 weights, fp32 activations, one compiled loop per frame) proposes the
    labels of up to 32 frames; the exact float32 model then scores all of them at once, teacher-forced on the
    proposals (one matrix product per layer for the whole block instead of one per frame: the weights are read once
    per block), and the labels are accepted up to the first one that differs from the exact model's; that one is
    corrected and the block is scored again from there with the exact model's own labels as the next proposal (or
    drafted again if that fails too). A proposal only decides how much work is done, never a label: every label is
    the exact model's for the accepted labels before it, so the result is the same as the waves'.
  Their log-probs differ from the reference's only by float rounding (the sums run in another order), so a label
  can only differ at an exact tie within rounding; the tests find none.

Why speculate: one sequence is bound by reading the weights, about 33 MB of float32 per frame (the masked
triangles, the near taps, the far taps amortised), which does not fit the cache here; the draft reads 12 MB of
int8 per frame and the exact check reads each weight once per block. docs/model.md has the figures.

The weights both fast paths read are laid out once per model (``layout``: the masked float32 blocks, and the
drafts). On the CPU the waves' products run as compiled loops (``kernels``, numba), which read each weight row once
for all sequences of the batch. Noise (``noise``): uniform draws B x T x H x C, turned into Gumbel noise as in the
quantiser.
``draw_sampling_noise`` draws them the reference's way (one ``torch.rand(B, C)`` per (frame, head), frame-major),
so that ``torch.manual_seed(4)`` reproduces the reference's seeded sample.

The package's door is ``sample`` (either sampler by name) with ``sample_fast`` and ``sample_reference``; the
rooms: ``fast > loop | waves | speculative > layout > draft > schedule | noise | kernels``.
"""

from meshtalk.device import torch_threads
from meshtalk.sampling.fast import DRAFTS, SAMPLERS, SPECULATION_MIN_WEIGHTS, sample, sample_fast
from meshtalk.sampling.kernels import warm_up as compile_kernels
from meshtalk.sampling.layout import PREPARED, WeightLayout, prepare
from meshtalk.sampling.loop import sample_reference
from meshtalk.sampling.noise import Sample, draw_sampling_noise
from meshtalk.sampling.schedule import wave_schedule
from meshtalk.sampling.speculative import SPECULATION_BLOCK_FRAMES, SamplerStats
from meshtalk.sampling.waves import NARROW_FROM_BATCH

# The names the tests knew when this was one module.
_PREPARED, _prepare = PREPARED, prepare

__all__ = [
    "DRAFTS", "NARROW_FROM_BATCH", "PREPARED", "SAMPLERS", "SPECULATION_BLOCK_FRAMES", "SPECULATION_MIN_WEIGHTS",
    "Sample", "SamplerStats", "WeightLayout", "compile_kernels", "draw_sampling_noise", "prepare", "sample",
    "sample_fast", "sample_reference", "torch_threads", "wave_schedule",
]
