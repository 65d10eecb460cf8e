"""The store: a Zarr v3 hierarchy of per-sequence arrays indexed by Parquet manifests.

This module is the contract between ``facedata`` (which writes stores) and every reader (the ``meshtalk`` trainer,
statistics, notebooks). The layout, its version and the meaning of every array are documented in
``docs/store-format.md``; everything here can also be read with plain ``zarr.open`` and ``polars.read_parquet``.

    STORE/
      facedata.json               format name and version, settings, provenance of every run
      arrays.zarr/                zarr v3 root group
        topology/faces            (F, 3) int32   triangles over the stored vertices
        topology/source_index     (V,) int32     source (Multiface) index of each stored vertex
        identities/<identity>/template                       (V, 3) float32 mm, head-local
        identities/<identity>/sequences/<sequence>/vertices  (T, V, 3) float32 mm, sharded, memory-mappable
                                                 .../frame_number (T,) int32   source frame number per step
                                                 .../observed     (T,) bool    False where a dropped frame was
                                                                                interpolated
                                                 .../audio        (N,) float32 16 kHz, loudness-normalised
                                                 .../mel          (M, 80) float32 log-mel, 100 frames/s
      manifests/sequences.parquet  one row per stored sequence
      manifests/rejects.parquet    one row per rejected input (path, stage, reason, expected, actual)

Sequences are written into ``STORE/.staging/`` and renamed into place when complete, so a reader never sees a
half-written sequence, whatever happens to the writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import InputError, StoreError

FORMAT_NAME = "facedata-store"
FORMAT_VERSION = 1
ARRAYS_DIR = "arrays.zarr"
MANIFESTS_DIR = "manifests"
STAGING_DIR = ".staging"
INFO_FILE = "facedata.json"
LOCK_FILE = ".lock"
DEFAULT_SHARD_FRAMES = 256

REJECTS_COLUMNS = ("path", "stage", "reason", "expected", "actual", "identity", "sequence")


def manifest_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """Polars schemas of ``sequences.parquet`` and ``rejects.parquet``."""
    import polars as pl

    sequences = {
        "identity": pl.String,
        "entity": pl.String,
        "sequence": pl.String,
        "kind": pl.String,
        "n_frames": pl.Int64,
        "n_observed": pl.Int64,
        "first_frame": pl.Int64,
        "last_frame": pl.Int64,
        "step": pl.Int64,
        "n_dropped": pl.Int64,
        "dropped_frames": pl.List(pl.Int64),
        "vertex_source": pl.String,
        "has_audio": pl.Boolean,
        "audio_seconds": pl.Float64,
        "audio_sample_rate_hz": pl.Int64,
        "audio_channels": pl.Int64,
        "audio_subtype": pl.String,
        "alignment_error_ms": pl.Float64,
        "loudness_gain": pl.Float64,
        "audio_peak": pl.Float64,
        "audio_clip_fraction": pl.Float64,
        "audio_rms_dbfs": pl.Float64,
        "audio_silence_fraction": pl.Float64,
        "n_mel_frames": pl.Int64,
        "path": pl.String,
        "source_dir": pl.String,
        "source_fingerprint": pl.String,
    }
    rejects = {c: pl.String for c in REJECTS_COLUMNS}
    return sequences, rejects


def sequence_group_path(identity: str, sequence: str) -> str:
    """Path of a sequence's group inside ``arrays.zarr``."""
    return f"identities/{identity}/sequences/{sequence}"


def identity_group_path(identity: str) -> str:
    return f"identities/{identity}"


def store_path(root: str | Path | Any) -> Path:
    """A store location: a local ``Path``, or for an fsspec URL (``s3://bucket/store``, ``gs://...``,
    ``memory://...``) a ``universal_pathlib`` path with the same interface (``/``, ``exists``, ``read_text``,
    ``glob``, ``open``). Credentials and endpoints come from the usual environment (``AWS_*``, ...).

    Raises:
        StoreError: a URL without the ``scale`` extra installed.
    """
    if isinstance(root, Path) or not _is_url(str(root)):
        return root if isinstance(root, Path) else Path(root)
    if hasattr(root, "protocol"):  # already a universal path
        return root
    try:
        from upath import UPath
    except ImportError as e:
        raise StoreError(f"{root}: object-storage URLs need universal_pathlib and fsspec "
                         "(pip install 'facetalk[scale]')") from e
    return UPath(str(root))


