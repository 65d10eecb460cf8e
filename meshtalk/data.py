"""Training windows from a facedata store, read through memory maps of its shard files.

A window is T consecutive mesh frames of one sentence with audio, with the 101 mel frames of each mesh frame,
the identity's template and the sequence's identity. Nothing of the corpus is copied into memory: each window is
copied out of the memory-mapped shard files (``facedata.store.memmap_array``) and the mapped pages are released
again, so the resident memory of a training run does not grow with the store.

Window ``i`` of a run is drawn from a random generator seeded by ``(seed, i)``: the data order is a function of
the sample counter alone, identical for any number of DataLoader workers, and a resumed run continues it by
starting the counter where it stopped (``WindowSampler(start=step * batch_size)``). Under data-parallel training
each rank reads its share of every step's indices (``WindowSampler(rank=..., ranks=...)``), so the order is the
same for any number of ranks.
"""

from __future__ import annotations

import math
import mmap
import resource
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from facedata.audio import MEL_FRAMES_PER_WINDOW, N_MELS, mel_window_range, mel_windows_from_block
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


def read_rows(array: Any, start: int, stop: int, *, out: np.ndarray | None = None) -> np.ndarray:
    """Copy rows [start, stop) out of a memory map and release the mapped pages (resident memory stays flat).

    Each shard's rows are copied straight into the output (one copy, also across a shard boundary), ``out`` when
    given (its shape must be the rows').
    """
    stop = min(stop, len(array))
    shape = (max(0, stop - start), *array.shape[1:])
    if out is None:
        out = np.empty(shape, dtype=array.dtype)
    elif out.shape != shape:
        raise ValueError(f"read_rows: out has shape {out.shape} (expected {shape} for rows {start}:{stop})")
    pieces = _pieces(array, start, stop)
    if pieces is None:  # not memory-mapped (a zarr-python fallback read): already in memory
        out[...] = array[start:stop]
        return out
    at = 0
    for piece, lo, hi in pieces:
        out[at : at + hi - lo] = piece[lo:hi]
        at += hi - lo
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


def _pieces(array: Any, start: int, stop: int) -> list[tuple[np.ndarray, int, int]] | None:
    """(piece, first row, stop row) of every piece of ``array`` holding rows [start, stop); None if not mapped."""
    if isinstance(array, np.memmap):
        return [(array, start, stop)]
    if isinstance(array, ShardedArray):
        pieces = []
        for s, piece in enumerate(array.pieces):
            lo, hi = max(start, int(array.offsets[s])), min(stop, int(array.offsets[s + 1]))
            if lo < hi:
                pieces.append((piece, lo - int(array.offsets[s]), hi - int(array.offsets[s])))
        return pieces
    return None


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

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Windows ``indices`` as one batch (a DataLoader calls this instead of ``__getitem__`` per item; pass
        ``collate_fn=keep_batch``)."""
        return self.read_batch([self.window(int(i)) for i in indices], self.frames)

    def read(self, entry_index: int, start: int, frames: int) -> dict[str, torch.Tensor]:
        """The window of ``frames`` frames from ``start`` of entry ``entry_index``."""
        batch = self.read_batch([(entry_index, start)], frames)
        return {k: v[0] for k, v in batch.items()}

    def read_batch(self, windows: list[tuple[int, int]], frames: int) -> dict[str, torch.Tensor]:
        """Windows (entry index, first frame) read straight into batch tensors.

        Returns vertices B x T x V x 3 mm, mel B x T x 80 x 101, template B x V x 3 mm, identity, sequence and
        start (B,) int64. Stacking per-window copies would copy every batch twice more (new memory is paged in on
        first touch, slow for tens of MB); in a DataLoader worker the tensors are allocated in shared memory, so
        passing them to the training process copies nothing.
        """
        if self._arrays is None:  # opened lazily, once per DataLoader worker
            self._arrays = _MappedArrays(self.store.root)
            raise_open_file_limit()
        arrays = self._arrays
        B = len(windows)
        first = self.entries[windows[0][0]]
        V = self._template(first.identity).shape[0]
        shared = torch.utils.data.get_worker_info() is not None

        def empty(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            if shared:  # in shared memory directly, as torch's default collate does (share_memory_() would copy)
                storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
                return torch.empty(0, dtype=dtype).set_(storage, 0, shape)
            return _batch_tensor(shape, dtype)

        batch = {"vertices": empty(B, frames, V, 3), "mel": empty(B, frames, N_MELS, MEL_FRAMES_PER_WINDOW),
                 "template": empty(B, V, 3), "identity": empty(B, dtype=torch.int64),
                 "sequence": empty(B, dtype=torch.int64), "start": empty(B, dtype=torch.int64)}
        for b, (entry_index, start) in enumerate(windows):
            e = self.entries[entry_index]
            read_rows(arrays.get(f"{e.path}/vertices"), start, start + frames, out=batch["vertices"][b].numpy())
            lo, hi = mel_window_range(start, frames)
            mel_windows_from_block(read_rows(arrays.get(f"{e.path}/mel"), lo, hi), lo, start, frames,
                               out=batch["mel"][b].numpy())  # (T, 80, 101)
            batch["template"][b] = torch.from_numpy(self._template(e.identity))
            batch["identity"][b], batch["sequence"][b], batch["start"][b] = e.identity_index, entry_index, start
        return batch

    def _template(self, identity: str) -> np.ndarray:
        if identity not in self._templates:
            self._templates[identity] = self.store.template(identity)
        return self._templates[identity]


# glibc serves allocations below 32 MB from memory freed before (once one was freed); above, every one is a fresh
# mapping whose pages are faulted in 4 KB at a time.
HUGE_PAGE_MIN_BYTES = 32 << 20


def _batch_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; one of 32 MB or more in its own anonymous mapping with transparent huge pages.

    Such a batch is fresh memory at every step, and paging it in 4 KB at a time cost more than copying the windows
    into it (measured: 38-80 ms against 14-20 ms with huge pages for a 64-frame batch of 8 at V = 6172). The
    mapping is returned to the system when the tensor is freed.
    """
    nbytes = math.prod(shape) * dtype.itemsize
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if nbytes < HUGE_PAGE_MIN_BYTES or advice is None:
        return torch.empty(shape, dtype=dtype)
    region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        region.madvise(advice)
    except OSError:
        pass  # advisory only (THP disabled): plain pages
    return torch.frombuffer(region, dtype=dtype).view(shape)


