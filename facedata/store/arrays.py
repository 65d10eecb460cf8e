"""Store arrays opened without zarr-python: memory maps of the chunk and shard files, byte ranges on object storage.

The layouts ``facedata.store.write.create_array`` writes (uncompressed, little-endian, chunked along axis 0 only)
are read here directly; any other layout falls back to zarr-python.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from facedata.errors import StoreError
from facedata.store.layout import is_remote, store_path


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
