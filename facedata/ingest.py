"""``facedata ingest``: a raw Multiface tree into a store (``docs/store-format.md``).

Work is split per sequence. Each sequence is read frame by frame (``.bin`` when present and valid, else the OBJ,
converted from world coordinates when needed), put on the uniform 30 fps grid of its frame numbers (dropped
frames are interpolated and flagged), cut to the kept vertices, and written shard by shard into a staging group
that is renamed into place only when complete. Audio is read, checked against the frame count, resampled to
16 kHz, loudness-normalised and turned into a log-mel. Bad inputs become rows of ``rejects.parquet``; the rest
goes on. Re-running skips sequences whose sources and settings have not changed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from facedata import __version__
from facedata.audio import (
    MESH_FPS,
    SAMPLE_RATE_HZ,
    loudness_gain,
    read_wav,
    resample,
    utterance_log_mel,
)
from facedata.discover import FrameFiles, IdentitySource, Reject, SequenceSource, discover
from facedata.errors import InputError, NothingValidError, StoreError
from facedata.meshio import MULTIFACE_VERTICES, check_finite, read_bin, read_obj, read_transform
from facedata.store import (
    ARRAYS_DIR,
    DEFAULT_SHARD_FRAMES,
    FORMAT_NAME,
    FORMAT_VERSION,
    INFO_FILE,
    MANIFESTS_DIR,
    clear_staging,
    create_array,
    ensure_groups,
    identity_group_path,
    is_remote,
    manifest_schemas,
    memmap_array,
    read_info,
    sequence_group_path,
    stage_group,
    store_lock,
    store_path,
    write_array_atomic,
    write_json_atomic,
    write_parquet_atomic,
)
from facedata.topology import fingerprint_array, read_keep, subset_faces

# Head-local coordinates put the origin near the head centre; world coordinates put the head about a metre from
# the capture rig's origin. A frame whose centroid is this far out is taken to be in world coordinates.
WORLD_CENTROID_MM = 400.0


@dataclass(frozen=True)
class IngestOptions:
    """Settings of an ingest run. Those that change stored content are part of every sequence's fingerprint."""

    vertices: str = "meshtalk"  # "meshtalk" (the 6172 kept vertices) or "full" (all 7306)
    keep: Path | None = None  # a user keep list (one source index per line); overrides ``vertices``
    topology: Path | None = None  # an OBJ in the kept topology whose faces replace the surviving source faces
    workers: int = 1
    shard_frames: int = DEFAULT_SHARD_FRAMES
    max_audio_mismatch_ms: float = 200.0
    dry_run: bool = False
    scheduler: str | None = None  # a Dask scheduler address: run the sequences on that cluster (workers unused)


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


@dataclass
class IngestReport:
    """What a run did; ``summary_rows`` feeds the CLI's table."""

    store: Path
    results: list[SequenceResult]
    rejects: list[Reject]
    seconds: float
    dry_run: bool = False

    @property
    def frames_ingested(self) -> int:
        return sum(r.frames for r in self.results if r.status == "ingested")

    @property
    def frames_per_second(self) -> float:
        return self.frames_ingested / self.seconds if self.seconds > 0 else 0.0

    def summary_rows(self) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for r in self.results:
            row = rows.setdefault(
                r.identity,
                {
                    "identity": r.identity,
                    "ingested": 0,
                    "skipped": 0,
                    "rejected": 0,
                    "frames": 0,
                    "dropped": 0,
                    "audio_s": 0.0,
                    "rejects": 0,
                },
            )
            row[r.status] += 1
            if r.record is not None:
                row["frames"] += r.record["n_frames"]
                row["dropped"] += r.record["n_dropped"]
                row["audio_s"] += r.record["audio_seconds"] or 0.0
        for rej in self.rejects:
            if rej.identity in rows:
                rows[rej.identity]["rejects"] += 1
        return [rows[k] for k in sorted(rows)]


# --- the run -------------------------------------------------------------------------------------------------------


