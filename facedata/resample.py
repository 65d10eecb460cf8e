"""resampy's ``kaiser_best`` resampling, computed in blocks on several threads, with the one-shot result.

``facedata.audio.resample`` calls ``resampy.resample`` on the whole signal: one core, about 0.74 s per minute of
48 kHz audio here, a fifth of ``meshtalk animate``'s time for a minute of speech. Each output sample of resampy
is a sum over the input samples within the filter's reach of its position (150 input samples each side for
48 kHz -> 16 kHz), taken in a fixed order, so an output block computed from its own stretch of input plus that
reach on both sides is the same computation as in the one-shot call: same positions, same filter taps, same order.
``resample_blocks`` cuts the output into blocks, gives each its input stretch and runs resampy's compiled kernel
(which releases the GIL) on a thread pool. The block positions are the one-shot positions minus the integer index
of the block's first input sample, which is exact in float64, so the result equals ``resampy.resample`` bit for
bit (tests/facedata/test_resample.py checks it against one-shot resampy on generated signals at several rates).

The kernel is resampy's private ``resampy.interpn._resample_loop_s``; if a resampy release moves it, the function
falls back to one-shot ``resampy.resample`` (same result, one core).
"""

from __future__ import annotations

import itertools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

FILTER = "kaiser_best"


def _kernel():
    """resampy's compiled single-thread loop, or None when this resampy does not have it."""
    try:
        from resampy.interpn import _resample_loop_s
    except ImportError:
        return None
    return _resample_loop_s


def resample_blocks(samples: np.ndarray, sample_rate_hz: int, target_rate_hz: int, *, workers: int | None = None,
                    min_block_samples: int = 1 << 16) -> np.ndarray:
    """``resampy.resample(samples, sample_rate_hz, target_rate_hz, filter="kaiser_best")`` of a mono signal,
    computed in ``workers`` blocks at once (default: the CPUs, at most 4); (N,) -> (int(N * target / rate),)
    in the input's float dtype (float32 for integer input), as resampy gives it.

    ``min_block_samples`` (output samples) keeps short signals in one block, where threads gain nothing.

    Raises:
        ValueError: a rate that is not positive, a signal that is not 1-D or too short to resample (resampy's
            checks).
    """
    import resampy
    from resampy.filters import get_filter

    x = np.ascontiguousarray(samples)
    if sample_rate_hz <= 0 or target_rate_hz <= 0:
        raise ValueError(f"invalid sample rates {sample_rate_hz} -> {target_rate_hz}")
    if x.ndim != 1:
        raise ValueError(f"expected a mono (N,) signal, got shape {x.shape}")
    if sample_rate_hz == target_rate_hz:
        return x.copy()
    n_out = int(x.shape[0] * float(target_rate_hz) / float(sample_rate_hz))
    workers = workers or min(4, os.cpu_count() or 1)
    kernel = _kernel()
    if kernel is None or n_out < 1:  # resampy's own call (and its error for a signal too short)
        return resampy.resample(x, sample_rate_hz, target_rate_hz, filter=FILTER)
    n_blocks = max(1, min(workers, n_out // max(1, min_block_samples)))

    # The set-up of resampy.resample, step by step, so that every value is the one it uses.
    sample_ratio = float(target_rate_hz) / sample_rate_hz
    dtype = np.float32 if np.issubdtype(x.dtype, np.integer) else x.dtype
    interp_win, precision, _ = get_filter(FILTER)
    if sample_ratio < 1:
        interp_win = sample_ratio * interp_win
    interp_delta = np.diff(interp_win, append=interp_win[-1])
    scale = min(1.0, sample_ratio)
    t_out = np.arange(n_out) * (1.0 / sample_ratio)  # output positions in input samples
    # Input samples an output reaches on either side: the kernel's wing length is at most nwin // index_step.
    reach = interp_win.shape[0] // int(scale * precision) + 2
    y = np.zeros(n_out, dtype=dtype)
    bounds = [round(k * n_out / n_blocks) for k in range(n_blocks + 1)]

    def run(a: int, b: int) -> None:
        first = max(0, int(t_out[a]) - reach)
        stop = min(x.shape[0], int(t_out[b - 1]) + 2 + reach)
        # Integer shifts of float64 positions below 2**52 are exact: same taps, same order as one-shot.
        kernel(x[first:stop], t_out[a:b] - first, interp_win, interp_delta, precision, scale, y[a:b])

    if n_blocks == 1:
        run(0, n_out)
        return y
    with ThreadPoolExecutor(max_workers=n_blocks) as pool:
        for future in [pool.submit(run, a, b) for a, b in itertools.pairwise(bounds) if b > a]:
            future.result()
    return y


def warm_up(sample_rate_hz: int, target_rate_hz: int) -> None:
    """Compile the kernel (numba compiles it on the first call of a process, 1-3 s here) on a few samples."""
    if sample_rate_hz == target_rate_hz:
        return
    n = max(1, math.ceil(0.04 * sample_rate_hz))
    resample_blocks(np.zeros(4 * n, np.float32), sample_rate_hz, target_rate_hz)
