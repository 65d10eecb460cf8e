"""Sampling labels from the context model, frame by frame and head by head.

Two implementations give the same labels for the same noise:
- ``sample_reference`` runs the whole context model over the last receptive field for every (frame, head), in
  the reference's order: readable, and T x H full passes (the release takes 9.9 s for 126 frames at H = 16 on
  2 CPU threads; docs/model.md has this implementation's figures);
- ``sample_fast`` uses the mask structure, in one of two ways:
  - *waves* (any batch): at the current frame head h of a strict layer depends only on the previous layer's heads
    < h, so with the reference's six strict levels label h depends only on labels <= h - 6, and a frame's 16 labels
    come in three waves of six (one head at a time with the first-strict mask). Each wave computes, for every
    layer, the row block of heads that its known inputs make final (one matrix product over the visible columns),
    then chooses its labels at once. The audio terms of all frames are computed at once, the far historic taps in
    blocks of d + 1 frames, the near taps once per frame;
  - *speculative* (one sequence on the CPU, the released model's size): a cheap *draft* of the context model
    (int8 weights, fp32 activations, one ``torch.compile``-d step per frame) proposes the labels of up to 32
    frames; the exact float32 model then scores all of them at once, teacher-forced on the proposals (one matrix
    product per layer for the whole block instead of one per frame: the weights are read once per block), and
    the labels are accepted up to the first one that differs from the exact model's; that one is corrected and
    the block is scored again from there with the exact model's own labels as the next proposal (or drafted
    again if that fails too). A proposal only decides how much work is done, never a label: every label is the
    exact model's for the accepted labels before it, so the result is the same as the waves'.
  Their log-probs differ from the reference's only by float rounding (the sums run in another order), so a label
  can only differ at an exact tie within rounding; the tests find none.

Why speculate: one sequence is bound by reading the weights, about 33 MB of float32 per frame (the masked
triangles, the near taps, the far taps amortised), which does not fit the cache here; the draft reads 12 MB of
int8 per frame and the exact check reads each weight once per block. docs/model.md has the figures.

Noise: uniform draws B x T x H x C, turned into Gumbel noise as in the quantiser. ``draw_sampling_noise`` draws
them the reference's way (one ``torch.rand(B, C)`` per (frame, head), frame-major), so that
``torch.manual_seed(4)`` reproduces the reference's seeded sample.
"""

from __future__ import annotations

import itertools
import logging
import math
import weakref
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from facedata.errors import InputError
from meshtalk.device import torch_threads
from meshtalk.model import LEAKY_SLOPE, ContextModel, gumbel_noise

log = logging.getLogger(__name__)


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


@dataclass
class SamplerStats:
    """What one ``sample_fast`` call did; pass one as ``stats=`` to have it filled in.

    Attributes:
        path: ``"waves"`` or ``"speculative"``.
        drafted_frames: frames proposed by the draft (a frame drafted twice counts twice).
        checked_frames: frames scored by the exact model, likewise.
        checks: exact passes over a block.
        corrections: labels where the proposal differed from the exact model's.
        redrafts: blocks drafted again after a correction.
    """

    path: str = ""
    drafted_frames: int = 0
    checked_frames: int = 0
    checks: int = 0
    corrections: int = 0
    redrafts: int = 0


DRAFTS = ("auto", "compiled", "eager", "none")
SPECULATION_MIN_WEIGHTS = 1_000_000  # "auto" speculates for context models at least this large (released: 17.7 M)
SPECULATION_BLOCK_FRAMES = 32
NARROW_FROM_BATCH = 2  # batches of at least this many sequences take one head per product (see _one_head_per_step)


