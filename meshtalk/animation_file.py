"""The animation's files: ``animation.npz``, written by ``meshtalk animate`` and read by ``meshtalk render`` and
anyone else, and the options of its MP4.

The npz is a zip of .npy members written uncompressed, so that the vertices, its only large member, can be mapped
or read frame by frame straight from the file. Members: ``vertices`` (T, V, 3) or (S, T, V, 3) float32 mm,
``labels`` (T, H) or (S, T, H) int16 (optional), ``faces`` (F, 3) int32, ``template`` (V, 3) float32 mm,
``fps`` int32, ``audio_seconds`` float64, ``options`` JSON text.

- ``write_animation`` writes one from arrays, ``AnimationWriter`` from frames that arrive in order (bounded memory);
- ``read_animation`` opens one: ``AnimationFile`` with the vertices memory-mapped, and ``frames(s)`` reading a
  sample's frames one at a time (``FileFrames``);
- ``VideoOptions``: size and camera of the MP4 that ``meshtalk.render.write_animation_video`` makes of a file.

This module is the contract between the two sides, as the store format is between facedata and meshtalk: it
imports neither ``meshtalk.animate`` nor ``meshtalk.render``.
"""

from __future__ import annotations

import json
import os
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedata.audio import MESH_FPS
from facedata.errors import InputError
from facedata.files import remove_stale_temporaries


@dataclass(frozen=True)
class VideoOptions:
    """Size and camera of the MP4; with S samples the video shows them side by side, one panel each."""

    width_px: int = 640
    height_px: int = 480
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    supersample: int = 1


DEFAULT_VIDEO = VideoOptions()


_COPY_BYTES = 16 << 20


def _small_members(*, labels: np.ndarray | None, faces: np.ndarray, template_mm: np.ndarray, audio_seconds: float,
                   options: dict[str, Any]) -> dict[str, np.ndarray]:
    members = {"faces": np.asarray(faces, np.int32), "template": np.asarray(template_mm, np.float32),
               "fps": np.asarray(MESH_FPS, np.int32), "audio_seconds": np.asarray(audio_seconds, np.float64),
               "options": np.asarray(json.dumps(options))}
    if labels is not None:
        members["labels"] = np.asarray(labels, np.int16)
    return members


def _write_npz(path: Path, vertices_header_shape: tuple[int, ...], write_vertices: Callable[[Any], None],
               small: dict[str, np.ndarray]) -> Path:
    """Write the npz atomically: ``write_vertices(file)`` writes the vertices' bytes after their .npy header.

    The zip is streamed into a hidden temporary beside ``path``, flushed to the disk and renamed over it
    (``meshtalk.checkpoint.atomic_output``): a reader sees the previous file or the new one, whole, and a failed
    write (a full disk: ``OSError`` with ``errno.ENOSPC``) leaves no temporary.
    """
    from meshtalk.checkpoint import atomic_output

    remove_stale_temporaries(path)
    with atomic_output(path) as out, \
            zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("vertices.npy", "w", force_zip64=True) as f:
            header = {"descr": np.dtype("<f4").str, "fortran_order": False, "shape": vertices_header_shape}
            np.lib.format.write_array_header_2_0(f, header)
            write_vertices(f)
        for name, value in small.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, value, allow_pickle=False)
    return path


