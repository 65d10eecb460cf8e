"""Imported once by the ingest fork server before it forks workers: what every sequence needs (numpy, the store
writer and the per-sequence work) and the compiled OBJ scanner loaded from numba's cache, so that each worker starts
with them instead of loading them itself. Nothing for audio: see ``warm_audio``."""

import numpy as np

import facedata.ingest.sequence  # noqa: F401
from facedata.meshio import parse_obj

parse_obj(np.frombuffer(b"v 0 0 0\nf 1 1 1\n", np.uint8))