def sample_fast(context: ContextModel, audio_code: Tensor, *, argmax: bool = False, noise: Tensor | None = None,
                generator: torch.Generator | None = None, noise_scale: float = 1.0, prefix: Tensor | None = None,
                draft: str = "auto", stats: SamplerStats | None = None) -> Sample:
    """The labels of ``sample_reference`` (same arguments) at a fraction of the cost.

    ``prefix`` (B x P x H labels, P <= T) gives the labels of the first P frames instead of sampling them (their
    noise, drawn or given, is not used): with the last ``context.receptive_field`` labels of a sequence and their
    audio codes in front, the next frames are sampled as if the whole sequence had been sampled at once, so that
    long audio can be sampled in chunks.

    ``draft`` chooses how (the labels are the same whichever, see the module docstring): ``"none"`` samples in
    waves; ``"compiled"`` speculates with a ``torch.compile``-d int8 draft (one sequence at a time, the batch in
    turn), falling back to ``"eager"`` if compiling fails; ``"eager"`` speculates with the same draft run eagerly
    (slow for large models: for tests and machines without a compiler); ``"auto"`` is ``"compiled"`` for one
    float32 sequence on the CPU of a context model of at least ``SPECULATION_MIN_WEIGHTS`` weights and more than
    two blocks of frames, where it pays, and ``"none"`` otherwise. The first compiled call of a process costs a
    few seconds (tens of seconds the first time on a machine, before torch's compile cache holds it).

    Raises:
        InputError: ``noise``, ``prefix`` or ``draft`` not as described.
    """
    B, T, _ = audio_code.shape
    H, C = context.heads, context.classes
    given = 0 if prefix is None else prefix.shape[1]
    if prefix is not None and (prefix.dim() != 3 or prefix.shape[0] != B or prefix.shape[2] != H or given > T):
        raise InputError("prefix", "wrong shape", expected=f"({B}, <= {T}, {H})", actual=tuple(prefix.shape))
    if draft not in DRAFTS:
        raise InputError("draft", "unknown draft", expected=" or ".join(DRAFTS), actual=repr(draft))
    gumbel = _gumbel(audio_code, H, C, argmax=argmax, noise=noise, generator=generator, noise_scale=noise_scale)
    labels = torch.zeros(B, T, H, dtype=torch.long, device=audio_code.device)
    if prefix is not None:
        labels[:, :given] = prefix.to(device=audio_code.device, dtype=torch.long)
    stats = stats if stats is not None else SamplerStats()
    prepared = _prepare(context)
    if draft == "auto":
        worth = (audio_code.device.type == "cpu" and audio_code.dtype == torch.float32 and B == 1
                 and T - given > 2 * SPECULATION_BLOCK_FRAMES and prepared.n_weights >= SPECULATION_MIN_WEIGHTS)
        draft = "compiled" if worth else "none"
    if audio_code.device.type != "cpu":  # the draft's bookkeeping is on the CPU; waves run anywhere
        draft = "none"
    drafter = None if draft == "none" else prepared.drafter(compiled=draft == "compiled")
    # One intra-op thread for the sequential steps: their products are small, and on shared cores a second thread
    # made them 3 to 30 times slower (docs/model.md); the exact checks of the speculative path are large products.
    with torch.no_grad(), torch_threads(1):
        if drafter is None:
            stats.path = "waves"
            _sample_waves(context, prepared, audio_code, gumbel, labels, given)
        else:
            stats.path = "speculative"
            for b in range(B):  # the draft proposes for one sequence
                _sample_speculative(context, prepared, drafter, audio_code[b], None if gumbel is None else gumbel[b],
                                    labels[b], given, stats)
    one_hot = F.one_hot(labels, C).to(audio_code.dtype)  # (B, T, H, C)
    return Sample(labels=labels, one_hot=one_hot)


@dataclass(frozen=True)
class _Step:
    """One matrix product of a wave: output heads [lo, hi) of ``level`` (context layers 0 .. L - 1, then the
    logits as level L) from the first ``cols`` channels of the level's input."""

    level: int
    lo: int
    hi: int
    cols: int


@dataclass(frozen=True)
class _Wave:
    steps: tuple[_Step, ...]
    first: int  # labels [first, stop) are chosen at the end of the wave
    stop: int


def wave_schedule(context: ContextModel) -> tuple[list[_Wave], list[_Step]]:
    """The waves of one frame, and the steps after the last one that complete the frame's activations.

    Labels < a make the embedding of heads <= a final (it is strict); a strict level's head j needs its input's
    heads < j, an inclusive one's heads <= j. So each level's final heads follow from the level below, and the
    logits' final heads are the labels the wave can choose. Strict (the reference): waves of 6 heads.
    """
    H = context.heads
    levels = [*context.layers, context.logits]
    done = [0] * len(levels)
    waves, first = [], 0
    while first < H:
        visible = min(H, first + 1)  # final embedding heads
        steps = []
        for level, layer in enumerate(levels):
            ready = min(H, visible + (0 if layer.inclusive else 1))
            if ready > done[level]:
                cols = (ready if layer.inclusive else ready - 1) * layer.in_per_head
                steps.append(_Step(level, done[level], ready, cols))
                done[level] = ready
            visible = done[level]
        waves.append(_Wave(tuple(steps), first, done[-1]))
        first = done[-1]
    finish = [_Step(level, done[level], H, (H if levels[level].inclusive else H - 1) * levels[level].in_per_head)
              for level in range(len(levels) - 1) if done[level] < H]
    return waves, finish