def ingest(
    raw: str | Path,
    store: str | Path,
    options: IngestOptions = IngestOptions(),
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> IngestReport:
    """Ingest a raw tree into a store; see the module docstring.

    Args:
        progress: called as ``progress(event, frames_done, frames_total)`` after each sequence.

    Raises:
        InputError: the raw tree, keep list or topology file is unusable.
        StoreError: the store belongs to another vertex set or format, is locked, or the disk is full.
        NothingValidError: nothing in the raw tree could be ingested.
    """
    started = time.perf_counter()
    raw, store = Path(raw), store_path(store)
    vertex_set = resolve_vertex_set(options)
    tree = discover(raw)
    settings = _settings(options, vertex_set)
    settings_fp = settings_fingerprint(settings)

    if options.dry_run:
        results = [
            SequenceResult(s.identity, s.name, _planned_status(store, s, settings_fp), None) for s in tree.sequences
        ]
        return IngestReport(store, results, tree.rejects, time.perf_counter() - started, dry_run=True)

    with store_lock(store):
        _prepare_store(store, settings)
        clear_staging(store)
        rejects = list(tree.rejects)
        tasks: list[SequenceTask] = []
        results: list[SequenceResult] = []
        for identity in tree.identities:
            identity_rejects, ok = _write_identity(store, identity, vertex_set, options)
            rejects += identity_rejects
            for seq in identity.sequences:
                if not ok:
                    results.append(
                        SequenceResult(
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
                    )
                    continue
                fp = sequence_fingerprint(seq, settings_fp)
                existing = _stored_record(store, seq.identity, seq.name)
                if existing is not None and existing["record"]["source_fingerprint"] == fp:
                    results.append(
                        SequenceResult(
                            seq.identity,
                            seq.name,
                            "skipped",
                            existing["record"],
                            [Reject(**r) for r in existing["rejects"]],
                        )
                    )
                    continue
                tasks.append(
                    SequenceTask(store, seq, vertex_set, options.shard_frames, options.max_audio_mismatch_ms, fp)
                )

        total = sum(t.source.n_frames for t in tasks)
        done = 0
        for result in _run_tasks(tasks, options.workers, options.scheduler):
            results.append(result)
            done += result.frames if result.status == "ingested" else 0
            if progress:
                progress(f"{result.identity}/{result.sequence}: {result.status}", done, total)

        for r in results:
            rejects += r.rejects
        clear_staging(store)  # what tasks cut off by a dying worker left behind (their retries committed)
        _write_manifests(store, rejects)
        _append_provenance(store, raw, options, results, time.perf_counter() - started)

    report = IngestReport(
        store, sorted(results, key=lambda r: (r.identity, r.sequence)), _sorted(rejects), time.perf_counter() - started
    )
    if not any(r.status in ("ingested", "skipped") for r in results):
        raise NothingValidError(
            f"{raw}: no valid sequence to ingest ({len(rejects)} rejected inputs; see "
            f"{store / MANIFESTS_DIR / 'rejects.parquet'})"
        )
    return report


def resolve_vertex_set(options: IngestOptions) -> VertexSet:
    if options.keep is not None:
        return VertexSet("custom", read_keep(options.keep), MULTIFACE_VERTICES)
    if options.vertices == "meshtalk":
        return VertexSet("meshtalk", read_keep(None), MULTIFACE_VERTICES)
    if options.vertices == "full":
        return VertexSet("full", np.arange(MULTIFACE_VERTICES), MULTIFACE_VERTICES)
    raise InputError("--vertices", "vertex set", expected="meshtalk or full", actual=options.vertices)


def _settings(options: IngestOptions, vertex_set: VertexSet) -> dict[str, Any]:
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


def _planned_status(store: Path, seq: SequenceSource, settings_fp: str) -> str:
    existing = _stored_record(store, seq.identity, seq.name)
    try:
        fp = sequence_fingerprint(seq, settings_fp)
    except OSError:
        return "ingested"
    return "skipped" if existing is not None and existing["record"]["source_fingerprint"] == fp else "ingested"


def _stored_record(store: Path, identity: str, sequence: str) -> dict[str, Any] | None:
    meta = store / ARRAYS_DIR / sequence_group_path(identity, sequence) / "zarr.json"
    try:
        return json.loads(meta.read_text())["attributes"]["facedata"]
    except (OSError, KeyError, json.JSONDecodeError):
        return None


def _prepare_store(store: Path, settings: dict[str, Any]) -> None:
    """Create the store, or check that an existing one was built with the same vertex set."""
    info_path = store / INFO_FILE
    if info_path.exists():
        info = read_info(store)
        old = info["settings"]
        if old["keep_fingerprint"] != settings["keep_fingerprint"]:
            raise StoreError(
                f"{store}: store holds another vertex set (expected {old['vertex_set']} "
                f"({old['n_vertices']} vertices), got {settings['vertex_set']} "
                f"({settings['n_vertices']} vertices)); use a new store"
            )
        if old != settings:
            info["settings"] = settings
            write_json_atomic(info_path, info)
    else:
        store.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            info_path, {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "settings": settings, "runs": []}
        )
    ensure_groups(store, "identities")
    (store / MANIFESTS_DIR).mkdir(exist_ok=True)


def _write_identity(
    store: Path, identity: IdentitySource, vertex_set: VertexSet, options: IngestOptions
) -> tuple[list[Reject], bool]:
    """Write an identity's template (a frame of E001) and, once per store, the topology. Returns (rejects, ok)."""
    rejects: list[Reject] = []
    template_seq = identity.template_sequence
    if template_seq is None:
        rejects.append(
            Reject(
                str(identity.directory / "tracked_mesh"),
                "template",
                "no neutral template sequence",
                expected="E001_Neutral_Eyes_Open",
                actual="absent",
                identity=identity.name,
            )
        )
        return rejects, False
    frame_rejects: list[Reject] = []
    template = None
    template_frame = None
    for frame in template_seq.frames:
        read = _read_frame(frame, vertex_set.n_source, frame_rejects, identity.name, template_seq.name)
        if read is not None:
            template, template_frame = read[0], frame
            break
    rejects += frame_rejects  # the E001 sequence reports them again; duplicates are merged in the manifest
    if template is None or template_frame is None:
        rejects.append(
            Reject(
                str(template_seq.directory),
                "template",
                "no valid frame in the template sequence",
                expected="a readable frame",
                actual=f"{len(template_seq.frames)} unreadable",
                identity=identity.name,
            )
        )
        return rejects, False

    faces_error = _write_topology(store, identity, template_seq, vertex_set, options)
    if faces_error is not None:
        rejects.append(faces_error)
        return rejects, False

    group_path = identity_group_path(identity.name)
    ensure_groups(store, f"{group_path}/sequences")
    attrs = {
        "entity": identity.entity,
        "template_sequence": template_seq.name,
        "template_frame": template_frame.number,
        "frame_step": identity.step,
        "source_dir": str(identity.directory),
    }
    kept = template[vertex_set.keep].astype(np.float32)
    import zarr

    group = zarr.open_group(str(store / ARRAYS_DIR / group_path), mode="a")
    template_path = store / ARRAYS_DIR / group_path / "template"
    unchanged = (
        group.attrs.get("facedata") == attrs
        and (template_path / "zarr.json").exists()
        and np.array_equal(np.asarray(memmap_array(template_path)), kept)
    )
    if not unchanged:  # a re-run over the same sources rewrites nothing
        write_array_atomic(store, f"{group_path}/template", kept)
        group.attrs.put({"facedata": attrs})
    return rejects, True


def _write_topology(
    store: Path, identity: IdentitySource, template_seq: SequenceSource, vertex_set: VertexSet, options: IngestOptions
) -> Reject | None:
    """Store the faces of the kept vertices once; check that every identity shares them."""
    faces_dir = store / ARRAYS_DIR / "topology" / "faces"
    if options.topology is not None:
        mesh = read_obj(options.topology)
        if mesh.vertices.shape[0] != vertex_set.n_vertices:
            raise InputError(
                options.topology,
                "vertex count of the topology mesh",
                expected=vertex_set.n_vertices,
                actual=mesh.vertices.shape[0],
            )
        faces = mesh.faces
    else:
        obj = next((f.obj for f in template_seq.frames if f.obj is not None), None)
        obj = obj or next((f.obj for s in identity.sequences for f in s.frames if f.obj is not None), None)
        if obj is None:
            return None  # no OBJ anywhere: the store keeps no faces (documented)
        try:
            mesh = read_obj(obj)
        except InputError as e:
            return Reject.from_error(e, "template", identity.name, template_seq.name)
        if mesh.vertices.shape[0] != vertex_set.n_source:
            return Reject(
                str(obj),
                "template",
                "vertex count of the topology OBJ",
                expected=str(vertex_set.n_source),
                actual=str(mesh.vertices.shape[0]),
                identity=identity.name,
            )
        faces = subset_faces(mesh.faces, vertex_set.keep, vertex_set.n_source)
    if faces_dir.exists():
        import zarr

        stored = zarr.open_array(str(faces_dir), mode="r")[...]
        if not np.array_equal(stored, faces):
            return Reject(
                str(identity.directory),
                "template",
                "topology differs from the store's",
                expected=f"{stored.shape[0]} faces (hash {fingerprint_array(stored)})",
                actual=f"{faces.shape[0]} faces (hash {fingerprint_array(faces)})",
                identity=identity.name,
            )
        return None
    ensure_groups(store, "topology", {"facedata": {"vertex_set": vertex_set.name, "n_vertices": vertex_set.n_vertices}})
    write_array_atomic(store, "topology/source_index", vertex_set.keep.astype(np.int32))
    write_array_atomic(store, "topology/faces", faces.astype(np.int32))
    return None


# --- per-sequence work (runs in worker processes) -------------------------------------------------------------------


def _run_tasks(tasks: list[SequenceTask], workers: int, scheduler: str | None = None) -> Iterator[SequenceResult]:
    if scheduler is not None:
        from facedata.cluster import map_on_cluster

        yield from map_on_cluster(scheduler, _cluster_task, tasks, priority=lambda t: t.source.n_frames)
        return
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield ingest_sequence(task)
        return
    # Workers are not forked from this process (its zarr I/O thread and progress-bar thread must not be
    # inherited) but from a fork server that imported torch and resampy and compiled the numba kernels once.
    if sys.platform == "win32":
        context = multiprocessing.get_context("spawn")
    else:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["facedata._warm"])
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init) as pool:
        # Longest first, so that one long sequence does not finish alone at the end.
        pending: set[Future] = {
            pool.submit(ingest_sequence, t) for t in sorted(tasks, key=lambda t: -t.source.n_frames)
        }
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _cluster_task(task: SequenceTask) -> SequenceResult:
    """A sequence on a Dask worker: one torch thread per task, as in the local pool."""
    _worker_init()
    return ingest_sequence(task)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def ingest_sequence(task: SequenceTask) -> SequenceResult:
    """Ingest one sequence into the store; never raises for bad input (it becomes rejects).

    Raises:
        StoreError: the disk is full (the run must stop; nothing stored before is touched).
    """
    started = time.perf_counter()
    seq = task.source
    rejects: list[Reject] = []
    staged = stage_group(task.store_root, sequence_group_path(seq.identity, seq.name))
    try:
        record = _write_sequence(task, staged.group, rejects)
        if record is None:
            staged.discard()
            return SequenceResult(
                seq.identity, seq.name, "rejected", None, rejects, seconds=time.perf_counter() - started
            )
        staged.group.attrs.put({"facedata": {"record": record, "rejects": [r.as_row() for r in rejects]}})
        staged.commit()
        return SequenceResult(
            seq.identity,
            seq.name,
            "ingested",
            record,
            rejects,
            frames=record["n_frames"],
            seconds=time.perf_counter() - started,
        )
    except OSError as e:
        staged.discard()
        if e.errno in (errno.ENOSPC, errno.EDQUOT) and not is_remote(task.store_root):
            free = shutil.disk_usage(task.store_root).free
            raise StoreError(
                f"{task.store_root}: disk full while writing {seq.identity}/{seq.name} "
                f"(expected room for about {_sequence_bytes(task) / 1e6:.0f} MB, "
                f"got {free / 1e6:.0f} MB free); stored sequences are intact"
            ) from e
        return _failed(seq, rejects, e, started)
    except Exception as e:  # a bug or an unforeseen input: report it with the sequence, keep the run going
        staged.discard()
        return _failed(seq, rejects, e, started)


