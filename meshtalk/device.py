"""Where the model runs and how: the device by name, the number of torch threads, and the LSTM kernels for inputs of
changing length.

Shared by training (``meshtalk.train``, ``meshtalk.distributed``), evaluation, animation and the sampler; it
imports nothing of meshtalk.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from facedata.errors import InputError

T = TypeVar("T")
R = TypeVar("R")


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda[:i]``.

    Raises:
        InputError: an unknown name, or CUDA asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device", "CUDA is not available", expected="auto or cpu", actual=name)
        return torch.device(name)
    raise InputError("--device", "unknown device", expected="auto, cpu or cuda", actual=repr(name))


@contextlib.contextmanager
def shape_agnostic_kernels() -> Iterator[None]:
    """Run without oneDNN: on CPU it builds an LSTM kernel for every new input shape (0.1 to 1.4 s each, measured
    here with an earlier setup), which is free for training's fixed windows but dominated whole sentences of varying
    length. Only for the LSTMs: oneDNN's convolutions (the audio encoder) are much faster than the fallback.

    Measured again with torch 2.13 (2026-12-03): a new shape's first call costs only 1-6 ms more (the decoder's
    LSTM, 20 to 1,800 frames) and oneDNN's LSTM is 3-4x faster than the fallback, so ``meshtalk animate``'s decoder
    no longer runs under this; evaluation and rendering still do."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a note about TF32 on Intel GPUs when the flag is set
        with torch.backends.mkldnn.flags(enabled=False):
            yield


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (None: leave them), restoring the previous count."""
    previous = torch.get_num_threads()
    if n is not None and n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity masks on this system
        return max(1, os.cpu_count() or 1)



def map_on_threads(fn: Callable[[T], R], items: Iterable[T], threads: int) -> list[R]:
    """``[fn(item) for item in items]`` computed on up to ``threads`` threads at once, every torch operation on one
    core (intra-op threads made small steps 3-30x slower on busy cores; separate threads take turns there instead);
    in this thread when one is enough. Each call runs in the caller's grad mode, which torch keeps per thread."""
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    grad = torch.is_grad_enabled()

    def call(item: T) -> R:
        with torch.set_grad_enabled(grad):
            return fn(item)

    with torch_threads(1), ThreadPoolExecutor(min(threads, len(items))) as pool:  # set before the threads start
        return list(pool.map(call, items))

HUGE_PAGE_BYTES = 2 << 20  # a transparent huge page on x86-64 and most arm64 kernels


def on_huge_pages(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of contiguous CPU tensors packed into one buffer that the kernel is asked to back with 2 MB pages
    (Linux transparent huge pages, ``madvise`` mode; elsewhere, or for less than a page, the tensors themselves).

    The sampler reads all of its weights every frame (12 MB of the draft's int8, more for the waves): on 4 kB pages
    that takes thousands of TLB entries per frame, on 2 MB pages a few (``benchmarks/bench_model.py``). Each copy
    starts on a 64-byte boundary, as torch's own allocations, with the tensor's shape and strides: the same values
    in the same kernels.
    """
    ok = (tensors and all(t.device.type == "cpu" and t.is_contiguous() for t in tensors)
          and hasattr(mmap, "MADV_HUGEPAGE") and hasattr(mmap, "MAP_PRIVATE"))
    sizes = [-(-t.nbytes // 64) * 64 for t in tensors]
    if not ok or sum(sizes) < HUGE_PAGE_BYTES:
        return tensors
    total = sum(sizes) + HUGE_PAGE_BYTES
    # Private, not mmap's default shared mapping: shared anonymous memory is shmem, which THP leaves alone.
    buffer = mmap.mmap(-1, total, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = -ctypes.addressof(ctypes.c_char.from_buffer(buffer)) % HUGE_PAGE_BYTES
    try:
        buffer.madvise(mmap.MADV_HUGEPAGE, start, (total - start) // mmap.PAGESIZE * mmap.PAGESIZE)
    except OSError:  # a kernel without THP: ordinary pages, the same values
        pass
    out, at = [], start
    for tensor, size in zip(tensors, sizes, strict=True):
        if size == 0:
            out.append(tensor)
            continue
        # frombuffer holds the buffer for as long as the tensor lives.
        copy = torch.frombuffer(buffer, dtype=tensor.dtype, count=tensor.numel(), offset=at).view(tensor.shape)
        out.append(copy.copy_(tensor))
        at += size
    return out