def _one_head_per_step(context: ContextModel, steps: tuple[_Step, ...] | list[_Step]) -> tuple[_Step, ...]:
    """The same steps a head at a time, each over exactly the columns its head sees: more products, but none of
    the zero blocks inside a wave's block (29 % of its weights for the reference), which pays once several
    sequences make the products compute-bound."""
    levels = [*context.layers, context.logits]
    return tuple(_Step(s.level, h, h + 1, (h + 1 if levels[s.level].inclusive else h) * levels[s.level].in_per_head)
                 for s in steps for h in range(s.lo, s.hi))


class _Prepared:
    """The context model's weights laid out for sampling (float32, the masks applied), kept per model while its
    parameters are unchanged."""

    def __init__(self, context: ContextModel, key: tuple):
        self.key = key
        self.waves, self.finish = wave_schedule(context)
        self.narrow_waves = [_Wave(_one_head_per_step(context, wave.steps), wave.first, wave.stop)
                             for wave in self.waves]
        self.narrow_finish = list(_one_head_per_step(context, self.finish))
        layers = list(context.layers)
        H, C = context.heads, context.classes
        HK = H * context.embedding.out_per_head
        with torch.no_grad():
            # (in, out) per level, masked: the exact products, and the blocks of the waves as views of them.
            self.masked_t = [(m.masked.weight * m.mask).t().contiguous() for m in (*layers, context.logits)]
            self.near_t = torch.stack([m.history.weight[:, HK:].t() for m in layers])  # (L, HK, HK)
            self.far_t = [m.history.weight[:, :HK].t() for m in layers]  # views (HK, HK)
            emb = context.embedding
            self.emb_rows = (emb.masked.weight * emb.mask).t().contiguous()  # (H*C, HK): class columns as rows
            self.emb_bias = emb.masked.bias.detach()
            self.logit_bias = context.logits.masked.bias.detach()
        self.class_offset = torch.arange(H, device=self.emb_rows.device) * C  # (H,): row of class 0 of head h
        # Contiguous copies of the wave blocks: strided views of the whole matrix were 20 % slower for 8 sequences.
        # The exact check's masked products in row groups of heads, each over the columns its heads may see: a
        # quarter of the heads per group skips 3/8 of the zero blocks.
        self.check_steps = []
        for level, m in enumerate((*layers, context.logits)):
            bounds = [round(g * H / 4) for g in range(5)]
            self.check_steps.append([_Step(level, lo, hi, (hi if m.inclusive else hi - 1) * m.in_per_head)
                                     for lo, hi in itertools.pairwise(bounds) if hi > lo])
        steps = [step for waves in (self.waves, self.narrow_waves) for wave in waves for step in wave.steps]
        steps += self.finish + self.narrow_finish
        steps += [step for level in self.check_steps for step in level]
        self._blocks = {step: self._view(step).contiguous() for step in steps}
        self.n_weights = sum(p.numel() for p in context.parameters())
        self._context = weakref.ref(context)
        self._drafters: dict[bool, _Drafter | None] = {}

    def block(self, step: _Step) -> Tensor:
        """The masked weights of a step, (cols, rows)."""
        return self._blocks[step]

    def _view(self, step: _Step) -> Tensor:
        weight = self.masked_t[step.level]
        per_head = weight.shape[1] // len(self.class_offset)
        return weight[: step.cols, step.lo * per_head : step.hi * per_head]

    def drafter(self, *, compiled: bool) -> _Drafter:
        if compiled not in self._drafters:
            context = self._context()
            assert context is not None  # the model owns this layout
            drafter = _Drafter(context, self, compiled=compiled)
            self._drafters[compiled] = drafter if drafter.ok else self.drafter(compiled=False)
        return self._drafters[compiled]


_PREPARED: weakref.WeakKeyDictionary[ContextModel, _Prepared] = weakref.WeakKeyDictionary()


