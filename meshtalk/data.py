"""Training windows from a facedata store, read through memory maps of its shard files.

A window is T consecutive mesh frames of one sentence with audio, with the 101 mel frames of each mesh frame,
the identity's template and the sequence's identity. Nothing of the corpus is copied into memory: each window is
copied out of the memory-mapped shard files (``facedata.store.memmap_array``) and the mapped pages are released
again, so the resident memory of a training run does not grow with the store.

Window ``i`` of a run is drawn from a random generator seeded by ``(seed, i)``: the data order is a function of
the sample counter alone, identical for any number of DataLoader workers, and a resumed run continues it by
starting the counter where it stopped (``WindowSampler(start=step * batch_size)``).
"""

from __future__ import annotations

import mmap
import resource
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from facedata.audio import mel_window_range, mel_windows_from_block
from facedata.errors import StoreError
from facedata.store import ShardedArray, Store

PAGE = mmap.PAGESIZE


@dataclass(frozen=True)
class SequenceEntry:
    """One sentence a window can come from."""

    identity: str
    sequence: str
    path: str
    n_frames: int
    identity_index: int


def select_sequences(store: Store, *, split: str | None = None, subset: str = "train",
                     identities: list[str] | None = None, min_frames: int = 1) -> list[SequenceEntry]:
    """Sentences with audio, optionally those of one subset of a named split (``manifests/splits.parquet``).

    Identity indices follow the sorted identity names of the whole store, so they are stable across subsets.

    Raises:
        StoreError: the split or subset does not exist, or nothing is selected.
    """
    import polars as pl

    sequences = store.sequences()
    all_identities = sorted(sequences["identity"].unique().to_list())
    chosen = sequences.filter(pl.col("has_audio") & (pl.col("n_frames") >= min_frames))
    if split is not None:
        splits = store.splits()
        names = splits["split"].unique().to_list()
        if split not in names:
            raise StoreError(f"{store.root}: no split named {split!r} (expected one of {sorted(names)}); "
                             "run `facedata split` first")
        members = splits.filter((pl.col("split") == split) & (pl.col("subset") == subset))
        chosen = chosen.join(members.select("identity", "sequence"), on=["identity", "sequence"], how="semi")
    if identities is not None:
        chosen = chosen.filter(pl.col("identity").is_in(identities))
    if chosen.height == 0:
        raise StoreError(f"{store.root}: no sentence with audio and >= {min_frames} frames in "
                         f"{f'split {split!r}, subset {subset!r}' if split else 'the store'}")
    return [SequenceEntry(r["identity"], r["sequence"], r["path"], r["n_frames"], all_identities.index(r["identity"]))
            for r in chosen.sort(["identity", "sequence"]).iter_rows(named=True)]


class _MappedArrays:
    """A small LRU of open memory maps (each one holds a file descriptor)."""

    def __init__(self, store_root: Path, capacity: int = 256):
        self.root = store_root
        self.capacity = capacity
        self.cache: OrderedDict[str, Any] = OrderedDict()

    def get(self, path: str) -> Any:
        if path in self.cache:
            self.cache.move_to_end(path)
            return self.cache[path]
        from facedata.store import ARRAYS_DIR, memmap_array

        array = memmap_array(self.root / ARRAYS_DIR / path)
        self.cache[path] = array
        if len(self.cache) > self.capacity:
            self.cache.popitem(last=False)
        return array


def read_rows(array: Any, start: int, stop: int) -> np.ndarray:
    """Copy rows [start, stop) out of a memory map and release the mapped pages (resident memory stays flat)."""
    out = np.array(array[start:stop])
    for piece, lo, hi in _mapped_pieces(array, start, stop):
        base = getattr(piece, "_mmap", None)
        if base is None:
            continue
        row_bytes = piece.strides[0]
        first = (lo * row_bytes + piece.offset) // PAGE * PAGE
        last = hi * row_bytes + piece.offset
        try:
            base.madvise(mmap.MADV_DONTNEED, first, last - first)
        except (OSError, ValueError, AttributeError):
            pass  # advisory only
    return out


