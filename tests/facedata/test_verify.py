"""facedata verify on a tiny generated store, sound and then damaged in one way at a time.

Each damage must be reported (a line naming where and what) with a non-zero exit status through the command line,
and the sound store must give OK and status 0.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from facedata.cli import app
from facedata.ingest import IngestOptions, ingest
from facedata.masks import build_masks
from facedata.split import split_store
from facedata.stats import run_stats
from facedata.store import Store
from facedata.synth import write_raw_tree


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("verify")
    write_raw_tree(root / "raw", identities=2, sentences=2, seconds=0.5, seed=2, obj_every=1000)
    store = root / "store"
    ingest(root / "raw", store, IngestOptions(workers=1))
    build_masks(store=store, previews=False)
    split_store(store)
    run_stats(store)
    return store


def _verify(store: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["verify", "--store", str(store)])
    return result.exit_code, result.stdout


def _sentence(store: Path) -> dict:
    return Store(store).sequences().filter(pl.col("has_audio")).sort("sequence").row(0, named=True)


def _truncate_shard(store: Path) -> str:
    row = _sentence(store)
    shard = store / "arrays.zarr" / row["path"] / "vertices/c/0/0/0"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    return f"{row['path']}/vertices"


def _nan_in_vertices(store: Path) -> str:
    row = _sentence(store)
    shard = store / "arrays.zarr" / row["path"] / "vertices/c/0/0/0"
    vertices = np.memmap(shard, dtype="<f4", mode="r+", shape=(row["n_frames"], 6172, 3))
    vertices[3, 100, 1] = np.nan
    vertices.flush()
    return "non-finite values"


def _delete_listed_group(store: Path) -> str:
    row = _sentence(store)
    shutil.rmtree(store / "arrays.zarr" / row["path"])
    return "sequence listed in the manifest is missing"


def _unlisted_group(store: Path) -> str:
    row = _sentence(store)
    group = store / "arrays.zarr" / row["path"]
    shutil.copytree(group, group.with_name("SEN_an_unlisted_copy"))
    return "SEN_an_unlisted_copy: sequence group not in the manifest"


def _wrong_dtype(store: Path) -> str:
    row = _sentence(store)
    meta_path = store / "arrays.zarr" / row["path"] / "frame_number/zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["data_type"] = "int64"
    meta_path.write_text(json.dumps(meta))
    return "frame_number: dtype (expected int32, got int64)"


def _wrong_shape(store: Path) -> str:
    row = _sentence(store)
    meta_path = store / "arrays.zarr" / row["path"] / "vertices/zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"][1] = 6000
    meta_path.write_text(json.dumps(meta))
    return f"vertices: shape (expected ({row['n_frames']}, 6172, 3), got ({row['n_frames']}, 6000, 3))"


def _mask_out_of_range(store: Path) -> str:
    chunk = store / "arrays.zarr/masks/mouth/c/0"
    weights = np.memmap(chunk, dtype="<f4", mode="r+", shape=(6172,))
    weights[10] = 1.5
    weights.flush()
    return "masks/mouth: values out of range"


def _fractional_eyelid(store: Path) -> str:
    chunk = store / "arrays.zarr/masks/eyelid/c/0"
    weights = np.memmap(chunk, dtype="<f4", mode="r+", shape=(6172,))
    weights[:5] = 0.5
    weights.flush()
    return "masks/eyelid: eyelid set"


def _missing_mask(store: Path) -> str:
    shutil.rmtree(store / "arrays.zarr/masks/upper_face")
    return "mask 'upper_face' missing"


def _zero_std(store: Path) -> str:
    chunk = store / "arrays.zarr/stats/vertex_std/c/0/0"
    std = np.memmap(chunk, dtype="<f4", mode="r+", shape=(6172, 3))
    std[7] = 0.0
    std.flush()
    return "stats/vertex_std: standard deviations"


def _split_member_missing(store: Path) -> str:
    path = store / "manifests/splits.parquet"
    splits = pl.read_parquet(path)
    extra = splits.head(1).with_columns(pl.lit("SEN_never_recorded").alias("sequence"))
    pl.concat([splits, extra]).write_parquet(path)
    return "split member not in the store"


def _manifest_count_mismatch(store: Path) -> str:
    path = store / "manifests/sequences.parquet"
    sequences = pl.read_parquet(path)
    first = _sentence(store)["sequence"]
    sequences = sequences.with_columns(
        pl.when(pl.col("sequence") == first).then(pl.col("n_observed") + 1).otherwise(pl.col("n_observed"))
        .alias("n_observed"))
    sequences.write_parquet(path)
    return "observed frame count"


DAMAGE: dict[str, Callable[[Path], str]] = {
    "truncated shard file": _truncate_shard,
    "NaN in vertices": _nan_in_vertices,
    "manifest row without its group": _delete_listed_group,
    "group not in the manifest": _unlisted_group,
    "wrong dtype in zarr.json": _wrong_dtype,
    "wrong shape in zarr.json": _wrong_shape,
    "mask out of [0, 1]": _mask_out_of_range,
    "fractional eyelid": _fractional_eyelid,
    "mask missing": _missing_mask,
    "zero std": _zero_std,
    "split member that does not exist": _split_member_missing,
    "manifest count differs from the array": _manifest_count_mismatch,
}


def test_a_sound_store_is_ok(pristine):
    code, output = _verify(pristine)
    assert code == 0, output
    assert output.strip().endswith(f"{pristine}: OK")


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_each_damage_is_reported_with_a_non_zero_exit(damage, pristine, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(pristine, store)
    expected = DAMAGE[damage](store)
    code, output = _verify(store)
    assert code != 0, f"{damage} passed verify:\n{output}"
    assert expected in output, f"{damage}: {expected!r} not in:\n{output}"
    # One line per problem, each naming where it is.
    for line in output.strip().splitlines():
        assert line.startswith(("arrays.zarr/", "manifests/", str(store))), line


def test_every_damage_at_once_is_listed(pristine, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(pristine, store)
    expected = [DAMAGE[name](store) for name in ("NaN in vertices", "group not in the manifest",
                                                  "mask out of [0, 1]", "split member that does not exist")]
    code, output = _verify(store)
    assert code == 1
    for text in expected:
        assert text in output


def test_leftovers_of_a_killed_writer_are_a_note_not_a_problem(pristine, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(pristine, store)
    (store / ".staging" / "0123abcd").mkdir(parents=True)
    (store / ".staging" / "0123abcd" / "zarr.json").write_text("{}")
    code, output = _verify(store)
    assert code == 0, output
    assert output.splitlines()[0].startswith(f"note: {store / '.staging'}: leftovers of an interrupted writer")
    assert output.strip().endswith(f"{store}: OK")
