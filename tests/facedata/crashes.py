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

    Every byte the package writes goes through a write of a staged file (``facedata.files.write_new_file``, as the
    store's writer calls it), one atomic file write (``facedata.files._write_whole``) or a reservation
    (``facedata.files.reserve_space``); each is checked against the room left, which is ``capacity_bytes`` minus
    what the files under ``root`` take (whole blocks), so deleted files give their room back as on a real disk. A
    write that does not fit raises ``OSError(ENOSPC)`` as the kernel would, and ``shutil.disk_usage`` reports the
    room left. ``install`` patches all four.
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
        import facedata.files as files
        import facedata.store.write as store_write

        new, whole, reserve, usage = files.write_new_file, files._write_whole, files.reserve_space, shutil.disk_usage

        def fake_new(path: Path, data: bytes) -> None:
            self.check(path, len(data))
            new(path, data)

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

        monkeypatch.setattr(store_write, "write_new_file", fake_new)
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
    the lock file, ``.staging`` and the temporaries of atomic writes are left out (no reader opens them; see
    ``temporaries``)."""
    out = {}
    for part in under:
        base = root / part
        if not base.exists():
            continue
        for p in sorted(base.rglob("*")):
            rel = p.relative_to(root)
            if p.is_file() and ".staging" not in rel.parts and p.name != ".lock" and not _temporary(p):
                out[str(rel)] = masked(p, p.read_bytes(), keys)
    return out


def _temporary(path: Path) -> bool:
    return path.name.endswith((".tmp", ".partial"))


def temporaries(root: Path) -> list[str]:
    """Temporary files of an atomic write (``facedata.files``, zarr's ``.partial``) anywhere outside ``.staging``."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*")
                  if _temporary(p) and ".staging" not in p.relative_to(root).parts)


def temporaries_of_others(root: Path, pid: int) -> list[str]:
    """``temporaries`` not written by the process ``pid`` (``facedata.files`` puts the writer's pid in the name)."""
    return [t for t in temporaries(root) if not Path(t).name.split(".tmp")[0].rsplit(".", 1)[-1].startswith(f"{pid}-")]


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
    pid: int


def run_command(args: list[str], *, kill_after_s: float | None = None, env: dict[str, str] | None = None) -> Run:
    """Run ``facedata ARGS`` in a child process (the CLI's ``run``, as the installed command runs it) and, with
    ``kill_after_s``, SIGKILL it that long after it is ready (imports done), unless it has finished by then."""
    ready_read, ready_write = os.pipe()
    code = ("import importlib, os, sys\n"
            f"for name in {PRELOAD.get(args[0], [])!r}: importlib.import_module(name)\n"
            "from facedata.cli import run\n"
            f"os.write({ready_write}, b'r'); os.close({ready_write})\n"
            f"sys.argv = ['facedata', *{args!r}]\n"
            "run()\n")
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
                   stdout=out.read().decode(errors="replace"), stderr=err.read().decode(errors="replace"),
                   pid=child.pid)


# ---------------------------------------------------------------------------------------------------------------
# Kill trials of the curation writers (test_kills.py and benchmarks/kill_trials.py)


@dataclass(frozen=True)
class Command:
    """A command's arguments (``STORE`` and ``REPORT`` stand for the trial's paths) and what it replaces in one
    step: ``groups`` (folders swapped whole); every other file it writes is replaced whole on its own."""

    args: tuple[str, ...]
    groups: tuple[str, ...] = ()


COMMANDS = {
    "split": Command(("split", "--store", "STORE", "--seed", "0")),
    "build-masks": Command(("build-masks", "--store", "STORE", "--no-previews"), ("store/arrays.zarr/masks",)),
    "build-masks+previews": Command(("build-masks", "--store", "STORE"), ("store/arrays.zarr/masks",)),
    "stats": Command(("stats", "--store", "STORE"), ("store/arrays.zarr/stats",)),
    "stats+report": Command(("stats", "--store", "STORE", "--report", "REPORT"), ("store/arrays.zarr/stats",)),
}


def write_before(parent: Path, *, report: bool = True) -> Path:
    """``parent/before`` with ``store/`` and (with ``report``) ``report/``: every output of the curation commands
    in an earlier version (statistics and report from before the splits existed, splits of seed 1, masks built on
    one identity, no previews) so that a kill can be seen to keep the old version or the new one."""
    from facedata.ingest import IngestOptions, ingest
    from facedata.masks import build_masks
    from facedata.split import SplitOptions, split_store
    from facedata.stats import run_stats
    from facedata.synth import write_raw_tree

    root = parent / "before"
    write_raw_tree(parent / "raw", identities=3, sentences=3, seconds=0.5, seed=21, obj_every=1000)
    store = root / "store"
    ingest(parent / "raw", store, IngestOptions(workers=1))
    run_stats(store, report_dir=root / "report" if report else None)  # trained on every sentence: no splits yet
    split_store(store, SplitOptions(seed=1))
    first = sorted(p.name for p in (store / "arrays.zarr/identities").iterdir() if p.is_dir())[0]
    build_masks(store=store, identity=first, previews=False)
    return root


