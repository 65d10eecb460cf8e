"""A full disk in every facedata writer: one line naming where, the room needed and the room left; what was stored
before stays valid (no half-written file, group or manifest); an ingest keeps the manifests of what it stored, and
a re-run after space is freed completes the store identical to an uninterrupted run.

Two disks: ``FakeDisk`` (crashes.py), which refuses writes past a capacity and runs everywhere (CI), and a real
tmpfs of a few MB, mounted when the tests run as root and skipped elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from crashes import FakeDisk, contents, resize_tmpfs, run_command, small_tmpfs, store_bytes, temporaries
from typer.testing import CliRunner

from facedata.cli import app
from facedata.errors import DiskFullError, StoreError
from facedata.files import write_bytes_atomic
from facedata.ingest import IngestOptions, ingest
from facedata.masks import build_masks, render_previews
from facedata.split import SplitOptions, split_store
from facedata.stats import StatsOptions, compute_stats, run_stats, write_vertex_statistics
from facedata.store import Store, write_parquet_atomic
from facedata.verify import verify_store


def _errors(store: Path) -> list[str]:
    return [str(p) for p in verify_store(store) if p.severity == "error"]


def _stored_groups(store: Path) -> set[str]:
    root = store / "arrays.zarr"
    return {str(p.parent.relative_to(root)) for p in root.glob("identities/*/sequences/*/zarr.json")}


def _assert_stopped_store_is_sound(store: Path, reference: Path) -> set[str]:
    """verify passes, the manifests list exactly the stored sequences with the rows an uninterrupted run gives them,
    every stored sequence is byte-identical to the uninterrupted run's, and nothing half written is in view."""
    assert _errors(store) == []
    stored = _stored_groups(store)
    rows = pl.read_parquet(store / "manifests/sequences.parquet")
    assert set(rows["path"]) == stored
    expected = pl.read_parquet(reference / "manifests/sequences.parquet").filter(pl.col("path").is_in(stored))
    assert rows.equals(expected)
    ours, theirs = contents(store, under=("arrays.zarr",)), contents(reference, under=("arrays.zarr",))
    for group in stored:
        files = {k: v for k, v in ours.items() if k.startswith(f"arrays.zarr/{group}/")}
        assert files and files == {k: v for k, v in theirs.items() if k.startswith(f"arrays.zarr/{group}/")}, group
    assert temporaries(store) == []
    assert not any((store / ".staging").iterdir()), "the reserve and the cut-off sequence are removed"
    return stored


def _one_line(error: BaseException, store: Path, *words: str) -> None:
    message = str(error)
    assert "\n" not in message and message.startswith(str(store)), message
    for word in words:
        assert word in message, (word, message)


