"""facedata stats on a tiny generated store: the report's files, its numbers against the store, the stored vertex
statistics against numpy, and a mistracked frame found among the outliers."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from facedata.cli import app
from facedata.ingest import IngestOptions, ingest
from facedata.split import split_store
from facedata.stats import STD_FLOOR_MM, StatsOptions, compute_stats, run_stats
from facedata.store import Store
from facedata.synth import write_raw_tree

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stats")
    write_raw_tree(root / "raw", identities=2, sentences=3, seconds=1.0, seed=1, obj_every=1000)
    ingest(root / "raw", root / "store", IngestOptions(workers=1))
    return root / "store"


@pytest.fixture()
def copy(store, tmp_path) -> Path:
    shutil.copytree(store, tmp_path / "store")
    return tmp_path / "store"


def _direct_statistics(store: Store, rows: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    frames = np.concatenate([np.asarray(store.open_sequence(p).vertices, np.float64) for p in rows["path"]])
    return frames.mean(axis=0), np.maximum(frames.std(axis=0), STD_FLOOR_MM)


def test_stored_statistics_are_the_training_frames_mean_and_std(copy):
    s = Store(copy)
    run = run_stats(copy)
    sentences = s.sequences().filter((pl.col("kind") == "sentence") & pl.col("has_audio"))
    mean, std = _direct_statistics(s, sentences)
    stored_mean, stored_std = s.vertex_statistics()
    assert stored_mean.dtype == np.float32 and stored_mean.shape == (6172, 3)
    np.testing.assert_allclose(stored_mean, mean, rtol=0, atol=1e-4)
    np.testing.assert_allclose(stored_std, std, rtol=1e-5, atol=1e-5)
    attrs = json.loads((copy / "arrays.zarr/stats/zarr.json").read_text())["attributes"]["facedata"]
    assert attrs["training"].startswith("all sentences") and attrs["frames"] == sentences["n_frames"].sum()
    assert attrs["version"] == 1 and run.stats.training["written"]

    # With splits, only the sentence split's training subset counts, and the record says so.
    splits = split_store(copy)
    train = splits.filter((pl.col("split") == "sentence") & (pl.col("subset") == "train"))
    chosen = sentences.join(train.select("identity", "sequence"), on=["identity", "sequence"], how="semi")
    assert 0 < chosen.height < sentences.height
    run_stats(copy)
    mean, std = _direct_statistics(s, chosen)
    stored_mean, stored_std = s.vertex_statistics()
    np.testing.assert_allclose(stored_mean, mean, rtol=0, atol=1e-4)
    np.testing.assert_allclose(stored_std, std, rtol=1e-5, atol=1e-5)
    attrs = json.loads((copy / "arrays.zarr/stats/zarr.json").read_text())["attributes"]["facedata"]
    assert attrs["training"].startswith("split 'sentence'") and attrs["frames"] == chosen["n_frames"].sum()
    verify = CliRunner().invoke(app, ["verify", "--store", str(copy)])
    assert verify.exit_code == 0, verify.output


def test_report_files_and_numbers_match_the_store(store, tmp_path):
    result = CliRunner().invoke(app, ["stats", "--store", str(store), "--report", str(tmp_path / "report"),
                                      "--no-write-statistics"])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output and "sentence" in result.output
    page = (tmp_path / "report" / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) >= 8 and any("motion" in s for s in sources) and any("mouth_" in s for s in sources)
    for source in sources:
        data = (tmp_path / "report" / source).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000, source

    numbers = json.loads((tmp_path / "report" / "report.json").read_text())
    sequences = Store(store).sequences()
    frames = int(sequences["n_frames"].sum())
    assert numbers["totals"]["sequences"] == sequences.height
    assert numbers["totals"]["frames"] == frames
    assert numbers["totals"]["hours"] == pytest.approx(frames / 30 / 3600)
    assert numbers["totals"]["dropped_frames"] == int(sequences["n_dropped"].sum()) > 0
    assert numbers["totals"]["observed_frames"] == int(sequences["n_observed"].sum())
    assert numbers["totals"]["sequences_with_audio"] == int(sequences["has_audio"].sum())
    expected = {(r["identity"], r["kind"]): r for r in sequences.group_by(["identity", "kind"]).agg(
        pl.len().alias("sequences"), pl.col("n_frames").sum().alias("frames"),
        pl.col("n_dropped").sum().alias("dropped")).iter_rows(named=True)}
    assert len(numbers["by_identity_kind"]) == len(expected)
    for row in numbers["by_identity_kind"]:
        want = expected[(row["identity"], row["kind"])]
        assert (row["sequences"], row["frames"], row["dropped_frames"]) == (want["sequences"], want["frames"],
                                                                             want["dropped"])
        assert row["hours"] == pytest.approx(want["frames"] / 30 / 3600)
    dropped = sequences.filter(pl.col("n_dropped") > 0)
    assert {(r["identity"], r["sequence"]) for r in numbers["dropped"]["sequences"]} == set(
        zip(dropped["identity"], dropped["sequence"], strict=True))
    assert numbers["alignment_error_ms"]["count"] == int(sequences["has_audio"].sum())
    # A clean corpus has no tracking failures, and the synth mouth leads the sound (docs/synth.md: 50-100 ms).
    assert numbers["outliers"]["count"] == 0
    lags = [s["best_lag_frames"] for s in numbers["lip_sync"]["sequences"]]
    assert len(lags) == int(sequences["has_audio"].sum()) and 1 <= np.median(lags) <= 4
    assert numbers["vertex_statistics"]["written"] is False
    assert not (store / "arrays.zarr/stats").exists()


def test_a_mistracked_frame_is_listed_as_an_outlier(copy):
    s = Store(copy)
    row = s.sequences().filter(pl.col("kind") == "sentence").row(0, named=True)
    frame = 7
    shard = copy / "arrays.zarr" / row["path"] / "vertices/c/0/0/0"
    vertices = np.memmap(shard, dtype="<f4", mode="r+", shape=(row["n_frames"], 6172, 3))
    vertices[frame] += np.float32(3.0)  # the whole head 3 mm off for one frame
    vertices.flush()
    del vertices
    stats = compute_stats(copy, StatsOptions(write_statistics=False))
    found = [(o["identity"], o["sequence"], o["frame"]) for o in stats.outliers]
    assert found == [(row["identity"], row["sequence"], frame)]
    outlier = stats.outliers[0]
    assert outlier["deviation_mm"] == pytest.approx(3.0 * np.sqrt(3), rel=0.05)  # 3 mm along x, y and z
    assert outlier["frame_number"] == row["first_frame"] + frame * row["step"]


def test_results_do_not_depend_on_the_block_size(store):
    small = compute_stats(store, StatsOptions(block_frames=5, write_statistics=False))
    large = compute_stats(store, StatsOptions(block_frames=512, write_statistics=False))
    np.testing.assert_allclose(small.vertex_mean, large.vertex_mean, atol=1e-5)
    np.testing.assert_allclose(small.vertex_std, large.vertex_std, atol=1e-5)
    np.testing.assert_allclose(small.motion_mm, large.motion_mm, atol=1e-9)
    for a, b in zip(small.figures, large.figures, strict=True):
        assert a.jump_median_mm == pytest.approx(b.jump_median_mm)
        assert a.deviation_max_mm == pytest.approx(b.deviation_max_mm)
        assert a.lag_frames == b.lag_frames


def test_median_of_five_equals_numpy():
    from facedata.stats import median5

    rng = np.random.default_rng(0)
    values = rng.normal(size=(5, 10_000))
    values[:, :2000] = rng.integers(0, 3, size=(5, 2000))  # ties
    np.testing.assert_array_equal(median5(*values), np.median(values, axis=0))