def keep_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The DataLoader ``collate_fn`` for datasets that read whole batches (``__getitems__``)."""
    return batch


class WindowSampler(Sampler[int]):
    """Sample indices ``start, start + 1, ...`` (``length`` of them): the data order of a run is its counter.

    With ``ranks`` > 1 (data-parallel training) this is rank ``rank``'s share of the counter: of the
    ``batch_size`` indices of each step, the ``batch_size // ranks`` from ``rank * batch_size // ranks`` on. The
    ranks together read exactly the indices one process reads, step by step; ``length`` counts this rank's.

    Raises:
        ValueError: ``batch_size`` is not a multiple of ``ranks``, or ``rank`` is not one of them.
    """

    def __init__(self, start: int = 0, length: int = 1 << 40, *, rank: int = 0, ranks: int = 1, batch_size: int = 1):
        if ranks < 1 or batch_size % ranks:
            raise ValueError(f"WindowSampler: batch_size {batch_size} is not a multiple of ranks {ranks}")
        if not 0 <= rank < ranks:
            raise ValueError(f"WindowSampler: rank {rank} (expected 0 <= rank < {ranks})")
        self.start = start
        self.length = length
        self.rank, self.ranks, self.batch_size = rank, ranks, batch_size

    def __iter__(self):
        if self.ranks == 1:
            return iter(range(self.start, self.start + self.length))
        local = self.batch_size // self.ranks
        first = self.start + self.rank * local
        return (first + n // local * self.batch_size + n % local for n in range(self.length))

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


# --- fixed windows (validation) and whole sequences (evaluation) ---------------------------------------------------


def tile_windows(entries: list[SequenceEntry], frames: int, *, limit: int | None = None) -> list[tuple[int, int]]:
    """A deterministic list of (entry index, first frame): windows tiling every entry.

    Each entry of at least ``frames`` frames is cut into ``ceil(n_frames / frames)`` windows, the last one flush
    with the end (overlapping its neighbour) so that every frame is seen. With ``limit``, windows are taken evenly
    across the whole list, so a small validation budget still spans every sequence in turn.
    """
    windows = []
    for index, entry in enumerate(entries):
        if entry.n_frames < frames:
            continue
        count = -(-entry.n_frames // frames)
        starts = [k * frames for k in range(count - 1)] + [entry.n_frames - frames]
        windows += [(index, start) for start in starts]
    if limit is not None and len(windows) > limit:
        keep = np.linspace(0, len(windows) - 1, limit).round().astype(int)
        windows = [windows[i] for i in keep]
    return windows


class FixedWindows(Dataset):
    """The windows of a fixed list (``tile_windows``), read through a ``WindowDataset``: item i is window i.

    Indices into ``windows`` refer to ``dataset.entries``.
    """

    def __init__(self, dataset: WindowDataset, windows: list[tuple[int, int]]):
        self.dataset = dataset
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        entry, start = self.windows[index]
        return self.dataset.read(entry, start, self.dataset.frames)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Windows ``indices`` as one batch (``WindowDataset.read_batch``; use ``collate_fn=keep_batch``)."""
        return self.dataset.read_batch([self.windows[i] for i in indices], self.dataset.frames)


