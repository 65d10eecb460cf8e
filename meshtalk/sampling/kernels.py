"""The waves' matrix products on the CPU as compiled loops (numba): each weight row is read once for every sequence
of the batch, and a wave's products are one call instead of one torch call each.

With a few sequences (animate's segments: 7 or 8 per thread) the products are (B x cols) @ (cols x 64) per head and
(B x 1024) @ (1024 x 1024) per layer for the near taps; torch's CPU kernels reach 15-20 GFLOP/s there (they pack
the weight matrix for every call), and each call costs several microseconds of dispatch. These loops take four
weight rows at a time and add them into every sequence's output row, which stays in the first-level cache. Float32
throughout, the sums in another order than torch's: the same values to float rounding (test_sampling checks the
labels against the reference loop). The speculative path's int8 draft runs here too (``draft_frame``,
``add_int8_rows``: int8 weights with a scale per output column, float32 activations). ``docs/model.md`` has the
figures.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# One row per product: level (0 .. L - 1 the context layers, L the logits), first output column, output width,
# visible input columns, offset of the (cols x width) block in the flat weights.
TABLE_COLUMNS = 5


@njit(nogil=True, cache=True)
def _add_product(out: np.ndarray, o0: int, x: np.ndarray, cols: int, weights: np.ndarray, offset: int,
                 width: int) -> None:
    """``out[:, o0 : o0 + width] += x[:, :cols] @ W`` for the rows of ``out`` (B, N) and ``x`` (B, K), W the
    (cols x width) block at ``weights[offset:]``: four weight rows at a time, added into every row of ``out``
    (slices, not offsets, so that the loops vectorise)."""
    k = 0
    while k + 4 <= cols:
        a = offset + k * width
        w0, w1 = weights[a : a + width], weights[a + width : a + 2 * width]
        w2, w3 = weights[a + 2 * width : a + 3 * width], weights[a + 3 * width : a + 4 * width]
        for b in range(out.shape[0]):
            x0, x1, x2, x3 = x[b, k], x[b, k + 1], x[b, k + 2], x[b, k + 3]
            o = out[b, o0 : o0 + width]
            for j in range(width):
                o[j] += (x0 * w0[j] + x1 * w1[j]) + (x2 * w2[j] + x3 * w3[j])
        k += 4
    while k < cols:
        wk = weights[offset + k * width : offset + (k + 1) * width]
        for b in range(out.shape[0]):
            xv = x[b, k]
            o = out[b, o0 : o0 + width]
            for j in range(width):
                o[j] += xv * wk[j]
        k += 1


@njit(nogil=True, cache=True)
def wave_products(ins: np.ndarray, z: np.ndarray, table: np.ndarray, weights: np.ndarray, slope: float) -> None:
    """For each row of ``table``: ``out[:, o0 : o0 + width] += src[:, :cols] @ block``, then LeakyReLU(``slope``)
    on those columns for a context layer. ``ins`` (L + 1, B, HK): level l reads ``ins[l]`` and writes
    ``ins[l + 1]``; the logits (level L) read ``ins[L]`` and write ``z`` (B, H * C)."""
    L = ins.shape[0] - 1
    for s in range(table.shape[0]):
        level, o0, width, cols, offset = table[s, 0], table[s, 1], table[s, 2], table[s, 3], table[s, 4]
        out = ins[level + 1] if level < L else z
        _add_product(out, o0, ins[level], cols, weights, offset, width)
        if level < L:
            for b in range(out.shape[0]):
                o = out[b, o0 : o0 + width]
                for j in range(width):
                    if o[j] < 0:
                        o[j] *= slope


@njit(nogil=True, cache=True)
def add_products(out: np.ndarray, x: np.ndarray, w: np.ndarray) -> None:
    """``out[l] += x[l] @ w[l]`` for every l: (L, B, N) += (L, B, K) @ (L, K, N)."""
    K, N = w.shape[1], w.shape[2]
    for layer in range(x.shape[0]):
        _add_product(out[layer], 0, x[layer], K, w[layer].reshape(-1), 0, N)


@njit(nogil=True, cache=True)
def choose_labels(z: np.ndarray, noise: np.ndarray, labels: np.ndarray, t: int, first: int, stop: int, draw: bool,
                  emb_rows: np.ndarray, emb: np.ndarray) -> None:
    """Labels ``first`` .. ``stop - 1`` of frame ``t`` of every sequence, and their embedding columns added.

    With ``draw``, head h's label is the argmax of log_softmax(its C logits of ``z`` (B, H * C)) plus its noise
    (``noise`` (B, H, C) at frame t; an empty array: none), written to ``labels`` (B, T, H); without, the label
    there is kept (a given prefix). Then ``emb[b] += emb_rows[h * C + label]`` for each head (``emb_rows``
    (H * C, HK), ``emb`` (B, HK)), as the embedding's product with the one-hot labels."""
    B = z.shape[0]
    C = emb_rows.shape[0] // labels.shape[2]
    noisy = noise.size > 0
    for b in range(B):
        for h in range(first, stop):
            if draw:
                logits = z[b, h * C : (h + 1) * C]
                top = logits.max()
                total = np.float32(0.0)
                for c in range(C):
                    total += np.exp(logits[c] - top)
                log_total = np.log(total)
                best, best_score = 0, -np.inf
                for c in range(C):
                    score = (logits[c] - top) - log_total
                    if noisy:
                        score += noise[b, h, c]
                    if score > best_score:
                        best, best_score = c, score
                labels[b, t, h] = best
            row = emb_rows[h * C + labels[b, t, h]]
            out = emb[b]
            for j in range(out.shape[0]):
                out[j] += row[j]


