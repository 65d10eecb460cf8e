"""The store: a Zarr v3 hierarchy of per-sequence arrays indexed by Parquet manifests.

This package is the contract between ``facedata`` (which writes stores) and every reader (the ``meshtalk`` trainer,
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

The package has one door for each side: ``facedata.store.read`` (``Store``, ``read_info``, and ``memmap_array`` in
``facedata.store.arrays``) for every reader, ``facedata.store.write`` (atomic files, staged groups, the lock) for
the commands that write; ``facedata.store.layout`` holds the names and paths both sides agree on.
"""

from facedata.store.arrays import RemoteRows, ShardedArray, memmap_array
from facedata.store.layout import (
    ARRAYS_DIR,
    DEFAULT_SHARD_FRAMES,
    FORMAT_NAME,
    FORMAT_VERSION,
    INFO_FILE,
    LOCK_FILE,
    MANIFESTS_DIR,
    REJECTS_COLUMNS,
    STAGING_DIR,
    identity_group_path,
    is_remote,
    manifest_schemas,
    sequence_group_path,
    store_path,
)
from facedata.store.read import SequenceArrays, Store, read_info, require_vertex_count
from facedata.store.write import (
    LOCK_MAX_AGE_S,
    Array,
    Group,
    StagedGroup,
    clear_staging,
    create_array,
    ensure_groups,
    open_group,
    remove_tree,
    replace_dir,
    reserve_room,
    stage_group,
    store_lock,
    write_array_atomic,
    write_bytes_atomic,
    write_json_atomic,
    write_parquet_atomic,
)

__all__ = [
    "ARRAYS_DIR", "DEFAULT_SHARD_FRAMES", "FORMAT_NAME", "FORMAT_VERSION", "INFO_FILE", "LOCK_FILE", "LOCK_MAX_AGE_S",
    "MANIFESTS_DIR", "REJECTS_COLUMNS", "STAGING_DIR", "Array", "Group", "RemoteRows", "SequenceArrays",
    "ShardedArray", "StagedGroup",
    "Store", "clear_staging", "create_array", "ensure_groups", "identity_group_path", "is_remote", "manifest_schemas",
    "memmap_array", "open_group", "read_info", "remove_tree", "replace_dir", "require_vertex_count", "reserve_room",
    "sequence_group_path", "stage_group", "store_lock", "store_path", "write_array_atomic", "write_bytes_atomic",
    "write_json_atomic", "write_parquet_atomic",
]
