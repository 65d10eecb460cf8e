"""Imported by the ingest fork server only when some sequence has audio: torch on one thread and resampy, whose
numba kernel is not cached on disk, compiled once here instead of in every worker."""

import numpy as np
import torch

from facedata.audio import resample, utterance_log_mel

torch.set_num_threads(1)
resample(np.zeros(4800, np.float32), 48_000, 16_000)
utterance_log_mel(np.zeros(1600, np.float32))
