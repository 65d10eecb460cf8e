"""``facedata ingest``: a raw Multiface tree into a store (``docs/store-format.md``).

Work is split per sequence. Each sequence is read frame by frame (``.bin`` when present and valid, else the OBJ,
converted from world coordinates when needed), put on the uniform 30 fps grid of its frame numbers (dropped
frames are interpolated and flagged), cut to the kept vertices, and written shard by shard into a staging group
that is renamed into place only when complete. Audio is read, checked against the frame count, resampled to
16 kHz, loudness-normalised and turned into a log-mel. Bad inputs become rows of ``rejects.parquet``; the rest
goes on. Re-running skips sequences whose sources and settings have not changed.

The stage has one door, ``ingest`` (``facedata.ingest.run``), and these rooms behind it: ``plan`` (the vertex set,
the settings, fingerprints, what to skip, and how many workers and which OBJ scanner the work can pay for),
``sequence`` (the per-sequence work: read, validate, keep vertices, align, resample, mel), ``write`` (the store's
description, templates, topology, manifests and provenance) and ``workers`` (the sequences here, in a local pool
whose fork server loads ``warm_frames`` and, with audio, ``warm_audio``, or on a Dask cluster).
"""

from facedata.ingest.plan import (
    IngestOptions,
    SequenceResult,
    SequenceTask,
    VertexSet,
    resolve_vertex_set,
    sequence_fingerprint,
    settings_fingerprint,
)
from facedata.ingest.run import IngestReport, ingest
from facedata.ingest.sequence import WORLD_CENTROID_MM, ingest_sequence

__all__ = [
    "WORLD_CENTROID_MM", "IngestOptions", "IngestReport", "SequenceResult", "SequenceTask", "VertexSet", "ingest",
    "ingest_sequence", "resolve_vertex_set", "sequence_fingerprint", "settings_fingerprint",
]
