"""Stores on object storage: ingest output, curation, statistics and training input at an s3:// URL.

The S3 endpoint is moto's server, started by the test on loopback (a real HTTP S3 API, no network). Everything
written to s3://bucket/store must read back equal to the same work on a local disk.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("upath")
moto_server = pytest.importorskip("moto.server")

from facedata.errors import StoreError  # noqa: E402
from facedata.ingest import IngestOptions, ingest  # noqa: E402
from facedata.masks import build_masks  # noqa: E402
from facedata.split import split_store  # noqa: E402
from facedata.stats import StatsOptions, compute_stats  # noqa: E402
from facedata.store import LOCK_FILE, RemoteRows, Store, store_lock, store_path  # noqa: E402
from facedata.synth import write_raw_tree  # noqa: E402

BUCKET = "facetalk-test"


@pytest.fixture(scope="module")
def s3():
    """An S3 server on loopback; the AWS_* variables point every client (boto, s3fs) at it."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                            "AWS_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://{host}:{port}")
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield f"s3://{BUCKET}"
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def stores(s3, tmp_path_factory) -> tuple[str, Path]:
    """The same tree ingested, split, masked and measured at an s3:// URL and on the local disk."""
    raw = tmp_path_factory.mktemp("s3") / "raw"
    write_raw_tree(raw, identities=2, sentences=3, seconds=1.0, seed=4, obj_every=10)
    remote, local = f"{s3}/store", tmp_path_factory.mktemp("local") / "store"
    for store in (remote, local):
        ingest(raw, store, IngestOptions(workers=1))
        split_store(store)
        build_masks(store=store, previews=False)
        compute_stats(store, StatsOptions())
    return remote, local


def test_ingest_to_s3_reads_back_equal_to_a_local_ingest(stores):
    remote, local = Store(stores[0]), Store(stores[1])
    assert remote.sequences().equals(local.sequences())
    assert remote.rejects().equals(local.rejects())
    assert remote.splits().equals(local.splits())
    np.testing.assert_array_equal(remote.faces(), local.faces())
    for row in local.sequences().iter_rows(named=True):
        a, b = remote.open_sequence(row["path"]), local.open_sequence(row["path"])
        assert isinstance(a.vertices, RemoteRows)  # no memory map on object storage: byte-range reads
        np.testing.assert_array_equal(np.asarray(a.vertices), np.asarray(b.vertices))
        np.testing.assert_array_equal(a.vertices[2:9, :5], b.vertices[2:9, :5])
        np.testing.assert_array_equal(a.observed, b.observed)
        if b.mel is not None:
            np.testing.assert_array_equal(np.asarray(a.mel), np.asarray(b.mel))
            np.testing.assert_array_equal(np.asarray(a.audio), np.asarray(b.audio))
        np.testing.assert_array_equal(remote.template(row["identity"]), local.template(row["identity"]))


def test_masks_and_statistics_on_s3_equal_the_local_ones(stores):
    remote, local = Store(stores[0]), Store(stores[1])
    masks_remote, masks_local = remote.masks(), local.masks()
    assert masks_remote.keys() == masks_local.keys() >= {"mouth", "upper_face", "eyelid"}
    for name in masks_local:
        np.testing.assert_array_equal(masks_remote[name], masks_local[name])
    for a, b in zip(remote.vertex_statistics(), local.vertex_statistics(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_rerunning_ingest_on_s3_skips_everything(stores, tmp_path):
    remote = stores[0]
    raw = Path(Store(remote).sequences()["source_dir"][0]).parents[2]
    report = ingest(raw, remote, IngestOptions(workers=1))
    assert {r.status for r in report.results} == {"skipped"}


def test_a_second_writer_is_refused_on_s3(stores):
    root = store_path(stores[0])
    with store_lock(root), pytest.raises(StoreError, match="another facedata process"):
        with store_lock(root):
            pass
    assert not (root / LOCK_FILE).exists()


def test_training_reads_its_windows_from_s3(stores, tmp_path):
    import torch

    from meshtalk.data import WindowDataset, select_sequences
    from meshtalk.train import main_entry, read_log

    remote, local = Store(stores[0]), Store(stores[1])
    a = WindowDataset(remote, select_sequences(remote), frames=8, seed=1).__getitems__([0, 1])
    b = WindowDataset(local, select_sequences(local), frames=8, seed=1).__getitems__([0, 1])
    for key in b:
        assert torch.equal(a[key], b[key]), key
    small = {"heads": 2, "classes": 4, "context_channels_per_head": 4, "decoder_hidden": [32, 16, 8],
             "expression_hidden": 16}
    main_entry({"store": stores[0], "out": str(tmp_path / "run"), "stage": 1, "steps": 2, "frames": 8,
                "batch_size": 2, "workers": 0, "model": small, "monitor_every": 0, "val_every": 0,
                "checkpoint_every": 2}, resume=False, progress=False)
    losses = [r["losses"]["loss"] for r in read_log(tmp_path / "run", "train")]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_the_cli_takes_store_urls(stores):
    from typer.testing import CliRunner

    from facedata.cli import app

    runner = CliRunner()
    info = runner.invoke(app, ["info", "--store", stores[0]])
    assert info.exit_code == 0, info.output
    assert f"{stores[0]}: facedata-store v1" in info.output
