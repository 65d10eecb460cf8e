"""Fixtures shared by the fault tests (test_full_disk.py, test_kills.py) and the cluster tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from crashes import write_before

from facedata.ingest import IngestOptions, ingest
from facedata.synth import write_raw_tree


@pytest.fixture(scope="session")
def raw(tmp_path_factory) -> Path:
    """A raw tree of two identities with four 1.5-s sentences each, an OBJ every tenth frame."""
    out = tmp_path_factory.mktemp("raw") / "raw"
    write_raw_tree(out, identities=2, sentences=4, seconds=1.5, seed=11, obj_every=10)
    return out


@pytest.fixture(scope="session")
def reference(raw, tmp_path_factory) -> Path:
    """``raw`` ingested in one uninterrupted run in this process."""
    store = tmp_path_factory.mktemp("reference") / "store"
    ingest(raw, store, IngestOptions(workers=1))
    return store


@pytest.fixture(scope="session")
def before(tmp_path_factory) -> Path:
    """``store/`` holding every curation output in an earlier version (``crashes.write_before``, no report)."""
    return write_before(tmp_path_factory.mktemp("curated"), report=False)