def write_animation(path: str | Path, vertices_mm: np.ndarray, labels: np.ndarray | None, *, faces: np.ndarray,
                    template_mm: np.ndarray, audio_seconds: float, options: dict[str, Any]) -> Path:
    """Write an animation npz from arrays: ``vertices_mm`` (T, V, 3) or (S, T, V, 3) mm, ``labels`` (T, H) or
    (S, T, H) or None. Atomic (a temporary name, then a rename). ``AnimationWriter`` writes one from frames that
    arrive in order."""
    vertices = np.asarray(vertices_mm, dtype=np.float32)

    def copy(f: Any) -> None:
        rows = vertices.reshape(-1, vertices.shape[-2] * 3)  # (S*T, V*3)
        step = max(1, _COPY_BYTES // max(1, rows.shape[1] * 4))
        for a in range(0, rows.shape[0], step):
            f.write(np.ascontiguousarray(rows[a : a + step]).tobytes())

    small = _small_members(labels=labels, faces=faces, template_mm=template_mm, audio_seconds=audio_seconds,
                           options=options)
    return _write_npz(Path(path), tuple(vertices.shape), copy, small)


class AnimationWriter:
    """Writes an animation npz from frames that arrive in order, in bounded memory.

    Each sample's frames go to its own scratch file as they come (plain sequential writes, which do not grow the
    process's memory the way a written memory map does); ``close`` copies them into the npz's vertices member in
    16 MB pieces and removes them. The labels, 32 bytes per frame and sample, are kept in memory.

    The scratch files are hidden beside the npz and carry the writer's pid (``.animation.npz.<pid>-<hex>-sK.tmp``):
    ``abort`` removes them (a full disk, an exception), and the next writer of the same file removes those of a
    killed process. ``write`` and ``close`` raise ``OSError`` (``errno.ENOSPC`` on a full disk); the npz under its
    name is then the previous one, untouched.
    """

    def __init__(self, path: str | Path, *, samples: int, n_frames: int, n_vertices: int, heads: int,
                 sample_axis: bool):
        self.path = Path(path)
        self.shape = (samples, n_frames, n_vertices, 3)
        self.sample_axis = sample_axis
        self.labels = np.zeros((samples, n_frames, heads), dtype=np.int16)
        self.frames_written = 0
        remove_stale_temporaries(self.path)
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._scratch = [self.path.with_name(f".{self.path.name}.{tag}-s{s}.tmp") for s in range(samples)]
        self._files: list[Any] = []
        try:
            for scratch in self._scratch:
                self._files.append(open(scratch, "wb"))  # closed by close() or abort()
        except BaseException:
            self.abort()
            raise

    def write(self, first: int, geometry: np.ndarray, labels: np.ndarray) -> None:
        """Frames [first, first + n): geometry S x n x V x 3 mm, labels S x n x H; ``first`` must continue."""
        if first != self.frames_written or geometry.shape[0] != self.shape[0]:
            raise ValueError(f"{self.path}: frames out of order (expected frame {self.frames_written} of "
                             f"{self.shape[0]} samples, got frame {first} of {geometry.shape[0]})")
        n = geometry.shape[1]
        for s, f in enumerate(self._files):
            f.write(np.ascontiguousarray(geometry[s], dtype=np.float32).tobytes())
        self.labels[:, first : first + n] = labels
        self.frames_written += n

    def close(self, *, faces: np.ndarray, template_mm: np.ndarray, audio_seconds: float,
              options: dict[str, Any]) -> Path:
        """Build the npz (atomically) and remove the scratch files."""
        if self.frames_written != self.shape[1]:
            raise ValueError(f"{self.path}: {self.frames_written} of {self.shape[1]} frames written")
        for f in self._files:
            f.close()

        def copy(out: Any) -> None:
            for scratch in self._scratch:
                with open(scratch, "rb") as f:
                    while chunk := f.read(_COPY_BYTES):
                        out.write(chunk)

        shape = self.shape if self.sample_axis else self.shape[1:]
        labels = self.labels if self.sample_axis else self.labels[0]
        small = _small_members(labels=labels, faces=faces, template_mm=template_mm, audio_seconds=audio_seconds,
                               options=options)
        try:
            return _write_npz(self.path, shape, copy, small)
        finally:
            self.abort()

    def abort(self) -> None:
        """Close and remove the scratch files (the npz is left as it was)."""
        for f in self._files:
            f.close()
        for scratch in self._scratch:
            scratch.unlink(missing_ok=True)


@dataclass(frozen=True)
class AnimationFile:
    """An ``animation.npz`` opened for reading.

    ``vertices`` is memory-mapped ((T, V, 3) or (S, T, V, 3) mm) for random access; ``frames(s)`` reads sample
    s's frames one at a time from the file instead, which is what a long video should use: pages of a memory map
    that has been read stay counted in the process's resident memory.
    """

    path: Path
    vertices: np.ndarray
    faces: np.ndarray
    template_mm: np.ndarray
    fps: int
    labels: np.ndarray | None
    options: dict[str, Any]
    data_offset: int | None  # byte offset of the vertices in the file; None when they could not be mapped

    @property
    def n_samples(self) -> int:
        return 1 if self.vertices.ndim == 3 else self.vertices.shape[0]

    @property
    def n_frames(self) -> int:
        return self.vertices.shape[-3]

    def frames(self, sample: int = 0) -> Any:
        """Sample ``sample``'s frames as a (T, V, 3) sequence read frame by frame (``frames[k]`` is a copy)."""
        if not 0 <= sample < self.n_samples:
            raise InputError(self.path, "sample index", expected=f"0..{self.n_samples - 1}", actual=sample)
        if self.data_offset is None:
            return self.vertices if self.vertices.ndim == 3 else self.vertices[sample]
        V = self.vertices.shape[-2]
        return FileFrames(self.path, self.data_offset + sample * self.n_frames * V * 12, self.n_frames, V)


class FileFrames:
    """(T, V, 3) float32 frames stored back to back in a file from ``offset``, read one per ``[k]`` (a copy)."""

    def __init__(self, path: Path, offset: int, n_frames: int, n_vertices: int):
        self.path, self.offset = path, offset
        self.shape = (n_frames, n_vertices, 3)
        self.frame_bytes = n_vertices * 12

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, k: int) -> np.ndarray:
        if not -self.shape[0] <= k < self.shape[0]:
            raise IndexError(f"frame {k} of {self.shape[0]}")
        k %= self.shape[0]
        with open(self.path, "rb") as f:
            f.seek(self.offset + k * self.frame_bytes)
            data = f.read(self.frame_bytes)
        return np.frombuffer(data, dtype="<f4").reshape(self.shape[1:]).copy()


