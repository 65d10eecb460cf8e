"""Ingest and stats on a real Dask cluster (LocalCluster: worker processes on loopback) equal a local run.

A worker killed with SIGKILL in the middle of the ingest is replaced by its nanny, the scheduler runs its tasks
again, and the store ends up identical to a single-process ingest.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

distributed = pytest.importorskip("distributed")

from facedata.ingest import IngestOptions, ingest  # noqa: E402
from facedata.stats import StatsOptions, compute_stats  # noqa: E402
from facedata.store import Store  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as c:
        yield c


def files(store: Path) -> dict[str, bytes]:
    """Every file of the arrays and both manifests' rows (provenance with its times left out)."""
    out = {str(p.relative_to(store)): p.read_bytes() for p in (store / "arrays.zarr").rglob("*") if p.is_file()}
    for name in ("sequences", "rejects"):
        out[name] = repr(pl.read_parquet(store / f"manifests/{name}.parquet").rows()).encode()
    return out


def test_ingest_on_a_cluster_equals_a_single_process_ingest(cluster, raw, reference, tmp_path):
    report = ingest(raw, tmp_path / "store", IngestOptions(scheduler=cluster.scheduler_address))
    assert {r.status for r in report.results} == {"ingested"}
    assert files(tmp_path / "store") == files(reference)


def test_a_killed_worker_is_retried_and_the_store_stays_consistent(cluster, raw, reference, tmp_path):
    store = tmp_path / "store"
    with distributed.Client(cluster.scheduler_address) as client:
        victim = next(iter(client.run(os.getpid).values()))
    killed = threading.Event()

    def kill_when_a_sequence_is_being_written() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            staging = store / ".staging"
            if staging.is_dir() and any(p.name != "reserve" for p in staging.iterdir()):  # not the manifests' room
                os.kill(victim, signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_when_a_sequence_is_being_written)
    killer.start()
    report = ingest(raw, store, IngestOptions(scheduler=cluster.scheduler_address))
    killer.join()
    assert killed.is_set(), "the worker was never killed"
    assert {r.status for r in report.results} == {"ingested"}
    assert not any((store / ".staging").iterdir())
    assert files(store) == files(reference)


def test_stats_on_a_cluster_equal_a_local_pass(cluster, reference):
    local = compute_stats(reference, StatsOptions(write_statistics=False))
    remote = compute_stats(reference, StatsOptions(write_statistics=False, scheduler=cluster.scheduler_address))
    np.testing.assert_array_equal(remote.vertex_mean, local.vertex_mean)
    np.testing.assert_array_equal(remote.vertex_std, local.vertex_std)
    np.testing.assert_array_equal(remote.motion_mm, local.motion_mm)
    assert [f.sequence for f in remote.figures] == [f.sequence for f in local.figures]
    assert [f.jump_median_mm for f in remote.figures] == [f.jump_median_mm for f in local.figures]
    assert remote.outliers == local.outliers
    assert Store(reference).sequences().height == len(remote.figures)
