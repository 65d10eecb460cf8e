"""Ingest behaviours on hand-made tiny trees: coordinates, vertex sets, locking, full disks, dry runs.

The end-to-end acceptance test on a generated corpus is in test_ingest_e2e.py; these trees are smaller and
each isolates one behaviour.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf
import zarr

from facedata.errors import InputError, NothingValidError, StoreError
from facedata.ingest import IngestOptions, ingest
from facedata.store import Store, store_lock
from facedata.topology import read_keep

IDENTITY = "m--20180227--0000--6795937--GHS"
SENTENCE = "SEN_a_voice_spoke_near-at-hand"


def frame_vertices(number: int) -> np.ndarray:
    rng = np.random.default_rng(number)
    return (rng.normal(size=(7306, 3)) * 40).astype(np.float32)


def write_tree(root: Path, *, obj: str | None = None, with_bin: bool = True, frames: int = 12, drop: int | None = 5,
               audio_frames: int | None = None) -> Path:
    """One identity: E001 (2 frames) and one sentence of ``frames`` frames (step 3, one dropped) with audio.

    ``obj`` writes OBJ files in "local" or "world" coordinates (with a transform); ``with_bin=False`` leaves OBJ
    as the only source.
    """
    ident = root / IDENTITY
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    translation = np.array([10.0, -20.0, 1000.0])
    faces = np.array([[0, 1, 2], [2, 3, 4], [5, 6, 7]])

    def write_sequence(name: str, numbers: list[int]) -> None:
        d = ident / "tracked_mesh" / name
        d.mkdir(parents=True)
        for n in numbers:
            v = frame_vertices(n)
            if with_bin:
                v.astype("<f4").tofile(d / f"{n:06d}.bin")
            (d / f"{n:06d}_transform.txt").write_text(
                "\n".join(" ".join(f"{x:.9f}" for x in row) for row in np.c_[rotation, translation]) + "\n")
            if obj is not None:
                w = v.astype(np.float64) @ rotation.T + translation if obj == "world" else v.astype(np.float64)
                lines = [f"v {a:.6f} {b:.6f} {c:.6f}" for a, b, c in w]
                lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
                (d / f"{n:06d}.obj").write_text("\n".join(lines) + "\n")

    write_sequence("E001_Neutral_Eyes_Open", [102, 105])
    numbers = [300 + 3 * k for k in range(frames) if k != drop]
    write_sequence(SENTENCE, numbers)
    (ident / "audio").mkdir()
    n_audio = 1600 * (audio_frames if audio_frames is not None else frames)
    t = np.arange(n_audio) / 48_000
    sf.write(ident / "audio" / f"{SENTENCE}.wav", (0.2 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 48_000,
             subtype="PCM_24")
    return root


@pytest.mark.parametrize(("obj", "with_bin", "source"), [(None, True, "bin"), ("local", False, "obj"),
                                                          ("world", False, "obj-world")])
def test_frames_from_bin_or_obj_local_or_world_are_head_local(tmp_path, obj, with_bin, source):
    write_tree(tmp_path / "raw", obj=obj, with_bin=with_bin)
    ingest(tmp_path / "raw", tmp_path / "store")
    row = pl.read_parquet(tmp_path / "store/manifests/sequences.parquet").filter(pl.col("sequence") == SENTENCE)
    assert row["vertex_source"][0] == source
    vertices = zarr.open_group(tmp_path / "store/arrays.zarr", mode="r")[row["path"][0]]["vertices"][...]
    keep = read_keep()
    tol = 0 if source == "bin" else 2e-3  # OBJ text carries 6 decimals
    np.testing.assert_allclose(vertices[0], frame_vertices(300)[keep], atol=tol, rtol=0)
    np.testing.assert_allclose(vertices[-1], frame_vertices(333)[keep], atol=tol, rtol=0)
    # the dropped frame (k = 5, frame 315) is the mean of its neighbours and flagged
    np.testing.assert_allclose(vertices[5], (frame_vertices(312)[keep] + frame_vertices(318)[keep]) / 2, atol=tol)
    observed = zarr.open_group(tmp_path / "store/arrays.zarr", mode="r")[row["path"][0]]["observed"][...]
    assert observed.tolist() == [k != 5 for k in range(12)]
    assert row["dropped_frames"][0].to_list() == [315]


@pytest.mark.parametrize(("text", "message"), [
    ("3\n1\n3\n0\n1\n3\n", r"keep list \(expected unique indices, got 3 repeated\)"),
    ("0\n7\n", r"index range \(expected 0\.\.6, got 0\.\.7\)"),
    ("0\nx\n", "keep list entries"),
])
def test_a_bad_keep_list_is_refused_naming_the_file(tmp_path, text, message):
    from facedata.errors import InputError

    path = tmp_path / "keep.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as refused:
        read_keep(path, n_source=7)
    assert str(refused.value).startswith(str(path))
    np.testing.assert_array_equal(read_keep(_write(tmp_path / "ok.txt", "4\n0\n6\n"), n_source=7), [4, 0, 6])


def _write(path, text):
    path.write_text(text)
    return path


def test_full_and_custom_vertex_sets_and_no_mixing(tmp_path):
    write_tree(tmp_path / "raw")
    ingest(tmp_path / "raw", tmp_path / "full", IngestOptions(vertices="full"))
    assert Store(tmp_path / "full").template(IDENTITY).shape == (7306, 3)
    keep_file = tmp_path / "keep.txt"
    keep_file.write_text("\n".join(map(str, [5, 3, 7306 - 1])) + "\n")
    ingest(tmp_path / "raw", tmp_path / "custom", IngestOptions(keep=keep_file))
    np.testing.assert_array_equal(Store(tmp_path / "custom").template(IDENTITY), frame_vertices(102)[[5, 3, 7305]])
    with pytest.raises(StoreError, match=r"another vertex set \(expected full \(7306 vertices\), got meshtalk"):
        ingest(tmp_path / "raw", tmp_path / "full")
    keep_file.write_text("1\n7306\n")
    with pytest.raises(InputError, match=r"keep list index range \(expected 0..7305, got 1..7306\)"):
        ingest(tmp_path / "raw", tmp_path / "bad", IngestOptions(keep=keep_file))


def test_audio_alignment_recorded_and_tolerance(tmp_path):
    write_tree(tmp_path / "raw", audio_frames=13)  # one frame (33.3 ms) longer than the 12 frames
    ingest(tmp_path / "raw", tmp_path / "store")
    row = pl.read_parquet(tmp_path / "store/manifests/sequences.parquet").filter(pl.col("has_audio")).row(0, named=True)
    assert row["alignment_error_ms"] == pytest.approx(1000 / 30)
    assert row["audio_sample_rate_hz"] == 48_000 and row["audio_subtype"] == "PCM_24"
    ingest(tmp_path / "raw", tmp_path / "strict", IngestOptions(max_audio_mismatch_ms=20))
    rejects = pl.read_parquet(tmp_path / "strict/manifests/rejects.parquet")
    assert rejects.filter(pl.col("stage") == "audio")["reason"].to_list() == ["audio length does not match the frames"]
    assert not pl.read_parquet(tmp_path / "strict/manifests/sequences.parquet")["has_audio"].any()


def test_second_writer_is_refused(tmp_path):
    write_tree(tmp_path / "raw")
    with store_lock(tmp_path / "store"), pytest.raises(StoreError, match="another facedata process"):
        ingest(tmp_path / "raw", tmp_path / "store")


def test_full_disk_stops_with_one_line_and_keeps_what_is_stored(tmp_path, monkeypatch):
    write_tree(tmp_path / "raw")
    ingest(tmp_path / "raw", tmp_path / "store")
    before = pl.read_parquet(tmp_path / "store/manifests/sequences.parquet")
    (tmp_path / "raw" / IDENTITY / "tracked_mesh" / SENTENCE / "000300.bin").touch()  # changed: redone next run

    import facedata.ingest.sequence as sequence_module

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sequence_module, "_write_audio", full_disk)
    with pytest.raises(StoreError, match=r"disk full while writing .*SEN_a_voice.* stored sequences are intact"):
        ingest(tmp_path / "raw", tmp_path / "store")
    monkeypatch.undo()
    after = pl.read_parquet(tmp_path / "store/manifests/sequences.parquet")
    assert after.equals(before)
    store = Store(tmp_path / "store")
    seq = store.open_sequence(after.filter(pl.col("sequence") == SENTENCE)["path"][0])
    assert seq.vertices.shape == (12, 6172, 3) and seq.mel is not None
    assert not any((tmp_path / "store/.staging").iterdir())


def test_dry_run_writes_nothing_and_plans(tmp_path):
    write_tree(tmp_path / "raw")
    report = ingest(tmp_path / "raw", tmp_path / "store", IngestOptions(dry_run=True))
    assert not (tmp_path / "store").exists()
    assert sorted(r.status for r in report.results) == ["ingested", "ingested"]
    ingest(tmp_path / "raw", tmp_path / "store")
    report = ingest(tmp_path / "raw", tmp_path / "store", IngestOptions(dry_run=True))
    assert sorted(r.status for r in report.results) == ["skipped", "skipped"]


def test_nothing_valid_exits_with_a_clear_error(tmp_path):
    raw = tmp_path / "raw" / IDENTITY / "tracked_mesh" / "E001_Neutral_Eyes_Open"
    raw.mkdir(parents=True)
    (raw / "000102.bin").write_bytes(b"\0" * 100)
    with pytest.raises(NothingValidError, match="no valid sequence to ingest"):
        ingest(tmp_path / "raw", tmp_path / "store")
    rejects = pl.read_parquet(tmp_path / "store/manifests/rejects.parquet")
    assert "size of a .bin frame" in rejects["reason"].to_list()
    info = json.loads((tmp_path / "store/facedata.json").read_text())
    assert info["runs"][-1]["sequences"]["ingested"] == 0


def _array_bytes(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted((store / "arrays.zarr").rglob("*"))
            if p.is_file()}


def test_a_small_plan_runs_in_this_process_and_a_forced_pool_stores_the_same(tmp_path, monkeypatch):
    write_tree(tmp_path / "raw")
    report = ingest(tmp_path / "raw", tmp_path / "here", IngestOptions(workers=2))
    assert report.workers == 1  # 2 sequences of a few frames cannot pay for starting workers
    import facedata.ingest.plan as plan

    monkeypatch.setattr(plan, "WORKER_START_S", 0.0)  # workers for free: the pool is used
    report = ingest(tmp_path / "raw", tmp_path / "pool", IngestOptions(workers=2))
    assert report.workers == 2
    assert _array_bytes(tmp_path / "pool") == _array_bytes(tmp_path / "here")
    for name in ("sequences", "rejects"):
        assert (pl.read_parquet(tmp_path / f"pool/manifests/{name}.parquet").drop("source_dir", strict=False)
                .equals(pl.read_parquet(tmp_path / f"here/manifests/{name}.parquet").drop("source_dir", strict=False)))


def test_pool_size_weighs_the_work_against_the_workers_start_up():
    from facedata.discover import FrameFiles, SequenceSource
    from facedata.ingest import SequenceTask, VertexSet
    from facedata.ingest.plan import OBJ_FRAME_S, WORKER_START_S, pool_size

    def task(n_frames: int) -> SequenceTask:
        frames = [FrameFiles(300 + 3 * k, obj=Path(f"{300 + 3 * k:06d}.obj")) for k in range(n_frames)]
        source = SequenceSource("i", "e", f"E{n_frames:03d}", Path("x"), frames)
        return SequenceTask(Path("s"), source, VertexSet("full", np.arange(3), 3), 256, 200.0, "fp")

    # Two workers pay when half the work saves more than their start-up: total / 2 > WORKER_START_S.
    pays = int(2.2 * WORKER_START_S / OBJ_FRAME_S)
    assert pool_size([task(150), task(150)], 2, cores=2) == 1
    assert pool_size([task(pays // 2), task(pays // 2)], 2, cores=2) == 2
    assert pool_size([task(pays // 2), task(pays // 2)], 1, cores=2) == 1  # never more than asked for
    assert pool_size([task(pays)], 4, cores=4) == 1  # one sequence: a second worker would have nothing to do
    assert pool_size([task(pays), task(10)], 2, cores=2) == 1  # the long one alone takes as long as all the work
    assert pool_size([task(pays // 4)] * 8, 4, cores=4) == 4
    assert pool_size([task(pays // 4)] * 8, 4, cores=2) == 2  # never more workers than cores


@pytest.mark.parametrize("obj", ["local", "world"])
def test_both_obj_scanners_store_the_same_bytes(tmp_path, monkeypatch, obj):
    write_tree(tmp_path / "raw", obj=obj, with_bin=False)
    ingest(tmp_path / "raw", tmp_path / "csv")  # a tiny tree: read without loading the compiled scanner
    import facedata.ingest.run as run
    import facedata.ingest.write as write

    monkeypatch.setattr(run, "obj_scanner", lambda n_files: "compiled")
    monkeypatch.setattr(write, "TEMPLATE_OBJ_SCANNER", "compiled")
    ingest(tmp_path / "raw", tmp_path / "compiled")
    assert _array_bytes(tmp_path / "compiled") == _array_bytes(tmp_path / "csv")
