"""Helpers of the fault tests (test_full_disk.py, test_kills.py, test_ingest_e2e.py) and of benchmarks/kill_trials.py:
a disk that fills, a real small tmpfs, a command killed at a random point, and a store's contents compared with the
parts that legitimately differ between two runs masked.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facedata.files import block_bytes

# ---------------------------------------------------------------------------------------------------------------
# A full disk


class FakeDisk:
    """A disk of ``capacity_bytes`` under ``root``, for CI where no small file system can be mounted.

    Every byte the package writes goes through zarr's local store (``zarr.storage._local._put``), one atomic file
    write (``facedata.files._write_whole``) or a reservation (``facedata.files.reserve_space``); each is checked
    against the room left, which is ``capacity_bytes`` minus what the files under ``root`` take (whole blocks), so
    deleted files give their room back as on a real disk. A write that does not fit raises ``OSError(ENOSPC)`` as
    the kernel would, and ``shutil.disk_usage`` reports the room left. ``install`` patches all four.
    """

    def __init__(self, root: Path, capacity_bytes: int):
        self.root = Path(os.path.abspath(root))
        self.capacity_bytes = capacity_bytes
        self.refused = 0  # writes refused so far

    def used_bytes(self) -> int:
        return store_bytes(self.root)

    def free(self) -> int:
        return max(0, self.capacity_bytes - self.used_bytes())

    def _inside(self, path: Any) -> bool:
        return Path(os.path.abspath(path)).is_relative_to(self.root)

    def check(self, path: Any, n_bytes: int) -> None:
        if self._inside(path) and block_bytes(n_bytes) > self.free():
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def install(self, monkeypatch: Any) -> FakeDisk:
        import zarr.storage._local as local

        import facedata.files as files

        put, whole, reserve, usage = local._put, files._write_whole, files.reserve_space, shutil.disk_usage

        def fake_put(path: Path, value: Any, exclusive: bool = False) -> int:
            self.check(path, memoryview(value.as_buffer_like()).nbytes)
            return put(path, value, exclusive=exclusive)

        def fake_whole(path: Path, data: bytes) -> None:
            self.check(path, len(data))
            whole(path, data)

        def fake_reserve(path: Path, n_bytes: int) -> bool:
            return False if self._inside(path) and block_bytes(n_bytes) > self.free() else reserve(path, n_bytes)

        def fake_usage(path: Any) -> Any:
            real = usage(path)
            if not self._inside(path):
                return real
            return type(real)(self.capacity_bytes, self.used_bytes(), self.free())

        monkeypatch.setattr(local, "_put", fake_put)
        monkeypatch.setattr(files, "_write_whole", fake_whole)
        monkeypatch.setattr(files, "reserve_space", fake_reserve)
        monkeypatch.setattr(shutil, "disk_usage", fake_usage)
        return self


def store_bytes(root: Path) -> int:
    """What the files under ``root`` take on a disk, in whole blocks."""
    return sum(block_bytes(p.stat().st_size) for p in Path(root).rglob("*") if p.is_file())


@contextlib.contextmanager
def small_tmpfs(where: Path, size_bytes: int) -> Iterator[Path]:
    """A real tmpfs of ``size_bytes`` mounted at ``where`` (root only; skips the test where it cannot be mounted),
    unmounted afterwards."""
    import pytest

    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def resize_tmpfs(where: Path, size_bytes: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size_bytes}", str(where)], check=True)


# ---------------------------------------------------------------------------------------------------------------
# A store's contents, compared between runs

_TIME = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}")
# What differs between two runs that did the same work: when they ran and how long they took. Ingest records its
# runs in facedata.json; masks, statistics and reports their time of creation and duration.
RUN_KEYS = ("runs",)
TIME_KEYS = ("created", "seconds")


def _masked_json(value: Any, keys: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: ("<masked>" if k in keys else _masked_json(v, keys)) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked_json(v, keys) for v in value]
    return value


def masked(path: Path, data: bytes, keys: tuple[str, ...]) -> bytes:
    """A file's bytes with what legitimately differs between two runs replaced: in JSON (zarr.json attributes,
    facedata.json, report.json) the values of ``keys``; in HTML, with ``created`` among them, the time stamps."""
    if path.suffix == ".json" and keys:
        return json.dumps(_masked_json(json.loads(data), keys), sort_keys=True).encode()
    if path.suffix == ".html" and "created" in keys:
        return _TIME.sub(b"<time>", data)
    return data


def contents(root: Path, *, keys: tuple[str, ...] = RUN_KEYS, under: tuple[str, ...] = ("",)) -> dict[str, bytes]:
    """Every file below ``root`` (or below its sub-folders ``under``) by relative path, ``masked`` with ``keys``;
    the lock file and ``.staging`` are left out (no reader opens them)."""
    out = {}
    for part in under:
        base = root / part
        if not base.exists():
            continue
        for p in sorted(base.rglob("*")):
            rel = p.relative_to(root)
            if p.is_file() and rel.parts[0] not in (".staging", ".lock"):
                out[str(rel)] = masked(p, p.read_bytes(), keys)
    return out


def temporaries(root: Path) -> list[str]:
    """Temporary files of an atomic write (``facedata.files``, zarr's ``.partial``) anywhere outside ``.staging``."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*")
                  if (p.name.endswith((".tmp", ".partial"))) and ".staging" not in p.relative_to(root).parts)


# ---------------------------------------------------------------------------------------------------------------
# A command killed at a random point

# What each command's child imports before it says it is ready, so that the kill lands in the command's own work
# and not in Python's start-up.
PRELOAD = {
    "split": ["polars", "zarr", "facedata.split", "facedata.store"],
    "stats": ["polars", "zarr", "facedata.stats", "facedata.stats.report", "matplotlib.figure",
              "matplotlib.backends.backend_agg", "facedata.render"],
    "build-masks": ["polars", "zarr", "scipy.sparse", "facedata.masks", "facedata.render"],
    "ingest": ["polars", "zarr", "facedata.ingest"],
}


@dataclass(frozen=True)
class Run:
    """A command run in a child process: ``work_s`` from its ready line to its end or its kill."""

    work_s: float
    killed: bool
    returncode: int
    stdout: str
    stderr: str


def run_command(args: list[str], *, kill_after_s: float | None = None, env: dict[str, str] | None = None) -> Run:
    """Run ``facedata ARGS`` in a child process (the CLI's ``main``, as the installed command runs it) and, with
    ``kill_after_s``, SIGKILL it that long after it is ready (imports done), unless it has finished by then."""
    ready_read, ready_write = os.pipe()
    code = ("import importlib, os, sys\n"
            f"for name in {PRELOAD.get(args[0], [])!r}: importlib.import_module(name)\n"
            "from facedata.cli import main\n"
            f"os.write({ready_write}, b'r'); os.close({ready_write})\n"
            f"sys.argv = ['facedata', *{args!r}]\n"
            "main()\n")
    # Files, not pipes, for the output: a child that fills a pipe nobody reads would stall and move the kill.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=err, pass_fds=(ready_write,),
                                 env={**os.environ, "COLUMNS": "160", **(env or {})})
        os.close(ready_write)
        with os.fdopen(ready_read, "rb") as ready:
            said = ready.read(1)
        started = time.perf_counter()
        killed = False
        if said == b"r":
            try:
                child.wait(timeout=kill_after_s)
            except subprocess.TimeoutExpired:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
                killed = True
        else:
            child.wait()
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return Run(work_s=seconds, killed=killed, returncode=child.returncode,
                   stdout=out.read().decode(errors="replace"), stderr=err.read().decode(errors="replace"))
