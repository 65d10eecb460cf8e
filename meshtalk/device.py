"""Where the model runs and how: the device by name, the number of torch threads, and the LSTM kernels for inputs of
changing length.

Shared by training (``meshtalk.train``, ``meshtalk.distributed``), evaluation, animation and the sampler; it
imports nothing of meshtalk.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import torch

from facedata.errors import InputError


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
    here), which is free for training's fixed windows but dominates whole sentences of varying length. Only for
    the LSTMs: oneDNN's convolutions (the audio encoder) are much faster than the fallback."""
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
