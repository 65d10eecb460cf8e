"""The store's writer produces exactly zarr-python's files, and its memory-mapped reads equal zarr-python's, for every
layout the writer produces."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from facedata.errors import StoreError
from facedata.store import ShardedArray, create_array, memmap_array, open_group


def zarr_python_array(group, name, data, shard_frames):
    """What zarr-python writes for the layout ``create_array`` documents (its settings spelled out)."""
    rest = data.shape[1:]
    kwargs = dict(shape=data.shape, dtype=data.dtype, compressors=None, filters=None,
                  fill_value=np.nan if data.dtype.kind == "f" else 0, config={"write_empty_chunks": True})
    if shard_frames:
        kwargs.update(chunks=(1, *rest), shards=(max(1, min(shard_frames, data.shape[0])), *rest))
    else:
        kwargs.update(chunks=(max(1, data.shape[0]), *rest))
    array = group.create_array(name, **kwargs)
    for start in range(0, data.shape[0], shard_frames or max(1, data.shape[0])):
        array[start : start + (shard_frames or data.shape[0])] = data[start : start + (shard_frames or data.shape[0])]


def tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("data", "shard_frames"), [
    (np.random.default_rng(2).normal(size=(37, 50, 3)).astype(np.float32), 16),  # a short last shard
    (np.random.default_rng(3).normal(size=(32, 50, 3)).astype(np.float32), 16),
    (np.random.default_rng(4).normal(size=(5, 50, 3)).astype(np.float32), 256),  # one shard, fewer frames
    (np.full((3, 4, 3), np.nan, np.float32), 2),  # only the fill value: stored all the same
    (np.arange(1000, dtype=np.float32), None),
    (np.arange(12, dtype=np.int32).reshape(4, 3), None),
    (np.array([True, False, True]), None),
    (np.arange(7, dtype=np.uint8), None),
    (np.arange(6, dtype=np.float64).reshape(2, 3), None),
    (np.zeros((0, 80), np.float32), None),
])
def test_the_writer_writes_zarr_pythons_files_byte_for_byte(tmp_path, data, shard_frames):
    ours = open_group(tmp_path / "ours.zarr", {"facedata": {"n": 1}})
    array = create_array(ours, "a", shape=data.shape, dtype=data.dtype, shard_frames=shard_frames)
    step = shard_frames or max(1, data.shape[0])
    for start in range(0, data.shape[0], step):  # whole chunks, as the writers of the package write them
        array[start : start + step] = data[start : start + step]
    theirs = zarr.open_group(tmp_path / "theirs.zarr", mode="w", zarr_format=3, attributes={"facedata": {"n": 1}})
    zarr_python_array(theirs, "a", data, shard_frames)

    assert tree_bytes(tmp_path / "ours.zarr") == tree_bytes(tmp_path / "theirs.zarr")
    read = zarr.open_group(tmp_path / "ours.zarr", mode="r")
    assert read.attrs["facedata"] == {"n": 1}
    np.testing.assert_array_equal(read["a"][...], data)


def test_the_writer_refuses_rows_that_are_not_whole_chunks(tmp_path):
    array = create_array(open_group(tmp_path / "s.zarr"), "v", shape=(10, 4, 3), dtype=np.float32, shard_frames=4)
    with pytest.raises(ValueError, match="not whole chunks of 4 rows"):
        array[2:6] = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(ValueError, match=r"expected shape \(4, 4, 3\), got \(3, 4, 3\)"):
        array[0:4] = np.zeros((3, 4, 3), np.float32)
    array[8:10] = np.ones((2, 4, 3), np.float32)  # the short last shard is whole
    assert (tmp_path / "s.zarr/v/c/2/0/0").stat().st_size == 2 * 48 + 4 * 16 + 4
    with pytest.raises(TypeError, match="a bool, integer or float type, got shape"):
        create_array(open_group(tmp_path / "s.zarr"), "text", np.array(["a", "b"]))


@pytest.mark.parametrize(("frames", "shard_frames"), [(37, 256), (37, 16), (32, 16), (1, 4)])
def test_memmap_of_sharded_vertices_equals_zarr(tmp_path, frames, shard_frames):
    group = open_group(tmp_path / "s.zarr")
    data = np.random.default_rng(0).normal(size=(frames, 50, 3)).astype(np.float32)
    data[frames // 2] = 0.0  # an all-zero frame must still be stored (write_empty_chunks)
    array = create_array(group, "vertices", shape=data.shape, dtype=np.float32, shard_frames=shard_frames)
    for start in range(0, frames, shard_frames):  # whole shards, as ingest writes them
        array[start : start + shard_frames] = data[start : start + shard_frames]
    mapped = memmap_array(tmp_path / "s.zarr" / "vertices")
    n_shards = -(-frames // shard_frames)
    assert isinstance(mapped, np.memmap if n_shards == 1 else ShardedArray)
    np.testing.assert_array_equal(np.asarray(mapped), zarr.open_array(tmp_path / "s.zarr/vertices")[...])
    np.testing.assert_array_equal(mapped[3:frames - 1], data[3:frames - 1])  # may cross a shard boundary
    np.testing.assert_array_equal(mapped[-1], data[-1])


@pytest.mark.parametrize("data", [np.arange(1000, dtype=np.float32), np.ones((7, 80), np.float32) * 3,
                                  np.array([True, False, True]), np.arange(12, dtype=np.int32).reshape(4, 3)])
def test_memmap_of_plain_arrays_equals_zarr(tmp_path, data):
    group = open_group(tmp_path / "s.zarr")
    create_array(group, "a", data)
    np.testing.assert_array_equal(np.asarray(memmap_array(tmp_path / "s.zarr/a")), data)


def test_compressed_arrays_fall_back_to_zarr(tmp_path):
    data = np.random.default_rng(1).normal(size=(20, 10, 3)).astype(np.float32)
    zarr.create_array(tmp_path / "c.zarr", data=data, chunks=(4, 10, 3))  # default zstd compression
    out = memmap_array(tmp_path / "c.zarr")
    assert not isinstance(out, np.memmap)
    np.testing.assert_array_equal(out, data)


def test_truncated_shard_is_reported(tmp_path):
    group = open_group(tmp_path / "s.zarr")
    create_array(group, "v", np.ones((8, 5, 3), np.float32), shard_frames=8)
    shard = tmp_path / "s.zarr/v/c/0/0/0"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(StoreError, match=r"truncated|unreadable"):
        memmap_array(tmp_path / "s.zarr/v")


def test_replace_dir_puts_the_new_group_in_place_and_leaves_nothing_behind(tmp_path):
    from facedata.files import exchange_dirs
    from facedata.store import replace_dir

    store = tmp_path / "store"
    (store / ".staging" / "new").mkdir(parents=True)
    (store / "arrays.zarr" / "masks").mkdir(parents=True)
    (store / "arrays.zarr" / "masks" / "old").write_text("old")
    (store / ".staging" / "new" / "fresh").write_text("new")
    replace_dir(store / ".staging" / "new", store / "arrays.zarr" / "masks", store)
    assert [p.name for p in (store / "arrays.zarr" / "masks").iterdir()] == ["fresh"]
    assert list((store / ".staging").iterdir()) == []
    # Swapping two folders is one step: both names exist before and after.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "from_a").touch()
    if exchange_dirs(tmp_path / "a", tmp_path / "b"):
        assert [p.name for p in (tmp_path / "b").iterdir()] == ["from_a"] and not any((tmp_path / "a").iterdir())
    else:  # a system without renameat2's exchange: nothing was moved
        assert [p.name for p in (tmp_path / "a").iterdir()] == ["from_a"]


def test_the_manifests_reserve_takes_real_blocks_until_the_staging_is_cleared(tmp_path):
    import os

    from facedata.store import clear_staging, reserve_room

    assert reserve_room(tmp_path, 300_000)
    reserve = tmp_path / ".staging" / "reserve"
    assert os.stat(reserve).st_blocks * 512 >= 300_000  # allocated, not a sparse file
    assert clear_staging(tmp_path) == 1 and not reserve.exists()