class KillTrials:
    """Kill trials of the ``COMMANDS`` on copies of a ``write_before`` folder, all at one path (a report names its
    store's path, so the uninterrupted run and every trial must agree on it)."""

    def __init__(self, before: Path, work: Path):
        self.before_root, self.root = before, work
        self.reference: dict[str, tuple[dict[str, bytes], float]] = {}

    def fresh(self) -> Path:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.copytree(self.before_root, self.root)
        return self.root

    def args(self, name: str) -> list[str]:
        paths = {"STORE": str(self.root / "store"), "REPORT": str(self.root / "report")}
        return [paths.get(a, a) for a in COMMANDS[name].args]

    def uninterrupted(self, name: str) -> tuple[dict[str, bytes], float]:
        """The outputs of an uninterrupted run (masked: ``TIME_KEYS``) and its seconds after its imports."""
        if name not in self.reference:
            self.fresh()
            run = run_command(self.args(name))
            assert run.returncode == 0, run.stderr
            self.reference[name] = contents(self.root, keys=TIME_KEYS), run.work_s
        return self.reference[name]

    def trial(self, name: str, rng: Any) -> tuple[float, str]:
        """Kill ``name`` after a random time drawn from U(0, its uninterrupted seconds), check the store, re-run it
        and check the result. Returns (the delay, where the kill landed); a failed check raises AssertionError."""
        from typer.testing import CliRunner

        from facedata.cli import app
        from facedata.verify import verify_store

        new, work_s = self.uninterrupted(name)
        old = contents(self.fresh(), keys=TIME_KEYS)
        assert old != new, "the command must change something for the trial to mean anything"
        delay = rng.uniform(0.0, work_s)
        run = run_command(self.args(name), kill_after_s=delay)
        where = f"{name} killed after {delay:.2f} s"
        store = self.root / "store"

        errors = [str(p) for p in verify_store(store) if p.severity == "error"]
        assert errors == [], f"{where}: verify: {errors}"
        now = contents(self.root, keys=TIME_KEYS)
        assert set(now) <= set(old) | set(new), f"{where}: unexpected files {sorted(set(now) - set(old) - set(new))}"
        grouped: set[str] = set()
        for group in COMMANDS[name].groups:
            part = {k: v for k, v in now.items() if k.startswith(f"{group}/")}
            versions = [{k: v for k, v in c.items() if k.startswith(f"{group}/")} for c in (old, new)]
            assert part in versions, f"{where}: {group} is neither its old nor its new version"
            grouped |= set(part)
        for path, data in now.items():
            if path not in grouped:
                assert data in (old.get(path), new.get(path)), f"{where}: {path} is neither old nor new"
        # A kill can leave the hidden temporary of the file it was writing; the re-run removes it.
        assert temporaries_of_others(self.root, run.pid) == [], f"{where}: {temporaries(self.root)}"
        landed = ("finished before the kill" if not run.killed else "before any output" if now == old else
                  "after every output" if now == new else "between outputs")

        result = CliRunner().invoke(app, self.args(name))  # takes the lock the killed process may have held
        assert result.exit_code == 0, f"{where}: the re-run failed: {result.output}"
        assert contents(self.root, keys=TIME_KEYS) == new, f"{where}: the re-run differs from an uninterrupted run"
        assert not any((store / ".staging").iterdir()) and temporaries(self.root) == []
        return delay, landed


_SEQUENCE_GROUP = re.compile(r"^(arrays\.zarr/identities/[^/]+/sequences/[^/]+)/")


def ingest_kill_trial(raw: Path, reference: Path, work: Path, work_s: float, rng: Any) -> tuple[float, str]:
    """Kill ``facedata ingest RAW`` into a new store at ``work`` after U(0, ``work_s``) seconds and check what is
    left: every sequence group in place is byte-identical to ``reference``'s, the manifests are absent (a first run
    writes them at its end) or whole and list only groups in place, no temporary is in view; then the re-run equals
    ``reference`` (facedata.json's runs masked). Returns (the delay, where the kill landed)."""
    import polars as pl

    from facedata.ingest import IngestOptions, ingest

    shutil.rmtree(work, ignore_errors=True)
    delay = rng.uniform(0.0, work_s)
    run = run_command(["ingest", str(raw), "--store", str(work), "--workers", "1"], kill_after_s=delay)
    where = f"ingest killed after {delay:.2f} s"
    expected = contents(reference)
    now = contents(work) if work.exists() else {}
    groups = sorted({m[1] for k in now if (m := _SEQUENCE_GROUP.match(k))})
    for group in groups:
        ours = {k: v for k, v in now.items() if k.startswith(f"{group}/")}
        assert ours == {k: v for k, v in expected.items() if k.startswith(f"{group}/")}, f"{where}: {group} differs"
    manifest = work / "manifests" / "sequences.parquet"
    if manifest.exists():
        listed = set(pl.read_parquet(manifest)["path"].to_list())
        assert listed <= {g.removeprefix("arrays.zarr/") for g in groups}, f"{where}: manifest lists a missing group"
    assert not work.exists() or temporaries_of_others(work, run.pid) == [], f"{where}: {temporaries(work)}"
    stored = len(groups)
    landed = ("finished before the kill" if not run.killed else "before any sequence" if stored == 0 else
              "after every sequence" if now == expected else f"midway ({stored} sequences stored)")
    ingest(raw, work, IngestOptions(workers=1))
    assert contents(work) == expected, f"{where}: the re-run differs from an uninterrupted run"
    assert temporaries(work) == [] and not any((work / ".staging").iterdir())
    return delay, landed
