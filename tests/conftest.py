"""Shared fixtures. ``shared_dir`` is the facts folder beside the checkout (``../shared``); tests that need it
are skipped with a reason when it is absent (it is present in CI)."""

from __future__ import annotations

import faulthandler
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Past pytest-timeout's limit (pyproject.toml), for a test stuck in C code that holds the interpreter, where that
# limit's thread cannot run: faulthandler's own C thread prints every stack and ends the run.
STUCK_SECONDS = 900
_STDERR: list[int] = []  # the terminal's stderr, kept before the tests' output capture replaces descriptor 2


def pytest_configure(config: pytest.Config) -> None:
    _STDERR.append(os.dup(2))  # hooks run with the capture suspended


@pytest.fixture(autouse=True)
def _end_a_run_stuck_in_c():
    faulthandler.dump_traceback_later(STUCK_SECONDS, exit=True, file=_STDERR[0])
    yield
    faulthandler.cancel_dump_traceback_later()


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