def _failed(seq: SequenceSource, rejects: list[Reject], error: BaseException, started: float) -> SequenceResult:
    where = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    detail = f"{type(error).__name__}: {error}" + (f" at {Path(where.filename).name}:{where.lineno}" if where else "")
    rejects.append(
        Reject(
            str(seq.directory),
            "sequence",
            "unexpected error",
            actual=detail.replace("\n", " "),
            identity=seq.identity,
            sequence=seq.name,
        )
    )
    return SequenceResult(seq.identity, seq.name, "rejected", None, rejects, seconds=time.perf_counter() - started)


def _sequence_bytes(task: SequenceTask) -> int:
    return task.source.n_frames * task.vertex_set.n_vertices * 12


def _read_frame(
    frame: FrameFiles, n_source: int, rejects: list[Reject], identity: str, sequence: str
) -> tuple[np.ndarray, str] | None:
    """One frame's (n_source, 3) float32 head-local vertices and the file kind they came from ("bin", "obj" or
    "obj-world"), or None (with rejects) if no file of the frame is usable."""
    if frame.bin is not None:
        try:
            return read_bin(frame.bin, n_source), "bin"
        except InputError as e:
            rejects.append(Reject.from_error(e, "frame", identity, sequence))
    if frame.obj is not None:
        try:
            vertices = read_obj(frame.obj, faces=False).vertices
            if vertices.shape[0] != n_source:
                raise InputError(frame.obj, "vertex count", expected=n_source, actual=vertices.shape[0])
            check_finite(vertices, frame.obj)
            if np.linalg.norm(vertices.mean(axis=0)) < WORLD_CENTROID_MM:
                return vertices, "obj"
            return _world_to_head_local(vertices, frame), "obj-world"
        except InputError as e:
            rejects.append(Reject.from_error(e, "frame", identity, sequence))
    return None