def _prepare(context: ContextModel) -> _Prepared:
    """The sampling layout of ``context``'s weights, rebuilt when a parameter changed (in-place updates raise a
    tensor's version) or moved."""
    key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in context.parameters())
    prepared = _PREPARED.get(context)
    if prepared is None or prepared.key != key:
        prepared = _PREPARED[context] = _Prepared(context, key)
    return prepared


def _sample_waves(context: ContextModel, w: _Prepared, audio_code: Tensor, gumbel: Tensor | None, labels: Tensor,
                  given: int) -> None:
    """Fill ``labels`` (B x T x H; frames < given hold the prefix) in waves, all sequences at once."""
    B, T, _ = audio_code.shape
    H, C = context.heads, context.classes
    layers = list(context.layers)
    L = len(layers)
    K = context.embedding.out_per_head
    HK = H * K
    if gumbel is not None:
        gumbel = gumbel.transpose(0, 1).contiguous()  # (T, B, H, C): gumbel[t] is contiguous
    chosen_labels = labels.transpose(0, 1)  # (T, B, H) view
    ins = audio_code.new_zeros(L + 1, B, HK)  # the current frame: ins[0] embedding, ins[i + 1] output of layer i
    z = audio_code.new_zeros(B, H * C)  # the current frame's logits
    # Terms of each layer that do not depend on the current frame: biases, audio and (added ahead) the far tap.
    pending = torch.stack([(m.masked.bias + m.history.bias + m.audio(audio_code)).transpose(0, 1)
                           for m in layers]).contiguous()  # (L, T, B, HK)
    past = audio_code.new_zeros(L, T, B, HK)  # inputs of each layer at every frame

    def views(step: _Step) -> tuple[Tensor, Tensor, Tensor, bool]:
        """(output rows, visible inputs, weight block, activation?) of a step."""
        if step.level < L:
            out, source = ins[step.level + 1][:, step.lo * K : step.hi * K], ins[step.level]
        else:
            out, source = z[:, step.lo * C : step.hi * C], ins[L]
        return out, source[:, : step.cols], w.block(step), step.level < L

    wide = B < NARROW_FROM_BATCH  # one sequence is bound by the number of steps, several by their arithmetic
    waves = [([views(s) for s in wave.steps], wave.first, wave.stop) for wave in (w.waves if wide else w.narrow_waves)]
    finish = [views(s) for s in (w.finish if wide else w.narrow_finish)]
    for t in range(T):
        for i, layer in enumerate(layers):
            d = layer.dilation
            if t % (d + 1) == 0:  # far taps of frames t .. t + d, whose inputs t - 1 - d .. t - 1 are known
                lo, hi = max(t, d + 1), min(t + d, T - 1)
                if lo <= hi:
                    pending[i, lo : hi + 1].view(-1, HK).addmm_(past[i, lo - 1 - d : hi - d].view(-1, HK), w.far_t[i])
        ins[1:].copy_(pending[:, t])
        if t >= 1:
            ins[1:].baddbmm_(past[:, t - 1], w.near_t)
        ins[0].copy_(w.emb_bias)
        z.copy_(w.logit_bias)
        for steps, a, b in waves:
            _run_steps(steps)
            if t < given:
                chosen = chosen_labels[t, :, a:b]
            else:
                scores = F.log_softmax(z[:, a * C : b * C].view(B, b - a, C), dim=-1)
                if gumbel is not None:
                    scores = scores + gumbel[t, :, a:b]
                chosen = scores.argmax(dim=-1)  # (B, n)
                chosen_labels[t, :, a:b] = chosen
            # A chosen label adds its class's embedding column to the heads above it.
            ins[0].add_(F.embedding_bag(chosen + w.class_offset[a:b], w.emb_rows, mode="sum"))
        _run_steps(finish)
        past[:, t].copy_(ins[:L])


def _run_steps(steps: list[tuple[Tensor, Tensor, Tensor, bool]]) -> None:
    for out, x, weight, activation in steps:
        if x.shape[1]:
            out.addmm_(x, weight)
        if activation:
            F.leaky_relu_(out, LEAKY_SLOPE)