@dataclass
class SequenceData:
    """One whole sentence, copied out of the store.

    ``vertices`` (T, V, 3) float32 mm; ``mel`` (M, 80) float32, the stored utterance log-mel (not the per-frame
    windows, which are 101x larger: take them a block at a time with ``mel_windows``); ``template`` (V, 3) mm.
    """

    entry: SequenceEntry
    vertices: np.ndarray
    mel: np.ndarray
    template: np.ndarray

    @property
    def n_frames(self) -> int:
        return self.vertices.shape[0]

    def mel_windows(self, first: int, count: int) -> np.ndarray:
        """(count, 80, 101) log-mel windows of mesh frames first .. first + count - 1."""
        lo, hi = mel_window_range(first, count)
        return mel_windows_from_block(self.mel[lo:hi], lo, first, count)


def read_sequence(store: Store, entry: SequenceEntry) -> SequenceData:
    """Copy one whole sentence out of the store (vertices, utterance mel, template).

    Raises:
        StoreError: the sequence is missing, or its mel does not cover its frames.
    """
    arrays = store.open_sequence(entry.path)
    if arrays.mel is None:
        raise StoreError(f"{store.root / entry.path}: sentence has no mel (expected has_audio sentences only)")
    vertices = read_rows(arrays.vertices, 0, arrays.vertices.shape[0])
    mel = read_rows(arrays.mel, 0, arrays.mel.shape[0])
    needed = mel_window_range(0, vertices.shape[0])[1]
    if mel.shape[0] < needed:
        raise StoreError(f"{store.root / entry.path}: mel too short (expected >= {needed} frames for "
                         f"{vertices.shape[0]} mesh frames, got {mel.shape[0]})")
    return SequenceData(entry=entry, vertices=vertices, mel=mel, template=store.template(entry.identity))


# --- normalisation statistics when the store has none --------------------------------------------------------------


@dataclass
class VertexStatistics:
    """Per-vertex statistics of training frames, mm.

    ``mean``/``std`` (V, 3) normalise the model's input and output; ``identity_means`` (identity -> (V, 3)) are
    the average face of each identity, the prediction of a decoder that ignores its code (a collapse monitor).
    ``source`` says where mean and std came from (``store`` or ``estimated``); ``frames`` how many were read.
    """

    mean: np.ndarray
    std: np.ndarray
    identity_means: dict[str, np.ndarray]
    source: str
    frames: int


STD_FLOOR_MM = 0.1  # a vertex that never moves in the sample would otherwise be divided by ~0


def estimate_vertex_statistics(store: Store, entries: list[SequenceEntry], *, max_frames: int = 4096
                               ) -> VertexStatistics:
    """Mean and std over (at most ``max_frames``) training frames, and the average face of each identity.

    Frames are taken with an even stride over every entry, so a capped estimate still covers every sequence.
    The estimated std is floored at ``STD_FLOOR_MM``. The store's own statistics (``facedata stats``), when
    present, replace mean and std as they are (``source="store"``); the identity means are always estimated here.
    """
    total = sum(e.n_frames for e in entries)
    stride = max(1, -(-total // max_frames))
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    square = None
    for entry in entries:
        vertices = store.open_sequence(entry.path).vertices
        frames = np.asarray(read_rows(vertices, 0, vertices.shape[0])[::stride], np.float64)  # (F, V, 3)
        sums[entry.identity] = sums.get(entry.identity, 0) + frames.sum(axis=0)
        counts[entry.identity] = counts.get(entry.identity, 0) + frames.shape[0]
        square = (0 if square is None else square) + (frames ** 2).sum(axis=0)
    n = sum(counts.values())
    mean = sum(sums.values()) / n
    std = np.sqrt(np.maximum(square / n - mean ** 2, 0.0))
    std = np.maximum(std, STD_FLOOR_MM)
    identity_means = {k: (v / counts[k]).astype(np.float32) for k, v in sums.items()}
    source = "estimated"
    try:
        mean, std = store.vertex_statistics()
        source = "store"
    except StoreError:
        pass
    return VertexStatistics(mean=np.asarray(mean, np.float32), std=np.asarray(std, np.float32),
                            identity_means=identity_means, source=source, frames=n)