def _is_url(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def is_remote(path: Any) -> bool:
    """Whether ``path`` is on object storage (no rename, no memory map, no file lock)."""
    return not isinstance(path, Path)


# --- writing -------------------------------------------------------------------------------------------------------


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a mix (an object PUT is atomic)."""
    if is_remote(path):
        path.write_bytes(data)
        return
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=1, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_parquet_atomic(frame: Any, path: Path) -> None:
    """Write a polars DataFrame to Parquet via a temporary file and a rename (one PUT on object storage)."""
    if is_remote(path):
        with path.open("wb") as f:
            frame.write_parquet(f)
        return
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)


def create_array(
    group: Any,
    name: str,
    data: np.ndarray | None = None,
    *,
    shape: tuple[int, ...] | None = None,
    dtype: Any = None,
    shard_frames: int | None = None,
) -> Any:
    """Create an uncompressed little-endian array chunked along the first axis only.

    With ``shard_frames`` the array uses the sharding codec with one inner chunk per frame and shards of
    ``shard_frames`` frames; otherwise it is one plain chunk. Either way each stored chunk or shard file holds the
    frames back to back in C order, so it can be memory-mapped (``memmap_array``).
    """
    shape = tuple(data.shape) if data is not None else tuple(shape or ())
    dtype = data.dtype if data is not None else np.dtype(dtype)
    fill = np.nan if np.dtype(dtype).kind == "f" else 0
    rest = shape[1:]
    kwargs: dict[str, Any] = dict(
        shape=shape, dtype=dtype, compressors=None, filters=None, fill_value=fill, config={"write_empty_chunks": True}
    )
    if shard_frames:
        kwargs.update(chunks=(1, *rest), shards=(max(1, min(shard_frames, shape[0])), *rest))
    else:
        kwargs.update(chunks=(max(1, shape[0]), *rest))
    array = group.create_array(name, **kwargs)
    if data is not None:
        array[...] = data
    return array


@dataclass
class StagedGroup:
    """A zarr group being written; ``commit`` makes it visible at ``arrays.zarr/<target>``.

    On a local disk the group is written under ``STORE/.staging`` and renamed into place: readers see the old
    version or the new one, never a mix. Object storage has no rename: the group is written at its final prefix
    (after the old version is removed), and what marks it complete is its record in the group's attributes, which
    callers write last (``_stored_record`` and the manifests ignore groups without one).
    """

    store_root: Path
    staging_dir: Path
    target: str  # group path inside arrays.zarr
    committed: bool = False

    @property
    def group(self) -> Any:
        import zarr

        return zarr.open_group(str(self.staging_dir), mode="a", zarr_format=3)

    def commit(self) -> None:
        """Move the finished group into place, replacing an older version of it."""
        if not is_remote(self.store_root):
            final = self.store_root / ARRAYS_DIR / self.target
            final.parent.mkdir(parents=True, exist_ok=True)
            replace_dir(self.staging_dir, final, self.store_root)
        self.committed = True

    def discard(self) -> None:
        if not self.committed:
            remove_tree(self.staging_dir)


def stage_group(store_root: Path, target: str, attributes: Mapping[str, Any] | None = None) -> StagedGroup:
    """Start writing a group that becomes visible at ``arrays.zarr/<target>`` on commit."""
    import zarr

    if is_remote(store_root):
        staging = store_root / ARRAYS_DIR / target
        remove_tree(staging)
    else:
        staging = store_root / STAGING_DIR / f"{uuid.uuid4().hex}"
        staging.parent.mkdir(parents=True, exist_ok=True)
    zarr.open_group(str(staging), mode="w", zarr_format=3, attributes=dict(attributes or {}))
    return StagedGroup(store_root=store_root, staging_dir=staging, target=target)


def write_array_atomic(store_root: Path, target: str, data: np.ndarray) -> None:
    """Write a small array to ``arrays.zarr/<target>``, replacing any older version in one rename (on object
    storage: the old objects are removed, then the new ones written)."""
    import zarr

    final = store_root / ARRAYS_DIR / target
    if is_remote(store_root):
        remove_tree(final)
        parent, name = target.rsplit("/", 1) if "/" in target else ("", target)
        create_array(zarr.open_group(str(store_root / ARRAYS_DIR / parent), mode="a", zarr_format=3), name, data)
        return
    staged = stage_group(store_root, target)
    try:
        create_array(staged.group, "array", data)
        final.parent.mkdir(parents=True, exist_ok=True)
        replace_dir(staged.staging_dir / "array", final, store_root)
    finally:
        staged.discard()


def replace_dir(src: Path, dst: Path, store_root: Path) -> None:
    """Move ``src`` to ``dst``; an existing ``dst`` is moved aside first and then deleted."""
    if dst.exists():
        trash = store_root / STAGING_DIR / f"replaced-{uuid.uuid4().hex[:8]}"
        os.rename(dst, trash)
        os.rename(src, dst)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(src, dst)


def remove_tree(path: Path) -> None:
    """Delete a folder (or an object-storage prefix) and everything in it, if it exists."""
    if is_remote(path):
        if path.fs.exists(path.path):
            path.fs.rm(path.path, recursive=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def ensure_groups(store_root: Path, path: str, attributes: Mapping[str, Any] | None = None) -> None:
    """Create the chain of zarr groups down to ``arrays.zarr/<path>`` (each group needs its zarr.json)."""
    import zarr

    root = store_root / ARRAYS_DIR
    parts = [p for p in path.split("/") if p]
    for depth in range(len(parts) + 1):
        sub = root.joinpath(*parts[:depth])
        if not (sub / "zarr.json").exists():
            attrs = dict(attributes or {}) if depth == len(parts) else {}
            zarr.open_group(str(sub), mode="a", zarr_format=3, attributes=attrs)


LOCK_MAX_AGE_S = 6 * 3600


@contextlib.contextmanager
def store_lock(store_root: Path) -> Iterator[None]:
    """Hold an exclusive lock on a store for the duration of a writing command.

    On a local disk this is an advisory file lock (released by the kernel when the process dies). Object storage
    has none: a lock object holding the writer's identity is created and deleted afterwards; one younger than six
    hours refuses a second writer, an older one is taken to be left by a crash and replaced.

    Raises:
        StoreError: another process holds the lock.
    """
    if is_remote(store_root):
        with _object_lock(store_root):
            yield
        return
    store_root.mkdir(parents=True, exist_ok=True)
    with open(store_root / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise StoreError(f"{store_root}: another facedata process is writing this store (lock {LOCK_FILE})") from e
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _object_lock(store_root: Path) -> Iterator[None]:
    import socket
    import time

    lock = store_root / LOCK_FILE
    if lock.exists():
        try:
            held = json.loads(lock.read_text())
        except (OSError, ValueError):
            held = {}
        age = time.time() - float(held.get("time", 0))
        if age < LOCK_MAX_AGE_S:
            raise StoreError(f"{store_root}: another facedata process is writing this store (lock object "
                             f"{LOCK_FILE} of {held.get('host')} pid {held.get('pid')}, {age:.0f} s old; delete it if "
                             "that process is gone)")
    token = uuid.uuid4().hex
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
                                "token": token}))
    try:
        yield
    finally:
        try:
            if json.loads(lock.read_text()).get("token") == token:
                lock.unlink()
        except (OSError, ValueError):
            pass


def clear_staging(store_root: Path) -> int:
    """Remove what a crashed writer left in ``.staging``. Returns the number of entries removed."""
    if is_remote(store_root):
        return 0  # no staging on object storage (see StagedGroup)
    staging = store_root / STAGING_DIR
    if not staging.is_dir():
        return 0
    entries = list(staging.iterdir())
    for entry in entries:
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
    return len(entries)


# --- reading -------------------------------------------------------------------------------------------------------


def read_info(store_root: str | Path) -> dict[str, Any]:
    """Read ``facedata.json`` and check the format version.

    Raises:
        StoreError: not a store, or a format version this package cannot read.
    """
    store_root = store_path(store_root)
    path = store_root / INFO_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise StoreError(f"{store_root}: not a facedata store (no {INFO_FILE}; run `facedata ingest` first)") from e
    except (OSError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: unreadable store description: {e}") from e
    if info.get("format") != FORMAT_NAME or info.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path}: store format (expected {FORMAT_NAME} v{FORMAT_VERSION}, "
            f"got {info.get('format')} v{info.get('format_version')})"
        )
    return info


class Store:
    """Read access to a store. Arrays come back as memory maps where the layout allows (no copies); a store on
    object storage (an fsspec URL) gives arrays that fetch the requested rows with one byte-range request.

    Example:
        >>> store = Store("out/store")
        >>> sequences = store.sequences()          # polars DataFrame (manifests/sequences.parquet)
        >>> seq = store.open_sequence(sequences.row(0, named=True)["path"])
        >>> seq.vertices[10:42]                     # (32, V, 3) float32 mm, read from the shard file
    """

    def __init__(self, root: str | Path):
        self.root = store_path(root)
        self.info = read_info(self.root)

    @property
    def arrays_root(self) -> Path:
        return self.root / ARRAYS_DIR

    def sequences(self) -> Any:
        """The sequences manifest as a polars DataFrame."""
        return self._manifest("sequences")

    def rejects(self) -> Any:
        return self._manifest("rejects")

    def splits(self) -> Any:
        """Named splits (``facedata split``): columns split, identity, sequence, subset."""
        return self._manifest("splits")

    def masks(self) -> dict[str, np.ndarray]:
        """Per-vertex region weights in [0, 1] (``facedata build-masks``): name -> (V,) float32.

        Raises:
            StoreError: the store has no masks yet.
        """
        group = self.arrays_root / "masks"
        if not (group / "zarr.json").exists():
            raise StoreError(f"{self.root}: no face-region masks (run `facedata build-masks --store {self.root}`)")
        return {p.name: np.array(memmap_array(p)) for p in sorted(group.iterdir()) if (p / "zarr.json").exists()}

    def vertex_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-vertex mean and standard deviation (V, 3) mm over the training frames (``facedata stats``).

        Raises:
            StoreError: the statistics have not been computed yet.
        """
        group = self.arrays_root / "stats"
        if not (group / "vertex_mean" / "zarr.json").exists():
            raise StoreError(f"{self.root}: no vertex statistics (run `facedata stats --store {self.root}`)")
        return np.array(memmap_array(group / "vertex_mean")), np.array(memmap_array(group / "vertex_std"))

    def _manifest(self, name: str) -> Any:
        import polars as pl

        path = self.root / MANIFESTS_DIR / f"{name}.parquet"
        if not path.exists():
            raise StoreError(f"{path}: manifest missing (re-run `facedata ingest` to rebuild it)")
        with path.open("rb") as f:
            return pl.read_parquet(f)

    def array(self, path: str) -> np.ndarray:
        """Memory-map (or read) the array at ``arrays.zarr/<path>``."""
        return memmap_array(self.arrays_root / path)

    def faces(self) -> np.ndarray:
        return np.array(self.array("topology/faces"))

    def template(self, identity: str) -> np.ndarray:
        return np.array(self.array(f"{identity_group_path(identity)}/template"))

    def open_sequence(self, path: str) -> SequenceArrays:
        """Open the arrays of the sequence stored at group ``path`` (the manifest's ``path`` column)."""
        group = self.arrays_root / path
        if not (group / "zarr.json").exists():
            raise StoreError(f"{group}: sequence listed in the manifest is missing from the store")
        present = {name for name in ("audio", "mel") if (group / name / "zarr.json").exists()}
        return SequenceArrays(
            vertices=memmap_array(group / "vertices"),
            frame_number=np.asarray(memmap_array(group / "frame_number")),
            observed=np.asarray(memmap_array(group / "observed")),
            audio=memmap_array(group / "audio") if "audio" in present else None,
            mel=memmap_array(group / "mel") if "mel" in present else None,
        )


@dataclass(frozen=True)
class SequenceArrays:
    """One sequence's arrays. ``vertices`` (T, V, 3), ``mel`` (M, 80) and ``audio`` (N,) are memory maps."""

    vertices: Any
    frame_number: np.ndarray
    observed: np.ndarray
    audio: Any | None
    mel: Any | None


class ShardedArray:
    """A read-only array made of consecutive memory-mapped pieces along axis 0 (one per shard)."""

    def __init__(self, pieces: list[np.ndarray]):
        self.pieces = pieces
        self.offsets = np.cumsum([0] + [p.shape[0] for p in pieces])
        self.shape = (int(self.offsets[-1]), *pieces[0].shape[1:])
        self.dtype = pieces[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.concatenate(self.pieces, axis=0)
        return out.astype(dtype) if dtype is not None else out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            first, rest = key[0], key[1:]
        else:
            first, rest = key, ()
        if isinstance(first, (int, np.integer)):
            i = int(first) + (self.shape[0] if first < 0 else 0)
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"index {first} out of range for {self.shape[0]} frames")
            s = int(np.searchsorted(self.offsets, i, side="right") - 1)
            return self.pieces[s][(i - self.offsets[s], *rest)]
        if isinstance(first, slice) and first.step in (None, 1):
            start, stop, _ = first.indices(self.shape[0])
            stop = max(start, stop)
            parts = []
            for s, piece in enumerate(self.pieces):
                lo, hi = self.offsets[s], self.offsets[s + 1]
                a, b = max(start, lo), min(stop, hi)
                if a < b:
                    parts.append(piece[a - lo : b - lo])
            block = parts[0] if len(parts) == 1 else np.concatenate(parts or [self.pieces[0][:0]], axis=0)
            return block[(slice(None), *rest)] if rest else block
        return np.asarray(self)[key]


def memmap_array(array_dir: str | Path) -> np.ndarray | ShardedArray:
    """Open a store array by memory-mapping its chunk or shard files, without zarr-python.

    Works for the layouts ``create_array`` writes: uncompressed, little-endian, chunked along axis 0 only, either
    plain chunks or the sharding codec with uncompressed inner chunks. The shard index is read once and checked
    to be contiguous. Other layouts fall back to reading with zarr-python.

    On object storage nothing can be memory-mapped: the same layout is read with one byte-range request per
    slice of rows (``RemoteRows``), the fallback read path of remote stores (its cost: docs/scaling.md).

    Raises:
        StoreError: the array is missing or its files do not match its metadata.
    """
    array_dir = store_path(array_dir)
    try:
        meta = json.loads((array_dir / "zarr.json").read_text())
    except FileNotFoundError as e:
        raise StoreError(f"{array_dir}: array missing") from e
    shape = tuple(meta["shape"])
    dtype = np.dtype(meta["data_type"]).newbyteorder("<")
    grid = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
    codecs = meta["codecs"]
    separator = meta.get("chunk_key_encoding", {}).get("configuration", {}).get("separator", "/")
    if grid[1:] != shape[1:] or meta.get("chunk_key_encoding", {}).get("name") != "default":
        return _read_with_zarr(array_dir)
    n_chunks = -(-shape[0] // grid[0]) if shape[0] else 0
    tail = separator.join(["0"] * (len(shape) - 1))

    def chunk_file(i: int) -> Path:
        key = separator.join([str(i), tail]) if tail else str(i)
        return array_dir / "c" / key if separator == "/" else array_dir / f"c{separator}{key}"

    if shape[0] == 0:
        return np.zeros(shape, dtype)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    pieces: list[np.ndarray] = []
    if _is_plain_bytes(codecs):
        for i in range(n_chunks):
            rows = min(grid[0], shape[0] - i * grid[0])
            pieces.append(_memmap(chunk_file(i), dtype, (rows, *shape[1:]), rows * row_bytes, array_dir))
    elif len(codecs) == 1 and codecs[0]["name"] == "sharding_indexed":
        conf = codecs[0]["configuration"]
        inner = tuple(conf["chunk_shape"])
        if (
            not _is_plain_bytes(conf["codecs"])
            or inner[1:] != shape[1:]
            or conf.get("index_location", "end") != "end"
            or [c["name"] for c in conf["index_codecs"]] not in (["bytes"], ["bytes", "crc32c"])
        ):
            return _read_with_zarr(array_dir)
        index_crc = 4 if len(conf["index_codecs"]) == 2 else 0
        inner_per_shard = grid[0] // inner[0]
        index_bytes = inner_per_shard * 16 + index_crc
        for i in range(n_chunks):
            rows = min(grid[0], shape[0] - i * grid[0])
            path = chunk_file(i)
            try:
                index = np.frombuffer(_read_tail(path, index_bytes)[: inner_per_shard * 16], dtype="<u8").reshape(-1, 2)
            except (OSError, ValueError) as e:
                raise StoreError(f"{path}: shard unreadable or truncated: {e}") from e
            n_inner = -(-rows // inner[0])
            chunk_bytes = inner[0] * row_bytes
            expected = np.arange(n_inner, dtype=np.uint64) * np.uint64(chunk_bytes)
            if not (np.array_equal(index[:n_inner, 0], expected) and (index[:n_inner, 1] == chunk_bytes).all()):
                return _read_with_zarr(array_dir)
            pieces.append(
                _memmap(path, dtype, (rows, *shape[1:]), n_inner * chunk_bytes + index_bytes, array_dir, exact=False)
            )
    else:
        return _read_with_zarr(array_dir)
    return pieces[0] if len(pieces) == 1 else ShardedArray(pieces)


def _is_plain_bytes(codecs: list[dict]) -> bool:
    return (
        len(codecs) == 1
        and codecs[0]["name"] == "bytes"
        and codecs[0].get("configuration", {}).get("endian", "little") == "little"
    )


def _memmap(
    path: Path, dtype: np.dtype, shape: tuple[int, ...], min_bytes: int, array_dir: Path, exact: bool = False
) -> np.ndarray | RemoteRows:
    try:
        size = path.fs.size(path.path) if is_remote(path) else path.stat().st_size
    except FileNotFoundError as e:
        raise StoreError(f"{path}: chunk file of {array_dir.name} missing") from e
    if size < min_bytes:
        raise StoreError(f"{path}: chunk file truncated (expected >= {min_bytes} bytes, got {size})")
    if is_remote(path):
        return RemoteRows(path, dtype, shape)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def _read_tail(path: Path, n_bytes: int) -> bytes:
    """The last ``n_bytes`` of a file or object (one range request on object storage)."""
    if is_remote(path):
        size = path.fs.size(path.path)
        if size < n_bytes:
            raise ValueError(f"{size} bytes, shorter than its index ({n_bytes})")
        return path.fs.cat_file(path.path, start=size - n_bytes, end=size)
    with open(path, "rb") as f:
        f.seek(-n_bytes, os.SEEK_END)
        return f.read(n_bytes)


class RemoteRows:
    """Rows of a chunk or shard object on object storage, fetched on indexing with one byte-range request.

    Behaves like the read-only memory map of the same file for what readers do: ``len``, ``shape``, ``dtype``,
    integer and contiguous-slice indexing along axis 0 (further axes applied after the fetch), ``np.asarray``.
    """

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple[int, ...]):
        self.path = path
        self.dtype = dtype
        self.shape = shape
        self.ndim = len(shape)
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(stop, self.shape[0])
        if stop <= start:
            return np.zeros((0, *self.shape[1:]), self.dtype)
        data = self.path.fs.cat_file(self.path.path, start=start * self.row_bytes, end=stop * self.row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape(stop - start, *self.shape[1:])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.rows(0, self.shape[0])  # read-only, like a read-only memory map
        if dtype is not None:
            return out.astype(dtype)
        return out.copy() if copy else out

    def __getitem__(self, key: Any) -> np.ndarray:
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if isinstance(first, (int, np.integer)):
            i = int(first) + (self.shape[0] if first < 0 else 0)
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"index {first} out of range for {self.shape[0]} rows")
            return self.rows(i, i + 1)[(0, *rest)]
        if isinstance(first, slice) and first.step in (None, 1):
            start, stop, _ = first.indices(self.shape[0])
            block = self.rows(start, stop)
            return block[(slice(None), *rest)] if rest else block
        return np.asarray(self)[key]


def _read_with_zarr(array_dir: Path) -> np.ndarray:
    import zarr

    return zarr.open_array(str(array_dir), mode="r")[...]


def require_vertex_count(vertices: np.ndarray, n_vertices: int, path: str | Path) -> None:
    """Raise InputError unless ``vertices`` is (n_vertices, 3)."""
    if vertices.ndim != 2 or vertices.shape != (n_vertices, 3):
        raise InputError(path, "vertex count", expected=f"({n_vertices}, 3)", actual=str(tuple(vertices.shape)))