def test_a_disk_that_fills_midway_keeps_the_manifests_and_a_rerun_completes_the_store(raw, reference, tmp_path,
                                                                                       monkeypatch):
    disk = FakeDisk(tmp_path, store_bytes(reference) // 2).install(monkeypatch)
    store = tmp_path / "store"
    with pytest.raises(DiskFullError) as stopped:
        ingest(raw, store, IngestOptions(workers=1, ignore_free_space=True))
    _one_line(stopped.value, store, "disk full while writing m--", "expected room for about", "MB free",
              "stored sequences are intact")
    stored = _assert_stopped_store_is_sound(store, reference)
    total = len(_stored_groups(reference))
    assert 0 < len(stored) < total, f"the disk should fill midway ({len(stored)} of {total} sequences stored)"
    assert json.loads((store / "facedata.json").read_text())["runs"][-1]["stopped"] == str(stopped.value)

    disk.capacity_bytes = 10 * store_bytes(reference)  # space is freed
    report = ingest(raw, store, IngestOptions(workers=1))
    assert sum(r.status == "skipped" for r in report.results) == len(stored)
    assert contents(store) == contents(reference)  # every array, zarr.json and manifest; facedata.json's runs masked


def test_a_run_that_cannot_fit_is_refused_before_it_starts(raw, reference, tmp_path, monkeypatch):
    planned = ingest(raw, tmp_path / "store", IngestOptions(dry_run=True)).bytes_planned
    assert planned is not None
    # The estimate is what the store then takes, within 5 % (whole blocks, audio of the frames' length).
    assert abs(planned - store_bytes(reference)) < 0.05 * store_bytes(reference), (planned, store_bytes(reference))

    FakeDisk(tmp_path, planned - 100_000).install(monkeypatch)
    with pytest.raises(StoreError, match="not enough free space") as refused:
        ingest(raw, tmp_path / "store", IngestOptions(workers=1))
    free = shutil.disk_usage(tmp_path).free
    _one_line(refused.value, tmp_path / "store", f"expected {planned:,} bytes", f"got {free:,} bytes free",
              "--ignore-free-space")
    assert not (tmp_path / "store").exists(), "nothing is written by a refused run"
    with pytest.raises(DiskFullError):  # told to go ahead, it starts and stops when the disk is full
        ingest(raw, tmp_path / "store", IngestOptions(workers=1, ignore_free_space=True))
    assert _errors(tmp_path / "store") == []


def test_the_dry_run_prints_the_planned_bytes_and_the_free_space(raw, tmp_path):
    result = CliRunner().invoke(app, ["ingest", str(raw), "--store", str(tmp_path / "store"), "--dry-run"])
    assert result.exit_code == 0, result.output
    planned = ingest(raw, tmp_path / "store", IngestOptions(dry_run=True)).bytes_planned
    line = " ".join(result.output.split())  # as one line, whatever the console wrapped
    found = re.search(r"would write about ([\d,]+) bytes \(\d+ [kMG]?B\) into (\S+); ([\d,]+) bytes \(.+\) free there",
                      line)
    assert found, line
    assert int(found[1].replace(",", "")) == planned and found[2] == str(tmp_path / "store")
    free = int(found[3].replace(",", ""))
    assert abs(free - shutil.disk_usage(tmp_path).free) < 0.01 * free  # the machine's disk is shared: near, not equal
    assert not (tmp_path / "store").exists()


def test_an_atomic_write_cut_by_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    import facedata.files as files

    path = tmp_path / "manifest.parquet"
    old = pl.DataFrame({"a": [1, 2, 3]})
    write_parquet_atomic(old, path)
    before = path.read_bytes()
    real = files._write_whole

    def half_then_full(target: Path, data: bytes) -> None:  # the disk fills halfway through the file
        real(target, data[: len(data) // 2])
        raise OSError(28, "No space left on device", str(target))

    monkeypatch.setattr(files, "_write_whole", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        write_parquet_atomic(pl.DataFrame({"a": list(range(1000))}), path)
    with pytest.raises(OSError, match="No space left"):
        write_bytes_atomic(tmp_path / "new.json", b"{}")
    assert path.read_bytes() == before and pl.read_parquet(path).equals(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.parquet"]


# ---------------------------------------------------------------------------------------------------------------
# The curation writers: masks, statistics, report, splits


@pytest.fixture(scope="module")
def curated(before) -> Path:
    """A store with masks (built on one identity), splits (seed 1) and statistics (conftest.py's ``before``)."""
    return before / "store"


@pytest.fixture()
def copy(curated, tmp_path) -> Path:
    shutil.copytree(curated, tmp_path / "store")
    return tmp_path / "store"


def _full_now(root: Path, monkeypatch, *, spare_bytes: int = 0) -> FakeDisk:
    """A disk under ``root`` with ``spare_bytes`` left beyond what is stored now."""
    return FakeDisk(root, store_bytes(root) + spare_bytes).install(monkeypatch)


@pytest.mark.parametrize(("writer", "what", "kept"), [
    ("split", "the splits", "the previous splits are intact"),
    ("masks", "the masks", "the previous masks are intact"),
    ("statistics", "the vertex statistics", "the previous statistics are intact"),
])
def test_a_full_disk_in_a_curation_writer_keeps_what_was_stored(writer, what, kept, copy, monkeypatch):
    before = contents(copy)
    disk = _full_now(copy, monkeypatch)
    with pytest.raises(DiskFullError) as stopped:
        if writer == "split":
            split_store(copy, SplitOptions(seed=0))
        elif writer == "masks":
            build_masks(store=copy, previews=False)
        else:
            stats = compute_stats(copy, StatsOptions(write_statistics=False))
            write_vertex_statistics(copy, stats.vertex_mean + 1, stats.vertex_std, stats.training)
    assert disk.refused >= 1
    _one_line(stopped.value, copy, f"disk full while writing {what}", kept)
    assert contents(copy) == before, "every file as it was"
    assert temporaries(copy) == [] and not any((copy / ".staging").iterdir())
    assert _errors(copy) == []


def test_a_full_disk_in_the_report_or_the_previews_leaves_whole_files(copy, tmp_path, monkeypatch):
    report = tmp_path / "report"
    run_stats(copy, report_dir=report)
    previews = tmp_path / "previews"
    s = Store(copy)
    masks = s.masks()
    render_previews(s.template(s.sequences()["identity"][0]), s.faces(), masks, previews)
    before = {"report": contents(report, keys=()), "previews": contents(previews, keys=())}

    disk = FakeDisk(report, store_bytes(report) + 60_000).install(monkeypatch)  # room for a plot or two
    with pytest.raises(DiskFullError) as stopped:
        run_stats(copy, report_dir=report)
    assert disk.refused == 1
    _one_line(stopped.value, report, "disk full while writing the statistics report", "each report file is whole")
    after = contents(report, keys=())
    assert set(after) == set(before["report"]) and temporaries(report) == []
    json.loads(after["report.json"])  # whole
    for name, data in after.items():  # each file is its old version or a whole new one (a PNG ends with IEND)
        assert data == before["report"][name] or (name.endswith(".png") and data.endswith(b"IEND\xaeB`\x82")), name

    monkeypatch.undo()
    FakeDisk(previews, store_bytes(previews)).install(monkeypatch)
    moved = {name: np.roll(m, 7) for name, m in masks.items()}
    with pytest.raises(DiskFullError) as stopped:
        render_previews(s.template(s.sequences()["identity"][0]), s.faces(), moved, previews)
    assert "\n" not in str(stopped.value) and str(stopped.value).startswith(str(previews))
    assert contents(previews, keys=()) == before["previews"] and temporaries(previews) == []


def test_the_cli_prints_a_full_disk_in_one_line(copy, monkeypatch, capsys):
    from facedata.cli import main

    _full_now(copy, monkeypatch)
    monkeypatch.setattr("sys.argv", ["facedata", "split", "--store", str(copy)])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {copy}: disk full while writing the splits"), err


# ---------------------------------------------------------------------------------------------------------------
# A real tmpfs (root only)


def test_on_a_real_tmpfs_that_fills_midway(raw, reference, tmp_path):
    size = (store_bytes(reference) // 2) // (1 << 20) * (1 << 20)
    with small_tmpfs(tmp_path / "disk", size) as disk:
        store = disk / "store"
        refused = run_command(["ingest", str(raw), "--store", str(store), "--workers", "1"])
        line = refused.stderr.strip().splitlines()[-1]
        assert refused.returncode == 1 and line.startswith(f"error: {store}: not enough free space"), refused.stderr
        assert f"got {shutil.disk_usage(disk).free:,} bytes free" in line
        assert not store.exists()

        stopped = run_command(["ingest", str(raw), "--store", str(store), "--workers", "1", "--ignore-free-space"])
        assert stopped.returncode == 1, stopped.stderr
        line = stopped.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: {store}: disk full while writing m--") and "\n" not in line, line
        assert line.endswith("stored sequences are intact")
        stored = _assert_stopped_store_is_sound(store, reference)
        assert 0 < len(stored) < len(_stored_groups(reference))
        assert run_command(["verify", "--store", str(store)]).returncode == 0

        resize_tmpfs(disk, 4 * size)  # space is freed
        ingest(raw, store, IngestOptions(workers=1))
        assert contents(store) == contents(reference)


def test_a_pool_of_workers_on_a_real_tmpfs_that_fills_midway(raw, reference, tmp_path, monkeypatch):
    import facedata.ingest.plan as plan

    monkeypatch.setattr(plan, "WORKER_START_S", 0.0)  # workers for free: the sequences run in a pool of two
    size = (store_bytes(reference) // 2) // (1 << 20) * (1 << 20)
    with small_tmpfs(tmp_path / "disk", size) as disk:
        store = disk / "store"
        with pytest.raises(DiskFullError) as stopped:  # raised in a worker, carried to this process
            ingest(raw, store, IngestOptions(workers=2, ignore_free_space=True))
        _one_line(stopped.value, store, "disk full while writing m--", "stored sequences are intact")
        stored = _assert_stopped_store_is_sound(store, reference)
        assert 0 < len(stored) < len(_stored_groups(reference))
        resize_tmpfs(disk, 4 * size)
        assert ingest(raw, store, IngestOptions(workers=2)).workers == 2
        assert contents(store) == contents(reference)


def test_curation_writers_on_a_real_full_tmpfs(curated, tmp_path):
    size = (store_bytes(curated) // (1 << 20) + 2) * (1 << 20)
    with small_tmpfs(tmp_path / "disk", size) as disk:
        store = disk / "store"
        shutil.copytree(curated, store)
        with open(disk / "filler", "wb") as f, contextlib.suppress(OSError):  # the disk full to the last page
            f.write(bytes(shutil.disk_usage(disk).free))
        assert shutil.disk_usage(disk).free < 4096
        before = contents(store)
        for args, what in ((["split", "--store", str(store)], "the splits"),
                           (["build-masks", "--store", str(store), "--no-previews"], "the masks"),
                           (["stats", "--store", str(store)], "the vertex statistics")):
            run = run_command(args)
            assert run.returncode == 1, (args, run.stderr)
            line = run.stderr.strip().splitlines()[-1]
            assert line.startswith(f"error: {store}: disk full while writing {what}"), line
            assert contents(store) == before and temporaries(store) == []
        assert _errors(store) == []

