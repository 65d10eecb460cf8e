"""The writing side of a store: files replaced atomically, groups staged and renamed into place, the writer's lock.

Sequences are written into ``STORE/.staging/`` and renamed into place when complete, so a reader never sees a
half-written sequence, whatever happens to the writer. Object storage has no rename: see ``StagedGroup``. The
file-level guarantees (whole files, folders swapped in one step, a full disk as one line) are ``facedata.files``.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import StoreError
from facedata.files import exchange_dirs, process_alive, write_new_file
from facedata.files import write_bytes_atomic as _write_file_atomic
from facedata.store.layout import ARRAYS_DIR, LOCK_FILE, MANIFESTS_DIR, STAGING_DIR, is_remote


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a mix (an object PUT is atomic); no
    temporary file is left behind whatever fails.

    Raises:
        OSError: the write failed (``errno.ENOSPC`` on a full disk); the old file is untouched.
    """
    _write_file_atomic(path, data)


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
    """Write a polars DataFrame to Parquet whole: encoded in memory (manifests are small), then one atomic file
    write (one PUT on object storage), so that a full disk or a kill never leaves part of a manifest."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    write_bytes_atomic(path, buffer.getvalue())


# --- zarr v3 groups and arrays, written without zarr-python ---------------------------------------------------
# The store's few layouts (docs/store-format.md) are written here directly: zarr-python's import alone (0.25 s)
# outweighed the whole work of a small ingest. tests/facedata/test_store.py checks that every file written here is
# byte for byte what zarr-python writes for the same array, and that zarr-python reads it back.

_NO_INDEX = 2**64 - 1  # a shard index entry of an inner chunk that is not stored (past the array's end)


class GroupAttributes:
    """A group's attributes, in its zarr.json: ``get`` one, ``put`` all (replacing the old ones, in one write)."""

    def __init__(self, group_dir: Path):
        self._meta = group_dir / "zarr.json"

    def asdict(self) -> dict[str, Any]:
        return dict(json.loads(self._meta.read_text()).get("attributes", {}))

    def get(self, key: str, default: Any = None) -> Any:
        return self.asdict().get(key, default)

    def put(self, attributes: Mapping[str, Any]) -> None:
        write_bytes_atomic(self._meta, _metadata_bytes(_group_metadata(attributes)))


@dataclass(frozen=True)
class Group:
    """A zarr v3 group: a folder (or object-storage prefix) with its zarr.json."""

    path: Path

    @property
    def attrs(self) -> GroupAttributes:
        return GroupAttributes(self.path)


def open_group(path: Path, attributes: Mapping[str, Any] | None = None, *, replace: bool = False) -> Group:
    """The group at ``path``, its zarr.json written if it has none (or, with ``replace``, in any case)."""
    if replace or not (path / "zarr.json").exists():
        write_new_file(path / "zarr.json", _metadata_bytes(_group_metadata(attributes or {})))
    return Group(path)