def _world_to_head_local(vertices: np.ndarray, frame: FrameFiles) -> np.ndarray:
    """x_local = R.T @ (x_world - t) with the frame's [R | t].

    Raises:
        InputError: the transform file is missing or malformed.
    """
    if frame.transform is None:
        raise InputError(
            frame.obj or "",
            "OBJ in world coordinates without its transform",
            expected=f"{frame.number:06d}_transform.txt",
            actual="missing",
        )
    rt = read_transform(frame.transform)
    rotation, translation = rt[:, :3], rt[:, 3]
    return ((vertices.astype(np.float64) - translation) @ rotation).astype(np.float32)  # row-wise R.T @ (x - t)


def _write_sequence(task: SequenceTask, group: Any, rejects: list[Reject]) -> dict[str, Any] | None:
    """Write vertices (and audio) of one sequence into ``group``; returns its manifest record, or None if no
    frame was readable."""
    seq = task.source
    keep, n_source = task.vertex_set.keep, task.vertex_set.n_source
    frames = seq.frames

    def read(frame: FrameFiles) -> tuple[np.ndarray, str] | None:
        return _read_frame(frame, n_source, rejects, seq.identity, seq.name)

    # The grid spans the first to the last readable frame: find both ends before writing anything.
    first = next(((i, r) for i, f in enumerate(frames) if (r := read(f)) is not None), None)
    if first is None:
        rejects.append(
            Reject(
                str(seq.directory),
                "sequence",
                "no readable frame",
                expected=">= 1 valid frame",
                actual=f"0 of {len(frames)}",
                identity=seq.identity,
                sequence=seq.name,
            )
        )
        return None
    last = next(((i, r) for i in range(len(frames) - 1, first[0], -1) if (r := read(frames[i])) is not None), first)
    f0, step = frames[first[0]].number, seq.step
    n_frames = (frames[last[0]].number - f0) // step + 1

    def readable_frames() -> Iterator[tuple[int, np.ndarray, str]]:
        """(grid position, vertices, source kind) of every readable frame, in order."""
        yield 0, *first[1]
        for frame in frames[first[0] + 1 : last[0]]:
            if (r := read(frame)) is not None:
                yield (frame.number - f0) // step, *r
        if last is not first:
            yield n_frames - 1, *last[1]

    vertices = create_array(
        group, "vertices", shape=(n_frames, keep.size, 3), dtype=np.float32, shard_frames=task.shard_frames
    )
    observed = np.zeros(n_frames, dtype=bool)
    sources: set[str] = set()
    writer = _ShardWriter(vertices, task.shard_frames)
    previous: tuple[int, np.ndarray] | None = None
    for position, data, source in readable_frames():
        kept = data[keep]  # (V, 3)
        observed[position] = True
        sources.add(source)
        if previous is not None:  # dropped frames between two readable ones: linear interpolation
            p0, v0 = previous
            for p in range(p0 + 1, position):
                w = (p - p0) / (position - p0)
                writer.put(p, ((1 - w) * v0 + w * kept).astype(np.float32))
        writer.put(position, kept)
        previous = (position, kept)
    writer.flush()

    frame_numbers = (f0 + step * np.arange(n_frames)).astype(np.int32)
    create_array(group, "frame_number", frame_numbers)
    create_array(group, "observed", observed)
    dropped = [int(n) for n in frame_numbers[~observed]]

    record: dict[str, Any] = {
        "identity": seq.identity,
        "entity": seq.entity,
        "sequence": seq.name,
        "kind": seq.kind,
        "n_frames": n_frames,
        "n_observed": int(observed.sum()),
        "first_frame": int(frame_numbers[0]),
        "last_frame": int(frame_numbers[-1]),
        "step": step,
        "n_dropped": len(dropped),
        "dropped_frames": dropped,
        "vertex_source": "+".join(sorted(sources)),
        **_NO_AUDIO,
        "path": sequence_group_path(seq.identity, seq.name),
        "source_dir": str(seq.directory),
        "source_fingerprint": task.fingerprint,
    }
    if seq.kind == "sentence" and seq.audio is None:
        rejects.append(
            Reject(
                str(seq.directory.parent.parent / "audio" / f"{seq.name}.wav"),
                "audio",
                "missing audio for a sentence",
                expected="a WAV file",
                actual="absent",
                identity=seq.identity,
                sequence=seq.name,
            )
        )
    if seq.audio is not None:
        try:
            record.update(_write_audio(seq.audio, n_frames, group, task.max_audio_mismatch_ms))
        except InputError as e:
            rejects.append(Reject.from_error(e, "audio", seq.identity, seq.name))
    return record


