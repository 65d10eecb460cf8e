"""Shared fixtures. ``shared_dir`` is the facts folder beside the checkout (``../shared``); tests that need it
are skipped with a reason when it is absent (it is present in CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path | None:
    candidates = [os.environ.get("FACETALK_SHARED"), REPO.parent / "shared"]
    for c in candidates:
        if c and (Path(c) / "golden").is_dir():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    d = _shared_dir()
    if d is None:
        pytest.skip("the shared facts folder (../shared) is not beside the checkout")
    return d