def read_animation(path: str | Path) -> AnimationFile:
    """Open an animation npz (``write_animation``, ``AnimationWriter``); the vertices are mapped, not read.

    Raises:
        InputError: not a readable npz, a missing member, or vertices of the wrong shape.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("vertices", "faces", "template", "fps") if k not in data.files]
            if missing:
                raise InputError(path, "not an animation file", expected="vertices, faces, template, fps",
                                 actual=f"members {sorted(data.files)}")
            small = {k: data[k] for k in data.files if k != "vertices"}
        vertices, offset = _map_npz_member(path, "vertices.npy")
    except InputError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise InputError(path, f"unreadable animation file: {e}".splitlines()[0]) from e
    V = small["template"].shape[0]
    if vertices.ndim not in (3, 4) or vertices.shape[-2:] != (V, 3):
        raise InputError(path, "vertices shape", expected=f"(T, {V}, 3) or (S, T, {V}, 3)", actual=vertices.shape)
    return AnimationFile(path=path, vertices=vertices, faces=small["faces"], template_mm=small["template"],
                         fps=int(small["fps"]), labels=small.get("labels"),
                         options=json.loads(str(small["options"])) if "options" in small else {},
                         data_offset=offset)


def _map_npz_member(path: Path, member: str) -> tuple[np.ndarray, int | None]:
    """Memory-map an uncompressed little-endian float32 .npy member of a zip, with its data's byte offset; load it
    when it cannot be mapped (compressed, another type)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the local file header: the lengths of its name and extra field precede the data
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        f.seek(info.header_offset + 30 + name_len + extra_len)
        if info.compress_type == zipfile.ZIP_STORED:
            version = np.lib.format.read_magic(f)
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version in readers:
                shape, fortran, dtype = readers[version](f)
                offset = f.tell()
                if not fortran and dtype == np.dtype("<f4"):
                    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape), offset
    with np.load(path, allow_pickle=False) as data:
        return data[member.removesuffix(".npy")], None
