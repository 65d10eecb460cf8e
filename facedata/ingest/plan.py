"""Planning an ingest: the vertex set and settings of a run, for each discovered sequence whether it is up to date
(skipped by fingerprint), cannot be done (its identity has no template) or must be done (a ``SequenceTask``), and
how many worker processes the work to do can pay for (``pool_size``).

Discovery itself (listing the raw tree) is ``facedata.discover``; nothing here reads a frame.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facedata.audio import HOP_LENGTH, MEL_PAD_SAMPLES, MESH_FPS, N_MELS, SAMPLE_RATE_HZ
from facedata.discover import IdentitySource, RawTree, Reject, SequenceSource
from facedata.errors import InputError
from facedata.files import BLOCK_BYTES, block_bytes
from facedata.meshio import MULTIFACE_VERTICES
from facedata.store import (
    ARRAYS_DIR,
    DEFAULT_SHARD_FRAMES,
    FORMAT_VERSION,
    INFO_FILE,
    identity_group_path,
    sequence_group_path,
)
from facedata.topology import fingerprint_array, read_keep


@dataclass(frozen=True)
class IngestOptions:
    """Settings of an ingest run. Those that change stored content are part of every sequence's fingerprint."""

    vertices: str = "meshtalk"  # "meshtalk" (the 6172 kept vertices) or "full" (all 7306)
    keep: Path | None = None  # a user keep list (one source index per line); overrides ``vertices``
    topology: Path | None = None  # an OBJ in the kept topology whose faces replace the surviving source faces
    workers: int = 1  # at most this many worker processes; fewer (or none) when the work cannot pay for them
    shard_frames: int = DEFAULT_SHARD_FRAMES
    max_audio_mismatch_ms: float = 200.0
    dry_run: bool = False
    scheduler: str | None = None  # a Dask scheduler address: run the sequences on that cluster (workers unused)
    ignore_free_space: bool = False  # start even when the plan's bytes exceed the disk's free space


DEFAULT_OPTIONS = IngestOptions()


@dataclass(frozen=True)
class VertexSet:
    name: str
    keep: np.ndarray  # (V,) source indices
    n_source: int

    @property
    def n_vertices(self) -> int:
        return int(self.keep.size)

    @property
    def fingerprint(self) -> str:
        return fingerprint_array(self.keep)


@dataclass
class SequenceTask:
    """Everything a worker needs to ingest one sequence (picklable)."""

    store_root: Path
    source: SequenceSource
    vertex_set: VertexSet
    shard_frames: int
    max_audio_mismatch_ms: float
    fingerprint: str


@dataclass
class SequenceResult:
    identity: str
    sequence: str
    status: str  # "ingested", "skipped" or "rejected" (in a dry run, "ingested" means "would be ingested")
    record: dict[str, Any] | None
    rejects: list[Reject] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0


def resolve_vertex_set(options: IngestOptions) -> VertexSet:
    if options.keep is not None:
        return VertexSet("custom", read_keep(options.keep), MULTIFACE_VERTICES)
    if options.vertices == "meshtalk":
        return VertexSet("meshtalk", read_keep(None), MULTIFACE_VERTICES)
    if options.vertices == "full":
        return VertexSet("full", np.arange(MULTIFACE_VERTICES), MULTIFACE_VERTICES)
    raise InputError("--vertices", "vertex set", expected="meshtalk or full", actual=options.vertices)


