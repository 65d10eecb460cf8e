"""The waves: every sequence of a batch at once, a frame at a time, each wave of heads with one matrix product per
layer over the columns its known inputs make final. The audio terms of all frames are computed at once, the far
historic taps in blocks of d + 1 frames, the near taps once per frame; a chosen label adds its embedding column to
the heads above it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from meshtalk.model import LEAKY_SLOPE, ContextModel
from meshtalk.sampling.kernels import add_products, choose_labels, wave_products
from meshtalk.sampling.layout import WeightLayout
from meshtalk.sampling.schedule import Step

NARROW_FROM_BATCH = 2  # torch's products: batches of at least this many sequences take one head per product
# (see one_head_per_step); the compiled loops always do, having no cost per call to save.
FAR_ROWS_IN_TORCH = 24  # far taps of at least this many rows (sequences x frames) run in torch's product on the
# parameters' transposed view, which is faster from there on (1024 x 1024: the loops 3.4x faster for 2 rows, 1.2x
# for 16, as fast for 24 to 40, slower for 72)


def sample_waves(context: ContextModel, w: WeightLayout, audio_code: Tensor, gumbel: Tensor | None, labels: Tensor,
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

    def views(step: Step) -> tuple[Tensor, Tensor, Tensor, bool]:
        """(output rows, visible inputs, weight block, activation?) of a step."""
        if step.level < L:
            out, source = ins[step.level + 1][:, step.lo * K : step.hi * K], ins[step.level]
        else:
            out, source = z[:, step.lo * C : step.hi * C], ins[L]
        return out, source[:, : step.cols], w.block(step), step.level < L

    # On the CPU in float32 the compiled loops (meshtalk.sampling.kernels) run on numpy views of the same buffers.
    compiled = audio_code.device.type == "cpu" and audio_code.dtype == torch.float32
    # In torch one sequence is bound by the number of products, several by their arithmetic.
    wide = B < NARROW_FROM_BATCH and not compiled
    chosen_waves, chosen_finish = (w.waves, w.finish) if wide else (w.narrow_waves, w.narrow_finish)
    if compiled:
        ins_np, z_np, flat, near, far = ins.numpy(), z.numpy(), w.flat.numpy(), w.near_t.numpy(), w.far.numpy()
        pending_np, past_np = pending.numpy(), past.numpy()
        previous = ins_np[:L].copy()  # the layers' inputs at the frame before, for the near taps
        labels_np, emb_rows = labels.numpy(), w.emb_rows.numpy()
        noise_np = gumbel.numpy() if gumbel is not None else np.zeros((T, 0, 0, 0), np.float32)

        def products(steps: tuple[Step, ...] | list[Step]) -> Callable[[], None]:
            table = w.table(steps)
            return lambda: wave_products(ins_np, z_np, table, flat, LEAKY_SLOPE)
    else:
        def products(steps: tuple[Step, ...] | list[Step]) -> Callable[[], None]:
            run = [views(s) for s in steps]
            return lambda: _run_steps(run)

    waves = [(products(wave.steps), wave.first, wave.stop) for wave in chosen_waves]
    finish = products(chosen_finish)
    for t in range(T):
        for i, layer in enumerate(layers):
            d = layer.dilation
            if t % (d + 1) == 0:  # far taps of frames t .. t + d, whose inputs t - 1 - d .. t - 1 are known
                lo, hi = max(t, d + 1), min(t + d, T - 1)
                if lo <= hi and compiled and (hi - lo + 1) * B < FAR_ROWS_IN_TORCH:
                    add_products(pending_np[i, lo : hi + 1].reshape(1, -1, HK),
                                 past_np[i, lo - 1 - d : hi - d].reshape(1, -1, HK), far[i : i + 1])
                elif lo <= hi:
                    pending[i, lo : hi + 1].view(-1, HK).addmm_(past[i, lo - 1 - d : hi - d].view(-1, HK), w.far_t[i])
        ins[1:].copy_(pending[:, t])
        if t >= 1:
            if compiled:
                add_products(ins_np[1:], previous, near)
            else:
                ins[1:].baddbmm_(past[:, t - 1], w.near_t)
        ins[0].copy_(w.emb_bias)
        z.copy_(w.logit_bias)
        for run, a, b in waves:
            run()
            if compiled:
                choose_labels(z_np, noise_np[t], labels_np, t, a, b, t >= given, emb_rows, ins_np[0])
                continue
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
        finish()
        if compiled:
            previous[...] = ins_np[:L]
        past[:, t].copy_(ins[:L])


def _run_steps(steps: list[tuple[Tensor, Tensor, Tensor, bool]]) -> None:
    for out, x, weight, activation in steps:
        if x.shape[1]:
            out.addmm_(x, weight)
        if activation:
            F.leaky_relu_(out, LEAKY_SLOPE)