# One row per product of the int8 draft: level, first output column, output width, visible input columns, offset of
# the (cols x width) int8 block, offset of its width scales. One row per wave: its first and last product rows and
# the heads it chooses (the last row: the products that complete the frame, no heads).
DRAFT_TABLE_COLUMNS, DRAFT_WAVE_COLUMNS = 6, 4


@njit(nogil=True, cache=True)
def _add_int8_product(out: np.ndarray, o0: int, x: np.ndarray, cols: int, q: np.ndarray, q_at: int, width: int,
                      scales: np.ndarray, s_at: int, total: np.ndarray) -> None:
    """``out[o0 : o0 + width] += scales * (x[:cols] @ Q)``, Q the (cols x width) int8 block at ``q[q_at:]`` with a
    scale per output column, accumulated in float32 (``total``: a buffer of at least ``width``)."""
    acc = total[:width]
    acc[:] = 0.0
    k = 0
    while k + 4 <= cols:  # slices, not offsets, so that the loops vectorise
        a = q_at + k * width
        r0, r1 = q[a : a + width], q[a + width : a + 2 * width]
        r2, r3 = q[a + 2 * width : a + 3 * width], q[a + 3 * width : a + 4 * width]
        x0, x1, x2, x3 = x[k], x[k + 1], x[k + 2], x[k + 3]
        for j in range(width):
            acc[j] += (x0 * np.float32(r0[j]) + x1 * np.float32(r1[j])) + (
                x2 * np.float32(r2[j]) + x3 * np.float32(r3[j]))
        k += 4
    while k < cols:
        r0 = q[q_at + k * width : q_at + (k + 1) * width]
        xv = x[k]
        for j in range(width):
            acc[j] += xv * np.float32(r0[j])
        k += 1
    o, sc = out[o0 : o0 + width], scales[s_at : s_at + width]
    for j in range(width):
        o[j] += sc[j] * acc[j]


@njit(nogil=True, cache=True)
def add_int8_rows(out: np.ndarray, x: np.ndarray, q: np.ndarray, q_at: int, scales: np.ndarray, s_at: int) -> None:
    """``out[r] += scales * (x[r] @ Q)`` for every row r of ``x`` (n, K); Q the (K x N) int8 block at ``q[q_at:]``,
    N = ``out.shape[1]``. Four rows of Q at a time are converted to float32 once for all rows of ``x`` (the
    conversion, not the reading, bounds an int8 product of several rows)."""
    n, K = x.shape
    N = out.shape[1]
    acc = np.zeros((n, N), np.float32)
    rows = np.empty((4, N), np.float32)
    k = 0
    while k < K:
        m = min(4, K - k)
        for i in range(m):
            block, converted = q[q_at + (k + i) * N : q_at + (k + i + 1) * N], rows[i]
            for j in range(N):
                converted[j] = np.float32(block[j])
        for r in range(n):
            a = acc[r]
            if m == 4:
                x0, x1, x2, x3 = x[r, k], x[r, k + 1], x[r, k + 2], x[r, k + 3]
                r0, r1, r2, r3 = rows[0], rows[1], rows[2], rows[3]
                for j in range(N):
                    a[j] += (x0 * r0[j] + x1 * r1[j]) + (x2 * r2[j] + x3 * r3[j])
            else:
                for i in range(m):
                    xv, ri = x[r, k + i], rows[i]
                    for j in range(N):
                        a[j] += xv * ri[j]
        k += m
    sc = scales[s_at : s_at + N]
    for r in range(n):
        o, a = out[r], acc[r]
        for j in range(N):
            o[j] += sc[j] * a[j]