def run_settings(options: IngestOptions, vertex_set: VertexSet) -> dict[str, Any]:
    """The settings that change stored content (recorded in facedata.json and hashed into every fingerprint)."""
    return {
        "format_version": FORMAT_VERSION,
        "vertex_set": vertex_set.name,
        "n_vertices": vertex_set.n_vertices,
        "n_source_vertices": vertex_set.n_source,
        "keep_fingerprint": vertex_set.fingerprint,
        "shard_frames": options.shard_frames,
        "max_audio_mismatch_ms": options.max_audio_mismatch_ms,
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "mesh_fps": MESH_FPS,
    }


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """Hash of the settings that change stored content."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def sequence_fingerprint(seq: SequenceSource, settings_fp: str) -> str:
    """Sources by name, size and modification time (as make and rsync do), plus the settings and the step."""
    h = hashlib.sha1(f"{settings_fp}|step={seq.step}".encode())
    for path in seq.files():
        st = path.stat()
        h.update(f"|{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def planned_status(store: Path, seq: SequenceSource, settings_fp: str) -> str:
    existing = stored_record(store, seq.identity, seq.name)
    try:
        fp = sequence_fingerprint(seq, settings_fp)
    except OSError:
        return "ingested"
    return "skipped" if existing is not None and existing["record"]["source_fingerprint"] == fp else "ingested"


def stored_record(store: Path, identity: str, sequence: str) -> dict[str, Any] | None:
    meta = store / ARRAYS_DIR / sequence_group_path(identity, sequence) / "zarr.json"
    try:
        return json.loads(meta.read_text())["attributes"]["facedata"]
    except (OSError, KeyError, json.JSONDecodeError):
        return None


def plan_sequence(store: Path, seq: SequenceSource, vertex_set: VertexSet, options: IngestOptions,
                  settings_fp: str) -> SequenceTask | SequenceResult:
    """A sequence of an identity with a template: skipped if its stored record has the same fingerprint, else a
    task for a worker."""
    fp = sequence_fingerprint(seq, settings_fp)
    existing = stored_record(store, seq.identity, seq.name)
    if existing is not None and existing["record"]["source_fingerprint"] == fp:
        return SequenceResult(
            seq.identity,
            seq.name,
            "skipped",
            existing["record"],
            [Reject(**r) for r in existing["rejects"]],
        )
    return SequenceTask(store, seq, vertex_set, options.shard_frames, options.max_audio_mismatch_ms, fp)


def without_template(seq: SequenceSource, identity: IdentitySource) -> SequenceResult:
    """A sequence of an identity whose neutral template is missing or unreadable: rejected, nothing read."""
    return SequenceResult(
        seq.identity,
        seq.name,
        "rejected",
        None,
        [
            Reject(
                str(seq.directory),
                "template",
                "identity has no usable neutral template",
                expected=f"{identity.name}/tracked_mesh/E001_Neutral_Eyes_Open with a valid frame",
                actual="absent or unreadable",
                identity=seq.identity,
                sequence=seq.name,
            )
        ],
    )


# One zarr.json per array and group: a few hundred bytes of JSON, one block on disk.
METADATA_BYTES = BLOCK_BYTES
# Room kept for the manifests and facedata.json while the sequences fill the disk: a fixed part (the Parquet
# files' schemas and footers, the description) and a part per row (a stored sequence or a reject), both generous
# (12 sequences measured 12.7 kB in sequences.parquet).
MANIFEST_ROOM_BYTES = 256 * 1024
MANIFEST_ROW_BYTES = 2048


def sequence_bytes(source: SequenceSource, n_vertices: int, shard_frames: int) -> int:
    """Bytes one sequence takes in the store, whole blocks, estimated from what discovery saw (no file is read):
    vertex shards (T x V x 12 bytes and each shard's index), frame numbers, flags and, with a WAV, the 16 kHz audio
    of the frames' length (its own length may differ by up to ``max_audio_mismatch_ms``) and its log-mel."""
    t = source.n_frames
    if t == 0:
        return 0
    per_shard = max(1, min(shard_frames, t))
    full, rest = divmod(t, per_shard)

    def shard(frames: int) -> int:  # the frames back to back, then (offset, length) as 2 uint64 per frame, a CRC32C
        return block_bytes(frames * (n_vertices * 12 + 16) + 4)

    total = full * shard(per_shard) + (shard(rest) if rest else 0)
    total += block_bytes(4 * t) + block_bytes(t) + 4 * METADATA_BYTES  # frame_number, observed, 3 arrays + group
    if source.audio is not None:
        samples = -(-SAMPLE_RATE_HZ * t // MESH_FPS)
        mel_frames = 1 + (samples + 2 * MEL_PAD_SAMPLES) // HOP_LENGTH
        total += block_bytes(4 * samples) + block_bytes(4 * N_MELS * mel_frames) + 2 * METADATA_BYTES
    return total


def identity_bytes(n_vertices: int) -> int:
    """An identity's template (V x 3 float32) and its groups."""
    return block_bytes(12 * n_vertices) + 3 * METADATA_BYTES


def topology_bytes(n_vertices: int) -> int:
    """The shared faces (about 2V triangles of 3 int32, as a closed mesh has) and source indices."""
    return block_bytes(24 * n_vertices) + block_bytes(4 * n_vertices) + 3 * METADATA_BYTES


def manifest_bytes(store: Path, n_rows: int) -> int:
    """Room for rewriting both manifests and facedata.json (their old versions stay until each is replaced)."""
    info = store / INFO_FILE
    old = info.stat().st_size if isinstance(store, Path) and info.exists() else 0
    return MANIFEST_ROOM_BYTES + MANIFEST_ROW_BYTES * n_rows + block_bytes(2 * old + 4096)


@dataclass(frozen=True)
class PlannedBytes:
    """What a run will add to a store, estimated before it starts: ``total`` bytes (whole blocks) for ``sequences``
    sequences to write, ``identities`` new templates and the manifests."""

    total: int
    sequences: int
    identities: int


def planned_bytes(store: Path, tree: RawTree, vertex_set: VertexSet, options: IngestOptions,
                  settings_fp: str) -> PlannedBytes:
    """The bytes an ingest of ``tree`` into ``store`` will write: the sequences it will not skip, the templates and
    topology the store lacks, and the manifests (``MANIFEST_ROOM_BYTES`` and ``MANIFEST_ROW_BYTES`` per row).
    Nothing is read but the store's records and the raw files' sizes and times."""
    n_vertices = vertex_set.n_vertices
    to_do = [s for s in tree.sequences if planned_status(store, s, settings_fp) == "ingested"]
    total = sum(sequence_bytes(s, n_vertices, options.shard_frames) for s in to_do)
    arrays = store / ARRAYS_DIR
    new_identities = [i for i in tree.identities if i.template_sequence is not None
                      and not (arrays / identity_group_path(i.name) / "template" / "zarr.json").exists()]
    total += len(new_identities) * identity_bytes(n_vertices)
    if new_identities and not (arrays / "topology" / "faces" / "zarr.json").exists():
        total += topology_bytes(n_vertices)
    total += manifest_bytes(store, len(tree.sequences) + len(tree.rejects))
    return PlannedBytes(total=total, sequences=len(to_do), identities=len(new_identities))


# What the per-sequence work and a pool's start-up cost, measured with benchmarks/bench_ingest.py on the 2-core
# machine under a load average of about 4 (docs/store-format.md, "Ingest speed"). Only their ratios matter: they
# decide whether a pool pays and which OBJ scanner a process uses.
OBJ_FRAME_S = 0.0024  # read, parse, keep and write one frame that only has an OBJ
BIN_FRAME_S = 0.0008  # the same from a .bin
AUDIO_FRAME_S = 0.0010  # check, resample, normalise and log-mel the audio of one mesh frame (1/30 s)
WORKER_START_S = 1.3  # a fork server (interpreter, numpy, zarr, the OBJ scanner) and its workers forked
COMPILED_START_S = 0.9  # numba and the compiled OBJ scanner loaded into a process
COMPILED_OBJ_S = 0.0012  # one 7306-vertex OBJ read by the compiled scanner ...
CSV_OBJ_S = 0.0021  # ... and by polars' CSV reader, 16 files a call (1.8 ms against 1.0 idle, in ingest)
READ_THREADS = 2  # threads reading frames ahead in the command's own process (the machine's two cores)


def obj_frames(source: SequenceSource) -> int:
    """Frames of a sequence that only an OBJ file holds (read with an OBJ scanner, not as a .bin)."""
    return sum(1 for f in source.frames if f.bin is None and f.obj is not None)


def obj_scanner(n_files: int) -> str:
    """The OBJ scanner for a process that reads ``n_files`` OBJ files (``facedata.meshio.read_obj``): "csv", which
    has nothing to load, unless the compiled scanner's faster reads pay for loading it (about 1,000 files)."""
    return "compiled" if n_files * (CSV_OBJ_S - COMPILED_OBJ_S) > COMPILED_START_S else "csv"


def task_seconds(task: SequenceTask) -> float:
    """Estimated seconds of one task in one process, from what discovery saw (no file is read)."""
    n_obj = obj_frames(task.source)
    n_bin = len(task.source.frames) - n_obj
    audio_s = task.source.n_frames * AUDIO_FRAME_S if task.source.audio is not None else 0.0
    return n_obj * OBJ_FRAME_S + n_bin * BIN_FRAME_S + audio_s


def pool_size(tasks: list[SequenceTask], max_workers: int, *, cores: int | None = None) -> int:
    """How many worker processes to use for ``tasks``, at most ``max_workers`` and the machine's ``cores``
    (default: all of them); 1 means this process alone.

    With k workers the work takes about max(total / k, longest task) + ``WORKER_START_S`` (they start side by
    side), in this process alone the total: the count with the smallest estimate wins, so small trees never wait
    for a pool to start.
    """
    costs = sorted((task_seconds(t) for t in tasks), reverse=True)
    total = sum(costs)
    best, best_s = 1, total
    for k in range(2, min(max_workers, len(costs), cores or os.cpu_count() or 1) + 1):
        estimate = max(total / k, costs[0]) + WORKER_START_S
        if estimate < best_s:
            best, best_s = k, estimate
    return best