@dataclass(frozen=True)
class Array:
    """An array ``create_array`` made; rows are written whole chunks (or shards) at a time: ``array[...] = data``
    or ``array[start:stop] = rows`` for one chunk's rows."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    chunk_rows: int  # rows per chunk file (a shard, for a sharded array)
    sharded: bool

    def __setitem__(self, key: Any, value: Any) -> None:
        n = self.shape[0]
        if key is Ellipsis or key == slice(None):
            start, stop = 0, n
        elif isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(n)
        else:
            raise TypeError(f"{self.path}: rows are written as whole chunks, not by {key!r}")
        data = np.ascontiguousarray(value, dtype=self.dtype.newbyteorder("<"))
        if data.shape != (stop - start, *self.shape[1:]):
            raise ValueError(f"{self.path}: rows {start}:{stop} (expected shape {(stop - start, *self.shape[1:])}, "
                             f"got {data.shape})")
        if start % self.chunk_rows or (stop != n and stop % self.chunk_rows):
            raise ValueError(f"{self.path}: rows {start}:{stop} are not whole chunks of {self.chunk_rows} rows")
        for first in range(start, stop, self.chunk_rows):
            rows = data[first - start : min(first + self.chunk_rows, stop) - start]
            write_new_file(self._chunk_file(first // self.chunk_rows), self._encode(rows))

    def _chunk_file(self, i: int) -> Path:
        return self.path / "c" / "/".join([str(i)] + ["0"] * (len(self.shape) - 1))

    def _encode(self, rows: np.ndarray) -> bytes:
        if not self.sharded:
            return rows.tobytes()
        # One inner chunk per row, back to back, then the index: (offset, length) per inner chunk, its crc32c last.
        import google_crc32c  # zarr's own dependency for the crc32c codec, light to load

        row_bytes = rows[0].nbytes if len(rows) else 0
        index = np.full((self.chunk_rows, 2), _NO_INDEX, dtype="<u8")
        index[: len(rows), 0] = np.arange(len(rows), dtype=np.uint64) * np.uint64(row_bytes)
        index[: len(rows), 1] = row_bytes
        crc = google_crc32c.value(index.tobytes())
        return b"".join([rows.tobytes(), index.tobytes(), crc.to_bytes(4, "little")])


def create_array(
    group: Group,
    name: str,
    data: np.ndarray | None = None,
    *,
    shape: tuple[int, ...] | None = None,
    dtype: Any = None,
    shard_frames: int | None = None,
) -> Array:
    """Create an uncompressed little-endian array chunked along the first axis only.

    With ``shard_frames`` the array uses the sharding codec with one inner chunk per frame and shards of
    ``shard_frames`` frames; otherwise it is one plain chunk. Either way each stored chunk or shard file holds the
    frames back to back in C order, so it can be memory-mapped (``memmap_array``). Every chunk is stored, even one
    that holds only the fill value (NaN for floats, else 0).
    """
    shape = tuple(int(n) for n in (data.shape if data is not None else shape or ()))
    dtype = np.dtype(data.dtype if data is not None else dtype)
    if not shape or dtype.kind not in "biuf":
        raise TypeError(f"{group.path / name}: the store's arrays (expected at least one axis and a bool, integer or "
                        f"float type, got shape {shape} of {dtype})")
    rest = shape[1:]
    rows = max(1, min(shard_frames, shape[0])) if shard_frames else max(1, shape[0])
    item: dict[str, Any] = {"name": "bytes"} if dtype.itemsize == 1 else {"name": "bytes", "configuration":
                                                                           {"endian": "little"}}
    codecs = [item]
    if shard_frames:
        codecs = [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": [1, *rest], "codecs": codecs,
            "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
            "index_location": "end"}}]
    fill: Any = "NaN" if dtype.kind == "f" else (False if dtype.kind == "b" else 0)
    meta = {
        "shape": list(shape),
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [rows, *rest]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": fill,
        "codecs": codecs,
        "attributes": {},
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }
    array = Array(group.path / name, shape, dtype, rows, bool(shard_frames))
    write_new_file(array.path / "zarr.json", _metadata_bytes(meta))
    if data is not None:
        array[...] = data
    return array


def _group_metadata(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {"attributes": dict(attributes), "zarr_format": 3, "node_type": "group"}


def _metadata_bytes(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, indent=2, default=_json_default).encode()


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
    def group(self) -> Group:
        return Group(self.staging_dir)

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
    if is_remote(store_root):
        staging = store_root / ARRAYS_DIR / target
        remove_tree(staging)
    else:
        staging = store_root / STAGING_DIR / f"{uuid.uuid4().hex}"
    open_group(staging, attributes, replace=True)
    return StagedGroup(store_root=store_root, staging_dir=staging, target=target)


def write_array_atomic(store_root: Path, target: str, data: np.ndarray) -> None:
    """Write a small array to ``arrays.zarr/<target>``, replacing any older version in one rename (on object
    storage: the old objects are removed, then the new ones written)."""
    final = store_root / ARRAYS_DIR / target
    if is_remote(store_root):
        remove_tree(final)
        parent, name = target.rsplit("/", 1) if "/" in target else ("", target)
        create_array(open_group(store_root / ARRAYS_DIR / parent), name, data)
        return
    staged = stage_group(store_root, target)
    try:
        create_array(staged.group, "array", data)
        final.parent.mkdir(parents=True, exist_ok=True)
        replace_dir(staged.staging_dir / "array", final, store_root)
    finally:
        staged.discard()


def replace_dir(src: Path, dst: Path, store_root: Path) -> None:
    """Move ``src`` to ``dst``, replacing an existing ``dst`` in one step where the system can swap two folders
    (Linux), so that a reader or a kill never finds ``dst`` missing; elsewhere ``dst`` is moved aside first. The old
    version goes to ``.staging`` and is deleted (a kill before that leaves it there for ``clear_staging``)."""
    if dst.exists():
        if exchange_dirs(src, dst):
            shutil.rmtree(src, ignore_errors=True)
            return
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


def ensure_groups(store_root: Path, path: str, attributes: Mapping[str, Any] | None = None) -> Group:
    """Create the chain of zarr groups down to ``arrays.zarr/<path>`` (each group needs its zarr.json); the
    attributes are those of a group created last. Returns that group."""
    root = store_root / ARRAYS_DIR
    parts = [p for p in path.split("/") if p]
    for depth in range(len(parts) + 1):
        sub = root.joinpath(*parts[:depth])
        if not (sub / "zarr.json").exists():
            attrs = dict(attributes or {}) if depth == len(parts) else {}
            if not is_remote(sub):
                sub.mkdir(parents=True, exist_ok=True)
            Group(sub).attrs.put(attrs)  # in place, so written whole (write_bytes_atomic)
    return Group(root.joinpath(*parts))


LOCK_MAX_AGE_S = 6 * 3600


@contextlib.contextmanager
def store_lock(store_root: Path) -> Iterator[None]:
    """Hold an exclusive lock on a store for the duration of a writing command.

    On a local disk this is an advisory file lock on ``.lock``, released by the kernel when the process ends in any
    way (SIGKILL included): the file stays, but no dead process can hold it. Whoever takes the lock first removes
    what a killed writer left in ``.staging`` (no other writer can be at work then).

    Object storage has no lock: a lock object holding the writer's host, pid and time is created and deleted
    afterwards. It refuses a second writer unless it is stale: written on this host by a process that no longer
    exists, or older than six hours (a writer elsewhere that crashed).

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
            clear_staging(store_root)
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
        if age < LOCK_MAX_AGE_S and not _dead_writer(held, socket.gethostname()):
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