def _sample_speculative(context: ContextModel, w: _Prepared, drafter: _Drafter, audio_code: Tensor,
                        gumbel: Tensor | None, labels: Tensor, given: int, stats: SamplerStats) -> None:
    """Fill ``labels`` (T x H; frames < given hold the prefix) of one sequence: the draft proposes a block, the
    exact model scores it teacher-forced, labels are accepted up to the first difference (which takes the exact
    label), and the rest of the block is scored again with the exact labels as the proposal, or drafted again
    when that differs too. audio_code T x audio_dim, gumbel T x H x C or None."""
    T = audio_code.shape[0]
    H, C = context.heads, context.classes
    layers = list(context.layers)
    L = len(layers)
    HK = H * context.embedding.out_per_head
    dilations = torch.tensor([m.dilation for m in layers])
    P = 1 + int(dilations.max())  # zero frames in front of the past: the taps before the start read zeros
    noise = audio_code.new_zeros(T, H, C) if gumbel is None else gumbel.contiguous()  # (T, H, C)
    base = torch.stack([m.masked.bias + m.history.bias + m.audio(audio_code) for m in layers], dim=1).contiguous()
    past = audio_code.new_zeros(P + T, L, HK)  # inputs of each layer: exact up to the accepted frames
    flat = past.view(-1, HK)
    far_rows = (P - 1 - dilations) * L + torch.arange(L)  # rows of ``flat`` holding frame 0's far-tap inputs
    no_force = torch.zeros(H, dtype=torch.bool)
    heads = torch.arange(H)

    def propose(t0: int, t1: int, forced: int) -> None:
        """Draft frames [t0, t1); frame t0's heads < forced keep their labels."""
        stats.drafted_frames += t1 - t0
        for t in range(t0, t1):
            keep = heads < forced if t == t0 and forced else no_force
            chosen, inputs = drafter.step(base[t], past[P + t - 1], flat.index_select(0, far_rows + t * L), noise[t],
                                          labels[t], keep)
            labels[t] = chosen
            past[P + t] = inputs

    def score(t0: int, t1: int) -> Tensor:
        """The exact model's labels of frames [t0, t1) given ``labels`` before each (n, H); writes the exact
        layer inputs of these frames into ``past``."""
        stats.checks += 1
        stats.checked_frames += t1 - t0
        n = t1 - t0
        x = F.embedding_bag(labels[t0:t1] + w.class_offset, w.emb_rows, mode="sum").add_(w.emb_bias)  # (n, HK)
        for i, layer in enumerate(layers):
            d = layer.dilation
            past[P + t0 : P + t1, i] = x
            y = torch.addmm(base[t0:t1, i], past[P + t0 - 1 - d : P + t1 - 1 - d, i], w.far_t[i])
            y.addmm_(past[P + t0 - 1 : P + t1 - 1, i], w.near_t[i])
            x = F.leaky_relu_(masked(y, x, i), LEAKY_SLOPE)  # (n, HK)
        z = masked(w.logit_bias.expand(n, -1).clone(), x, L)
        scores = F.log_softmax(z.view(n, H, C), dim=-1)
        if gumbel is not None:
            scores = scores + gumbel[t0:t1]
        return scores.argmax(dim=-1)  # (n, H)

    def masked(y: Tensor, x: Tensor, level: int) -> Tensor:
        """y (n, out) += the masked product of x (n, in) at ``level``, skipping blocks of zeros."""
        per_head = y.shape[1] // H
        for step in w.check_steps[level]:
            if step.cols:
                y[:, step.lo * per_head : step.hi * per_head].addmm_(x[:, : step.cols], w.block(step))
        return y

    if given:
        score(0, given)  # the exact inputs of the given frames
    accepted, total = given * H, T * H  # labels (frame-major) known to be the exact model's
    while accepted < total:
        t1 = min(T, accepted // H + SPECULATION_BLOCK_FRAMES)
        propose(accepted // H, t1, accepted % H)
        retried = False
        while accepted < t1 * H:
            t0 = accepted // H
            exact = score(t0, t1).view(-1)
            differ = exact != labels[t0:t1].view(-1)
            differ[: accepted - t0 * H] = False
            if not bool(differ.any()):
                accepted = t1 * H
                break
            bad = int(differ.to(torch.uint8).argmax())  # the first difference
            stats.corrections += 1
            accepted = t0 * H + bad + 1
            if not retried:  # the exact labels after it, computed from one wrong label, are the next proposal
                labels[t0:t1].view(-1)[bad:] = exact[bad:]
                retried = True
            else:
                labels.view(-1)[accepted - 1] = exact[bad]
                if accepted < t1 * H:
                    stats.redrafts += 1
                    propose(accepted // H, t1, accepted % H)
                retried = False


def _quantize_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per row (output channel): (..., rows, cols) -> int8 values and float32 scales (..., rows)."""
    scale = (weight.abs().amax(dim=-1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    return (weight / scale[..., None]).round_().clamp_(-127, 127).to(torch.int8).contiguous(), scale.float()


def _gemv_int8(q: Tensor, scale: Tensor, x: Tensor) -> Tensor:
    """(..., rows, cols) int8 weights times (..., cols) float32 -> (..., rows) float32. Compiled, this is one
    loop that reads each int8 weight once and accumulates in float32."""
    return (q.to(torch.float32) * x.unsqueeze(-2)).sum(-1) * scale


class _Drafter:
    """The draft of one frame: the waves' computation with int8 weights (per-row scales) and float32
    activations, one function of plain tensors, ``torch.compile``-d when asked.

    ``step(pending (L, HK), previous inputs (L, HK), far-tap inputs (L, HK), noise (H, C), labels (H,),
    keep (H,) bool)`` -> (labels (H,), this frame's layer inputs (L, HK)); labels where ``keep`` are kept."""

    def __init__(self, context: ContextModel, w: _Prepared, *, compiled: bool):
        self.compiled, self.ok = compiled, True
        self.weights: list[Tensor] = []
        L, H, C = len(context.layers), context.heads, context.classes
        K = context.embedding.out_per_head
        HK = H * K
        pairs: list[tuple[Tensor, Tensor]] = []  # int8 values and scales, packed below

        def add(pair: tuple[Tensor, Tensor]) -> int:
            pairs.append(pair)
            return len(pairs) - 1

        with torch.no_grad():
            plan = [([(s, add(_quantize_rows(w.block(s).t())) if s.cols else None) for s in wave.steps],
                     wave.first, wave.stop) for wave in w.waves]
            finish = [(s, add(_quantize_rows(w.block(s).t())) if s.cols else None) for s in w.finish]
            near = add(_quantize_rows(w.near_t.transpose(1, 2)))  # (L, HK, HK) rows = outputs
            far = add(_quantize_rows(torch.stack([f.t() for f in w.far_t])))
            # Two flat tensors instead of ~50: the compiled function checks its arguments on every call.
            places, q_at, s_at = [], 0, 0
            for q, scale in pairs:
                places.append((q_at, tuple(q.shape), s_at, scale.numel()))
                q_at, s_at = q_at + q.numel(), s_at + scale.numel()
            self.weights = [torch.cat([q.flatten() for q, _ in pairs]), torch.cat([sc.flatten() for _, sc in pairs]),
                            w.emb_rows, w.emb_bias, w.logit_bias, w.class_offset]

        def gemv(weights: list[Tensor], index: int, x: Tensor) -> Tensor:
            q_at, shape, s_at, n = places[index]
            q = weights[0][q_at : q_at + math.prod(shape)].view(shape)
            return _gemv_int8(q, weights[1][s_at : s_at + n].view(shape[:-1]), x)

        def frame(weights: list[Tensor], pending: Tensor, previous: Tensor, far_inputs: Tensor, noise: Tensor,
                  given: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
            emb_rows, emb, logit_bias, offset = weights[2:]
            start = pending + gemv(weights, near, previous) + gemv(weights, far, far_inputs)  # (L, HK)
            outputs: list[list[Tensor]] = [[] for _ in range(L + 1)]  # computed head blocks per level

            def run(step: _Step, index: int | None) -> Tensor:
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
        if compiled:
            self._fn = torch.compile(frame, dynamic=False, fullgraph=True)
            try:  # compiling happens on the first call: fail here, not in the middle of a sequence
                zeros = torch.zeros(L, HK)
                with torch.no_grad():
                    self._fn(self.weights, zeros, zeros, zeros, torch.zeros(H, C), torch.zeros(H, dtype=torch.long),
                             torch.zeros(H, dtype=torch.bool))
            except Exception as error:  # any compiler failure: the eager draft gives the same labels
                log.warning("torch.compile of the sampler's draft failed (%s); drafting eagerly", error)
                self.ok = False

    def step(self, pending: Tensor, previous: Tensor, far_inputs: Tensor, noise: Tensor, given: Tensor,
             keep: Tensor) -> tuple[Tensor, Tensor]:
        return self._fn(self.weights, pending, previous, far_inputs, noise, given, keep)


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
    return noise_scale * gumbel_noise(noise.to(device=audio_code.device, dtype=audio_code.dtype))
