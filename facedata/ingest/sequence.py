"""The per-sequence work of an ingest (runs in worker processes): read and validate every frame (``.bin`` when
present and valid, else the OBJ, converted from world coordinates when needed), keep the vertex set, put the frames
on the uniform 30 fps grid of their frame numbers (dropped frames interpolated and flagged), write them shard by
shard into a staging group, then read, check, resample, normalise and log-mel the audio. The group is renamed into
place only when complete; bad input becomes rejects, never an exception.
"""

from __future__ import annotations

import itertools
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from facedata.audio import (
    MESH_FPS,
    SAMPLE_RATE_HZ,
    loudness_gain,
    read_wav,
    resample,
    utterance_log_mel,
)
from facedata.discover import FrameFiles, Reject, SequenceSource
from facedata.errors import InputError
from facedata.files import disk_full_error, is_disk_full, reporting_disk_full
from facedata.ingest.plan import SequenceResult, SequenceTask, sequence_bytes
from facedata.meshio import check_finite, read_bin, read_obj_vertices, read_transform
from facedata.store import create_array, sequence_group_path, stage_group

# Head-local coordinates put the origin near the head centre; world coordinates put the head about a metre from
# the capture rig's origin. A frame whose centroid is this far out is taken to be in world coordinates.
WORLD_CENTROID_MM = 400.0


def ingest_sequence(task: SequenceTask, *, obj_scanner: str = "compiled", read_threads: int = 1) -> SequenceResult:
    """Ingest one sequence into the store; never raises for bad input (it becomes rejects).

    Args:
        obj_scanner: how OBJ frames are read (``facedata.meshio.read_obj``'s ``scanner``).
        read_threads: threads reading frames ahead of the writer (the scanners release the GIL).

    Raises:
        DiskFullError: the disk is full (the run must stop; nothing stored before is touched).
    """
    started = time.perf_counter()
    seq = task.source
    rejects: list[Reject] = []
    room = sequence_bytes(seq, task.vertex_set.n_vertices, task.shard_frames)
    with reporting_disk_full(task.store_root, f"{seq.identity}/{seq.name}", expected_bytes=room,
                             kept="stored sequences are intact"):
        staged = stage_group(task.store_root, sequence_group_path(seq.identity, seq.name))
    try:
        record = _write_sequence(task, staged.group, rejects, obj_scanner, read_threads)
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
        if is_disk_full(e):
            raise disk_full_error(task.store_root, f"{seq.identity}/{seq.name}", expected_bytes=room,
                                  kept="stored sequences are intact") from e
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


FrameRead = tuple[tuple[np.ndarray, str] | None, list[Reject]]  # (vertices and their file kind, or None; rejects)

# Frames read by one call in the middle of a sequence: polars' CSV reader pays its fixed cost once per call
# (``facedata.meshio.read_obj_vertices``), and 16 frames of 7306 vertices hold 1.4 MB in memory.
READ_BATCH = 16


def read_frame(
    frame: FrameFiles, n_source: int, rejects: list[Reject], identity: str, sequence: str, *,
    obj_scanner: str = "compiled",
) -> tuple[np.ndarray, str] | None:
    """One frame's (n_source, 3) float32 head-local vertices and the file kind they came from ("bin", "obj" or
    "obj-world"), or None (with rejects) if no file of the frame is usable. ``obj_scanner``: see ``read_obj``."""
    ((read, own),) = read_frames([frame], n_source, identity, sequence, obj_scanner=obj_scanner)
    rejects += own
    return read


def read_frames(
    frames: list[FrameFiles], n_source: int, identity: str, sequence: str, *, obj_scanner: str = "compiled",
) -> list[FrameRead]:
    """``read_frame`` of each frame, with its own rejects: the .bin when it is valid, else the OBJ; the OBJ files
    are read together (``read_obj_vertices``)."""
    out: list[FrameRead] = []
    for frame in frames:
        own: list[Reject] = []
        if frame.bin is not None:
            try:
                out.append(((read_bin(frame.bin, n_source), "bin"), own))
                continue
            except InputError as e:
                own.append(Reject.from_error(e, "frame", identity, sequence))
        out.append((None, own))
    need = [i for i, (read, _) in enumerate(out) if read is None and frames[i].obj is not None]
    objs = read_obj_vertices([frames[i].obj for i in need], scanner=obj_scanner)  # type: ignore[misc]
    for i, vertices in zip(need, objs, strict=True):
        try:
            out[i] = (_head_local(vertices, frames[i], n_source), out[i][1])
        except InputError as e:
            out[i][1].append(Reject.from_error(e, "frame", identity, sequence))
    return out


def _head_local(vertices: np.ndarray | InputError, frame: FrameFiles, n_source: int) -> tuple[np.ndarray, str]:
    """An OBJ frame's vertices checked and in head-local coordinates, with their file kind.

    Raises:
        InputError: the OBJ was unreadable (``vertices`` is its error), has another vertex count or non-finite
            values, or is in world coordinates without a usable transform.
    """
    if isinstance(vertices, InputError):
        raise vertices
    if vertices.shape[0] != n_source:
        raise InputError(frame.obj or "", "vertex count", expected=n_source, actual=vertices.shape[0])
    check_finite(vertices, frame.obj or "")
    if np.linalg.norm(vertices.mean(axis=0)) < WORLD_CENTROID_MM:
        return vertices, "obj"
    return _world_to_head_local(vertices, frame), "obj-world"


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


def _write_sequence(
    task: SequenceTask, group: Any, rejects: list[Reject], obj_scanner: str, read_threads: int
) -> dict[str, Any] | None:
    """Write vertices (and audio) of one sequence into ``group``; returns its manifest record, or None if no
    frame was readable."""
    seq = task.source
    keep, n_source = task.vertex_set.keep, task.vertex_set.n_source
    frames = seq.frames

    def read_batch(batch: list[FrameFiles]) -> list[FrameRead]:
        return read_frames(batch, n_source, seq.identity, seq.name, obj_scanner=obj_scanner)

    def read(frame: FrameFiles) -> tuple[np.ndarray, str] | None:
        ((frame_read, frame_rejects),) = read_batch([frame])
        rejects.extend(frame_rejects)
        return frame_read

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
        middle = frames[first[0] + 1 : last[0]]
        batches = [middle[i : i + READ_BATCH] for i in range(0, len(middle), READ_BATCH)]
        for batch, reads in zip(batches, _read_ahead(read_batch, batches, read_threads), strict=True):
            for frame, (r, frame_rejects) in zip(batch, reads, strict=True):
                rejects.extend(frame_rejects)  # in frame order, whatever order the threads finished in
                if r is not None:
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


def _read_ahead(read: Callable[[Any], Any], items: Iterable[Any], threads: int) -> Iterator[Any]:
    """``read(item)`` of every item (a batch of frames), in order, computed on ``threads`` threads at most two items
    each ahead of the consumer (memory stays bounded whatever the sequence's length)."""
    if threads <= 1:
        yield from map(read, items)
        return
    todo = iter(items)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending = deque(pool.submit(read, item) for item in itertools.islice(todo, 2 * threads))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(todo, 1):
                pending.append(pool.submit(read, item))
            yield result


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