def _dead_writer(held: Mapping[str, Any], host: str) -> bool:
    """Whether a lock object was left by a process of this host that is gone (a kill, a crash)."""
    return held.get("host") == host and isinstance(held.get("pid"), int) and not process_alive(held["pid"])


# Where a writer holding the lock writes single files outside .staging: the store's description and manifests
# (``write_bytes_atomic``'s ``.tmp``) and the group metadata that zarr writes in place (its ``.partial``).
_IN_PLACE_TEMPORARIES = (".*.tmp", f"{MANIFESTS_DIR}/.*.tmp", f"{ARRAYS_DIR}/*.partial", f"{ARRAYS_DIR}/*/*.partial",
                         f"{ARRAYS_DIR}/identities/*/*.partial", f"{ARRAYS_DIR}/identities/*/sequences/*.partial")


def clear_staging(store_root: Path) -> int:
    """Remove what a killed or stopped writer left: everything in ``.staging`` and the temporaries of the files it
    was replacing in place. Call it under the store lock (no other writer is then at work). Returns the number of
    entries removed."""
    if is_remote(store_root):
        return 0  # no staging on object storage (see StagedGroup)
    leftovers = [p for pattern in _IN_PLACE_TEMPORARIES for p in store_root.glob(pattern)]
    for path in leftovers:
        path.unlink(missing_ok=True)
    staging = store_root / STAGING_DIR
    if not staging.is_dir():
        return len(leftovers)
    entries = list(staging.iterdir())
    for entry in entries:
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
    return len(leftovers) + len(entries)


RESERVE_FILE = "reserve"  # in .staging: room kept for the manifests while a run fills the disk


def reserve_room(store_root: Path, n_bytes: int) -> bool:
    """Keep ``n_bytes`` of the store's disk in ``.staging/reserve`` until ``clear_staging`` frees them (for the small
    files a run must still write when the disk is full). Returns False where the room is not there, or on object
    storage (nothing to reserve)."""
    from facedata.files import reserve_space

    if is_remote(store_root):
        return False
    staging = store_root / STAGING_DIR
    staging.mkdir(parents=True, exist_ok=True)
    return reserve_space(staging / RESERVE_FILE, n_bytes)
