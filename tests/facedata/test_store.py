"""The store's memory-mapped reads equal zarr-python's, for every layout the writer produces."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from facedata.errors import StoreError
from facedata.store import ShardedArray, create_array, memmap_array


@pytest.mark.parametrize(("frames", "shard_frames"), [(37, 256), (37, 16), (32, 16), (1, 4)])
def test_memmap_of_sharded_vertices_equals_zarr(tmp_path, frames, shard_frames):
    group = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
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
    group = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
    create_array(group, "a", data)
    np.testing.assert_array_equal(np.asarray(memmap_array(tmp_path / "s.zarr/a")), data)


def test_compressed_arrays_fall_back_to_zarr(tmp_path):
    data = np.random.default_rng(1).normal(size=(20, 10, 3)).astype(np.float32)
    zarr.create_array(tmp_path / "c.zarr", data=data, chunks=(4, 10, 3))  # default zstd compression
    out = memmap_array(tmp_path / "c.zarr")
    assert not isinstance(out, np.memmap)
    np.testing.assert_array_equal(out, data)


def test_truncated_shard_is_reported(tmp_path):
    group = zarr.open_group(tmp_path / "s.zarr", mode="w", zarr_format=3)
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