_NO_AUDIO: dict[str, Any] = {
    "has_audio": False,
    "audio_seconds": None,
    "audio_sample_rate_hz": None,
    "audio_channels": None,
    "audio_subtype": None,
    "alignment_error_ms": None,
    "loudness_gain": None,
    "audio_peak": None,
    "audio_clip_fraction": None,
    "audio_rms_dbfs": None,
    "audio_silence_fraction": None,
    "n_mel_frames": None,
}


class _ShardWriter:
    """Buffers consecutive frames and writes each shard of a sharded array whole (one encode per shard)."""

    def __init__(self, array: Any, shard_frames: int):
        self.array = array
        self.block = np.empty((min(shard_frames, array.shape[0]), *array.shape[1:]), dtype=array.dtype)
        self.start = 0

    def put(self, position: int, frame: np.ndarray) -> None:
        self.block[position - self.start] = frame
        if position - self.start == self.block.shape[0] - 1:
            self.array[self.start : position + 1] = self.block
            self.start = position + 1

    def flush(self) -> None:
        stop = self.array.shape[0]
        if self.start < stop:
            self.array[self.start : stop] = self.block[: stop - self.start]
            self.start = stop


def _write_audio(path: Path, n_frames: int, group: Any, max_mismatch_ms: float) -> dict[str, Any]:
    """Read, check, resample, normalise and log-mel a sentence's audio; returns the manifest fields.

    Raises:
        InputError: unreadable, empty, non-finite or silent audio, or a length far from the frames'.
    """
    samples, info = read_wav(path)
    expected = round(info.sample_rate_hz * n_frames / MESH_FPS)  # 1600 samples per frame at 48 kHz
    mismatch_ms = (info.frames - expected) / info.sample_rate_hz * 1000.0
    if abs(mismatch_ms) > max_mismatch_ms:
        raise InputError(
            path,
            "audio length does not match the frames",
            expected=f"{expected} samples ({n_frames} frames at {MESH_FPS} fps)",
            actual=f"{info.frames} samples ({mismatch_ms:+.0f} ms)",
        )
    quality = _audio_quality(samples, info.sample_rate_hz)
    audio_16k = resample(samples, info.sample_rate_hz, SAMPLE_RATE_HZ)
    gain = loudness_gain(audio_16k, path=path)  # after resampling, as the reference normalises
    audio_16k *= np.float32(gain)
    needed = -(-SAMPLE_RATE_HZ * n_frames // MESH_FPS)
    mel = utterance_log_mel(np.pad(audio_16k, (0, max(0, needed - audio_16k.size))))
    create_array(group, "audio", audio_16k.astype(np.float32))
    create_array(group, "mel", mel)
    return {
        "has_audio": True,
        "audio_seconds": info.seconds,
        "audio_sample_rate_hz": info.sample_rate_hz,
        "audio_channels": info.channels,
        "audio_subtype": info.subtype,
        "alignment_error_ms": mismatch_ms,
        "loudness_gain": gain,
        "n_mel_frames": int(mel.shape[0]),
        **quality,
    }


def _audio_quality(samples: np.ndarray, sample_rate_hz: int) -> dict[str, float]:
    """Peak, clipping, loudness and silence of the original audio (before resampling and normalisation)."""
    magnitude = np.abs(samples)
    hop = max(1, sample_rate_hz // 50)  # 20 ms frames
    n = samples.size // hop
    frame_rms = (
        np.sqrt(np.mean(samples[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
        if n
        else np.sqrt(np.mean(samples.astype(np.float64) ** 2, keepdims=True))
    )
    loudest = max(float(frame_rms.max()), 1e-12)
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return {
        "audio_peak": float(magnitude.max()),
        "audio_clip_fraction": float(np.mean(magnitude >= 0.999)),
        "audio_rms_dbfs": 20 * np.log10(max(rms, 1e-12)),
        # Silence: 20-ms frames more than 40 dB below the loudest one.
        "audio_silence_fraction": float(np.mean(frame_rms < loudest * 0.01)),
    }


# --- manifests and provenance --------------------------------------------------------------------------------------


def _sorted(rejects: list[Reject]) -> list[Reject]:
    unique = {tuple(r.as_row().items()): r for r in rejects}
    return sorted(unique.values(), key=lambda r: (r.identity or "", r.sequence or "", r.stage, r.path, r.reason))


def _write_manifests(store: Path, rejects: list[Reject]) -> None:
    """Rebuild both manifests from what the store holds now (a stored sequence's record lives in its group)."""
    import polars as pl

    sequences_schema, rejects_schema = manifest_schemas()
    records = []
    stored_rejects: list[Reject] = []
    for meta in sorted((store / ARRAYS_DIR / "identities").glob("*/sequences/*/zarr.json"), key=str):
        attrs = json.loads(meta.read_text()).get("attributes", {}).get("facedata")
        if attrs:
            records.append(attrs["record"])
            stored_rejects += [Reject(**r) for r in attrs["rejects"]]
    sequences = pl.DataFrame(records, schema=sequences_schema).sort(["identity", "sequence"])
    rows = [r.as_row() for r in _sorted(rejects + stored_rejects)]
    write_parquet_atomic(sequences, store / MANIFESTS_DIR / "sequences.parquet")
    write_parquet_atomic(pl.DataFrame(rows, schema=rejects_schema), store / MANIFESTS_DIR / "rejects.parquet")


def _append_provenance(
    store: Path, raw: Path, options: IngestOptions, results: list[SequenceResult], seconds: float
) -> None:
    info = read_info(store)
    counts = {s: sum(r.status == s for r in results) for s in ("ingested", "skipped", "rejected")}
    info["runs"].append(
        {
            "command": "ingest",
            "tool": f"facedata {__version__}",
            "python": platform.python_version(),
            "time_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "raw": str(raw.resolve()),
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
            "sequences": counts,
            "seconds": round(seconds, 2),
        }
    )
    write_json_atomic(store / INFO_FILE, info)