def _mapped_pieces(array: Any, start: int, stop: int) -> list[tuple[np.memmap, int, int]]:
    if isinstance(array, np.memmap):
        return [(array, start, stop)]
    if isinstance(array, ShardedArray):
        pieces = []
        for s, piece in enumerate(array.pieces):
            lo, hi = max(start, array.offsets[s]), min(stop, array.offsets[s + 1])
            if lo < hi and isinstance(piece, np.memmap):
                pieces.append((piece, lo - array.offsets[s], hi - array.offsets[s]))
        return pieces
    return []


class WindowDataset(Dataset):
    """Random windows of ``frames`` mesh frames; item ``i`` is always the same window for a given seed.

    Items are dicts of tensors:
        vertices (T, V, 3) float32 mm; mel (T, 80, 101) float32 log-mel; template (V, 3) float32 mm;
        identity () int64; sequence () int64 (index into ``entries``); start () int64 (first frame).
    """

    def __init__(self, store: Store | str | Path, entries: list[SequenceEntry], *, frames: int, seed: int = 0,
                 epoch_size: int = 1 << 40):
        self.store = store if isinstance(store, Store) else Store(store)
        self.entries = [e for e in entries if e.n_frames >= frames]
        if not self.entries:
            raise StoreError(f"{self.store.root}: no sentence has {frames} frames (window length)")
        self.frames = frames
        self.seed = seed
        self.epoch_size = epoch_size
        counts = np.array([e.n_frames - frames + 1 for e in self.entries], dtype=np.float64)
        self.cumulative = np.cumsum(counts) / counts.sum()  # windows are uniform over all valid start frames
        self._arrays: _MappedArrays | None = None
        self._templates: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self.epoch_size

    def window(self, index: int) -> tuple[int, int]:
        """(entry index, first frame) of window ``index``."""
        rng = np.random.default_rng([self.seed, index])
        entry = int(np.searchsorted(self.cumulative, rng.random(), side="right"))
        entry = min(entry, len(self.entries) - 1)
        start = int(rng.integers(0, self.entries[entry].n_frames - self.frames + 1))
        return entry, start

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        entry_index, start = self.window(int(index))
        return self.read(entry_index, start, self.frames)

    def read(self, entry_index: int, start: int, frames: int) -> dict[str, torch.Tensor]:
        """The window of ``frames`` frames from ``start`` of entry ``entry_index``."""
        if self._arrays is None:  # opened lazily, once per DataLoader worker
            self._arrays = _MappedArrays(self.store.root)
            raise_open_file_limit()
        e = self.entries[entry_index]
        arrays = self._arrays
        vertices = read_rows(arrays.get(f"{e.path}/vertices"), start, start + frames)  # (T, V, 3)
        lo, hi = mel_window_range(start, frames)
        mel = mel_windows_from_block(read_rows(arrays.get(f"{e.path}/mel"), lo, hi), lo, start, frames)
        if e.identity not in self._templates:
            self._templates[e.identity] = self.store.template(e.identity)
        return {
            "vertices": torch.from_numpy(vertices),
            "mel": torch.from_numpy(mel),
            "template": torch.from_numpy(self._templates[e.identity]),
            "identity": torch.tensor(e.identity_index),
            "sequence": torch.tensor(entry_index),
            "start": torch.tensor(start),
        }


class WindowSampler(Sampler[int]):
    """Sample indices ``start, start + 1, ...`` (``length`` of them): the data order of a run is its counter."""

    def __init__(self, start: int = 0, length: int = 1 << 40):
        self.start = start
        self.length = length

    def __iter__(self):
        return iter(range(self.start, self.start + self.length))

    def __len__(self) -> int:
        return self.length


def raise_open_file_limit() -> None:
    """Lift the soft limit on open files to the hard limit: every memory map keeps a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
