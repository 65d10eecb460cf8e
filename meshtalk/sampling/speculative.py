"""The speculative path, for one sequence: the draft (``meshtalk.sampling.draft``) proposes the labels of up to 32
frames; the exact float32 model scores all of them at once, teacher-forced on the proposals (one matrix product per
layer for the whole block instead of one per frame: the weights are read once per block), and the labels are
accepted up to the first one that differs from the exact model's; that one is corrected and the block is scored
again from there with the exact model's own labels as the next proposal (or drafted again if that fails too). A
proposal only decides how much work is done, never a label.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from meshtalk.model import LEAKY_SLOPE, ContextModel
from meshtalk.sampling.draft import Drafter
from meshtalk.sampling.layout import WeightLayout


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


SPECULATION_BLOCK_FRAMES = 32
DRAFT_AHEAD = True  # draft the next block on a second thread while this one is checked (docs/model.md)


def sample_speculative(context: ContextModel, w: WeightLayout, drafter: Drafter, audio_code: Tensor,
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
    drafted = past.clone()  # the draft's: exact up to the last block checked, then its own
    no_force = torch.zeros(H, dtype=torch.bool)
    heads = torch.arange(H)

    def propose(t0: int, t1: int, forced: int) -> None:
        """Draft frames [t0, t1); frame t0's heads < forced keep their labels."""
        stats.drafted_frames += t1 - t0
        start = base[t0:t1].clone()  # (n, L, HK): biases and audio terms, and the far taps added ahead
        for t in range(t0, t1):
            for i, layer in enumerate(layers):
                d = layer.dilation
                if (t - t0) % (d + 1) == 0:  # far taps of frames t .. t + d, whose inputs t - 1 - d .. t - 1 are known
                    stop = min(t + d + 1, t1)
                    drafter.add_far(i, drafted[P + t - 1 - d : P + stop - 1 - d, i], start[t - t0 : stop - t0, i])
            keep = heads < forced if t == t0 and forced else no_force
            chosen, inputs = drafter.step(start[t - t0], drafted[P + t - 1], noise[t], labels[t], keep)
            labels[t] = chosen
            drafted[P + t] = inputs

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
        drafted[: P + given] = past[: P + given]
    accepted, total = given * H, T * H  # labels (frame-major) known to be the exact model's
    # The next block is drafted on another thread while the exact model checks this one (both release the
    # interpreter while they compute), from the draft's own inputs for this block. Its proposals are used even when
    # this block gets a correction: they only decide how much is checked at once, and drafting again cost more.
    ahead: Future | None = None
    ready: tuple[int, int] | None = None  # the block whose proposals the other thread has drafted
    with ThreadPoolExecutor(1) as pool:
        while accepted < total:
            first = accepted // H
            t1 = min(T, first + SPECULATION_BLOCK_FRAMES)
            if accepted % H or ready != (first, t1):
                propose(first, t1, accepted % H)
            ready = None
            if DRAFT_AHEAD and t1 < T:  # it reads rows < t1 of ``drafted`` and writes labels and rows >= t1
                ready = (t1, min(T, t1 + SPECULATION_BLOCK_FRAMES))
                ahead = pool.submit(propose, *ready, 0)
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
                        if ahead is not None:  # one draft at a time: they share the drafter's buffers
                            ahead.result()
                        propose(accepted // H, t1, accepted % H)
                    retried = False
            if ahead is not None:  # before this block's exact rows replace the draft's, which it may be reading
                ahead.result()
                ahead = None
            drafted[P + first : P + t1] = past[P + first : P + t1]
