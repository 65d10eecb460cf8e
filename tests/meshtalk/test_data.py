"""Windows, fixed validation windows, whole sentences and normalisation statistics read from stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from facedata.audio import mel_windows
from facedata.store import ARRAYS_DIR, Store, create_array, ensure_groups
from meshtalk.data import (
    STD_FLOOR_MM,
    FixedWindows,
    SequenceEntry,
    WindowDataset,
    WindowSampler,
    estimate_vertex_statistics,
    keep_batch,
    read_sequence,
    select_sequences,
    tile_windows,
)


def _entry(n_frames: int, name: str = "s") -> SequenceEntry:
    return SequenceEntry("i", name, f"p/{name}", n_frames, 0)


@pytest.mark.parametrize(("n_frames", "frames", "starts"), [(57, 16, [0, 16, 32, 41]), (32, 16, [0, 16]),
                                                             (16, 16, [0]), (10, 16, [])])
def test_tiles_cover_every_frame(n_frames, frames, starts):
    assert [s for _, s in tile_windows([_entry(n_frames)], frames)] == starts


def test_tile_limit_spreads_over_every_sequence():
    entries = [_entry(64, f"s{i}") for i in range(5)]  # 4 windows each
    windows = tile_windows(entries, 16, limit=5)
    assert len(windows) == 5
    assert {e for e, _ in windows} == set(range(5))


def test_fixed_windows_read_the_stored_frames(tiny_store):
    store = Store(tiny_store)
    entries = select_sequences(store, split="sentence", subset="val")
    dataset = WindowDataset(store, entries, frames=16)
    windows = tile_windows(dataset.entries, 16)
    fixed = FixedWindows(dataset, windows)
    assert len(fixed) == len(windows)
    entry_index, start = windows[-1]
    item = fixed[len(windows) - 1]
    path = dataset.entries[entry_index].path
    stored = zarr.open_array(tiny_store / ARRAYS_DIR / path / "vertices", mode="r")[start : start + 16]
    np.testing.assert_array_equal(item["vertices"].numpy(), stored)
    mel = zarr.open_array(tiny_store / ARRAYS_DIR / path / "mel", mode="r")[...]
    np.testing.assert_array_equal(item["mel"].numpy(), mel_windows(mel, start, 16))
    assert int(item["start"]) == start and int(item["sequence"]) == entry_index


def test_windows_follow_the_counter(tiny_store):
    store = Store(tiny_store)
    dataset = WindowDataset(store, select_sequences(store), frames=16, seed=3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, sampler=WindowSampler(8), collate_fn=keep_batch)
    batch = next(iter(loader))
    for b in range(4):  # sample 8 + b of the run, whatever loaded it
        np.testing.assert_array_equal(batch["vertices"][b].numpy(), dataset[8 + b]["vertices"].numpy())


def test_whole_sentence_and_its_mel_windows(tiny_store):
    store = Store(tiny_store)
    entry = select_sequences(store, split="sentence", subset="test")[0]
    seq = read_sequence(store, entry)
    stored = zarr.open_array(tiny_store / ARRAYS_DIR / entry.path / "vertices", mode="r")[...]
    np.testing.assert_array_equal(seq.vertices, stored)
    assert seq.n_frames == entry.n_frames
    np.testing.assert_array_equal(seq.mel_windows(5, 7), mel_windows(seq.mel, 5, 7))
    np.testing.assert_array_equal(seq.template, store.template(entry.identity))


def test_estimated_statistics_equal_numpy_and_store_statistics_win(tiny_store, tmp_path):
    store = Store(tiny_store)
    entries = select_sequences(store, split="sentence", subset="train")
    stats = estimate_vertex_statistics(store, entries, max_frames=100_000)
    frames = np.concatenate([read_sequence(store, e).vertices for e in entries]).astype(np.float64)
    assert stats.source == "estimated" and stats.frames == frames.shape[0]
    np.testing.assert_allclose(stats.mean, frames.mean(axis=0), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(stats.std, np.maximum(frames.std(axis=0), STD_FLOOR_MM), rtol=1e-4, atol=1e-4)
    first = entries[0].identity
    mine = np.concatenate([read_sequence(store, e).vertices for e in entries if e.identity == first])
    np.testing.assert_allclose(stats.identity_means[first], mine.mean(axis=0), atol=1e-4)

    capped = estimate_vertex_statistics(store, entries, max_frames=100)
    assert capped.frames <= 100 + len(entries)  # an even stride: at most one extra frame per sentence

    import shutil

    copy = shutil.copytree(tiny_store, tmp_path / "store")
    group = ensure_groups(copy, "stats")
    create_array(group, "vertex_mean", np.full(stats.mean.shape, 7.0, np.float32))
    create_array(group, "vertex_std", np.full(stats.mean.shape, 0.01, np.float32))
    from_store = estimate_vertex_statistics(Store(copy), entries)
    assert from_store.source == "store"
    assert (from_store.mean == 7.0).all() and (from_store.std == np.float32(0.01)).all()  # used as they are


def test_windows_from_a_synthesised_and_ingested_store(tmp_path):
    """The reader on what `facedata synth` + `facedata ingest` write (a small kept-vertex set)."""
    from facedata.ingest import IngestOptions, ingest
    from facedata.synth import write_raw_tree

    write_raw_tree(tmp_path / "raw", identities=1, sentences=2, seconds=1.2, seed=1, obj_every=1000)
    keep = np.loadtxt(Path(__file__).resolve().parents[2] / "facedata/data/multiface_to_meshtalk_keep.txt",
                      dtype=int)[::60]
    (tmp_path / "keep.txt").write_text("\n".join(map(str, keep)) + "\n")
    ingest(tmp_path / "raw", tmp_path / "store", IngestOptions(keep=tmp_path / "keep.txt", workers=1))
    store = Store(tmp_path / "store")
    entries = select_sequences(store)
    assert len(entries) == 2
    dataset = WindowDataset(store, entries, frames=16)
    item = dataset[0]
    assert item["vertices"].shape == (16, keep.size, 3) and item["mel"].shape == (16, 80, 101)
    assert torch.isfinite(item["mel"]).all() and torch.isfinite(item["vertices"]).all()
    seq = read_sequence(store, entries[0])
    assert seq.mel_windows(0, seq.n_frames).shape == (seq.n_frames, 80, 101)





def test_read_rows_across_shards_equals_zarr(tiny_store):
    """Rows copied piece by piece out of the shard maps (shards of 16 frames here) equal zarr-python's read."""
    from meshtalk.data import read_rows

    store = Store(tiny_store)
    entry = select_sequences(store)[0]
    mapped = store.open_sequence(entry.path).vertices
    stored = zarr.open_array(tiny_store / ARRAYS_DIR / entry.path / "vertices", mode="r")[...]
    for start, stop in [(0, 16), (10, 40), (15, 17), (0, entry.n_frames), (entry.n_frames - 3, entry.n_frames)]:
        np.testing.assert_array_equal(read_rows(mapped, start, stop), stored[start:stop])


@pytest.mark.parametrize(("first", "count"), [(0, 1), (0, 32), (7, 64), (100, 3)])
def test_mel_windows_equal_a_direct_slice_of_each_window(first, count):
    from facedata.audio import mel_window_range, mel_window_start, mel_windows_from_block

    mel = np.random.default_rng(first).normal(size=(600, 80)).astype(np.float32)
    lo, hi = mel_window_range(first, count)
    ours = mel_windows_from_block(mel[lo:hi], lo, first, count)
    assert ours.flags["C_CONTIGUOUS"]
    for k in range(count):
        start = int(mel_window_start(first + k))
        np.testing.assert_array_equal(ours[k], mel[start : start + 101].T)
