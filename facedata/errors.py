"""Errors raised on bad input.

Every error names the file (or store path), what was expected and what was found, so that the CLI can print it
as one line. The classes also subclass the matching built-in error, so callers can catch either.
"""

from __future__ import annotations

from pathlib import Path


class FacedataError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(FacedataError, ValueError):
    """A file or value that does not hold what it should.

    Args:
        path: the offending file or store path.
        what: what is wrong, in a few words (``"vertex count"``).
        expected: the expected value, as text.
        actual: the value found, as text.
    """

    def __init__(self, path: str | Path, what: str, *, expected: object = None, actual: object = None):
        self.path = str(path)
        self.what = what
        self.expected = None if expected is None else str(expected)
        self.actual = None if actual is None else str(actual)
        message = f"{self.path}: {what}"
        if expected is not None or actual is not None:
            message += f" (expected {self.expected}, got {self.actual})"
        super().__init__(message)


class StoreError(FacedataError, RuntimeError):
    """A store that is missing, of an unknown format version, or inconsistent."""


class NothingValidError(FacedataError, RuntimeError):
    """An input that contains nothing usable (for example a raw tree with no valid sequence)."""


class DiskFullError(StoreError):
    """A write that ran out of disk space (or quota). The message names where, the room needed and the room left;
    what was stored before the write is intact (every writer replaces files and groups whole)."""
