"""Fixtures shared by the fault tests (test_full_disk.py, test_kills.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from crashes import write_before


@pytest.fixture(scope="session")
def before(tmp_path_factory) -> Path:
    """``store/`` holding every curation output in an earlier version (``crashes.write_before``, no report)."""
    return write_before(tmp_path_factory.mktemp("curated"), report=False)