@njit(nogil=True, cache=True)
def draft_frame(start: np.ndarray, previous: np.ndarray, noise: np.ndarray,
                given: np.ndarray, keep: np.ndarray, labels: np.ndarray, inputs: np.ndarray, taps_q: np.ndarray,
                taps_s: np.ndarray, q: np.ndarray, s: np.ndarray, table: np.ndarray, waves: np.ndarray,
                emb_rows: np.ndarray, emb_bias: np.ndarray, logit_bias: np.ndarray, slope: float) -> None:
    """One frame of the int8 draft: the waves' computation with int8 weights and float32 activations.

    ``start`` (L, HK): the frame's biases, audio terms and far taps; ``previous`` (L, HK): the layers' inputs at
    the frame before; ``taps_q`` / ``taps_s``: the near and far taps of each layer (2 L blocks of HK x HK int8,
    in that order) and their scales; ``q`` / ``s``, ``table``,
    ``waves``: the waves' blocks (``DRAFT_TABLE_COLUMNS``, ``DRAFT_WAVE_COLUMNS``). A head's label is the argmax
    of its logits plus ``noise`` (H, C), or ``given`` where ``keep``; it is written to ``labels`` (H,), and the
    frame's layer inputs to ``inputs`` (L, HK). Its scratch is its own, so that threads may draft at once."""
    L, HK = start.shape
    H, C = noise.shape
    known, act = np.empty((L, HK), np.float32), np.empty((L, HK), np.float32)  # before the labels; the outputs
    emb, z, total = np.empty(HK, np.float32), np.empty(H * C, np.float32), np.empty(HK, np.float32)
    for layer in range(L):
        known[layer] = start[layer]
        near = 2 * layer
        _add_int8_product(known[layer], 0, previous[layer], HK, taps_q, near * HK * HK, HK, taps_s, near * HK, total)
    emb[:] = emb_bias
    for wave in range(waves.shape[0]):
        for r in range(waves[wave, 0], waves[wave, 1]):
            level, o0, width, cols = table[r, 0], table[r, 1], table[r, 2], table[r, 3]
            if level < L:
                out = act[level]
                out[o0 : o0 + width] = known[level, o0 : o0 + width]
                _add_int8_product(out, o0, emb if level == 0 else act[level - 1], cols, q, table[r, 4], width, s,
                                  table[r, 5], total)
                o = out[o0 : o0 + width]
                for j in range(width):
                    if o[j] < 0:
                        o[j] *= slope
            else:
                z[o0 : o0 + width] = logit_bias[o0 : o0 + width]
                _add_int8_product(z, o0, act[L - 1], cols, q, table[r, 4], width, s, table[r, 5], total)
        for h in range(waves[wave, 2], waves[wave, 3]):
            best = given[h]
            if not keep[h]:
                scores, top = z[h * C : (h + 1) * C], -np.inf
                for c in range(C):
                    if scores[c] + noise[h, c] > top:
                        best, top = c, scores[c] + noise[h, c]
            labels[h] = best
            emb += emb_rows[h * C + best]
    inputs[0] = emb
    inputs[1:] = act[: L - 1]


def warm_up() -> None:
    """Compile (or load from numba's cache) the waves' loops for the arrays the sampler passes them (the draft's load
    when a drafter is made)."""
    ins, z = np.zeros((2, 1, 4), np.float32), np.zeros((1, 4), np.float32)
    wave_products(ins, z, np.zeros((1, TABLE_COLUMNS), np.int64), np.zeros(16, np.float32), 0.2)
    add_products(ins[1:], np.zeros((1, 1, 4), np.float32), np.zeros((1, 4, 4), np.float32))
    for noise in (np.zeros((1, 1, 4), np.float32), np.zeros((0, 0, 0), np.float32)):
        choose_labels(z, noise, np.zeros((1, 1, 1), np.int64), 0, 0, 1, True, np.zeros((4, 4), np.float32), ins[0])
