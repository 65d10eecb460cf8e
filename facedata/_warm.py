"""Imported once by the ingest worker server, before it forks workers: the heavy imports (torch, resampy) and the
compilation of the numba kernels (resampy's is not cached on disk) happen here once instead of in every worker.
Torch runs single-threaded, so no thread pool exists to be inherited by the forked workers."""

import numpy as np
import torch

from facedata.audio import resample, utterance_log_mel
from facedata.meshio import parse_obj

torch.set_num_threads(1)
resample(np.zeros(4800, np.float32), 48_000, 16_000)
utterance_log_mel(np.zeros(1600, np.float32))
parse_obj(np.frombuffer(b"v 0 0 0\nf 1 1 1\n", np.uint8))
