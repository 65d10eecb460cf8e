"""SIGKILL at random points in the curation writers: ``facedata split``, ``build-masks`` and ``stats``.

Each trial copies a store that already holds an earlier version of every output (splits of another seed, masks
built on one identity, statistics and a report from before the splits existed), runs the
command in a child process and kills it after a random time drawn from its own uninterrupted duration (counted
from the end of its imports, so that the kill lands in its work). Then:

- ``facedata verify`` finds no error in the store;
- every file and every group written in one step (``arrays.zarr/masks``, ``arrays.zarr/stats``) is its old version
  or its new one, whole; nothing else changed;
- the command re-runs to the same outputs as an uninterrupted run (byte-identical but for the time of creation and
  the duration recorded in JSON and HTML), with nothing left in ``.staging`` and no temporary file;
- the lock a killed writer held does not block the re-run.

Two trials per command here, with ``build-masks --no-previews`` and ``stats`` without ``--report`` to stay fast;
``benchmarks/kill_trials.py`` runs ten per command with the same checks, previews and report included, and prints
where each kill landed. The ingest kill test is in test_ingest_e2e.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest
from crashes import KillTrials

from facedata.errors import StoreError
from facedata.store import LOCK_FILE, store_lock, store_path


@pytest.fixture(scope="module")
def trials(before, tmp_path_factory) -> KillTrials:
    return KillTrials(before, tmp_path_factory.mktemp("trial") / "work")


@pytest.mark.parametrize("name", ["split", "build-masks", "stats"])
@pytest.mark.parametrize("trial", [0, 1])
def test_a_random_kill_leaves_a_sound_store_and_the_rerun_its_result(name, trial, trials):
    trials.trial(name, random.Random(f"{name}-{trial}"))


def test_a_lock_held_by_a_killed_process_does_not_block_the_next_writer(tmp_path):
    store = tmp_path / "store"
    code = ("import sys, time, pathlib\nfrom facedata.store import store_lock\n"
            "lock = store_lock(pathlib.Path(sys.argv[1])); lock.__enter__()\nprint('locked', flush=True)\n"
            "time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(store)], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    with pytest.raises(StoreError, match="another facedata process is writing this store"), store_lock(store):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (store / LOCK_FILE).exists()  # the file stays; no dead process holds a lock on it
    with store_lock(store):
        pass


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(("holder", "taken"), [
    ("a process of this host that is gone", True),
    ("a live process of this host", False),
    ("a young lock of another host", False),
    ("an old lock of another host", True),
])
def test_an_object_storage_lock_is_stale_when_its_writer_is_gone(holder, taken):
    root = store_path(f"memory://locks-{abs(hash(holder))}/store")
    pid, host, age_s = {
        "a process of this host that is gone": (_dead_pid(), socket.gethostname(), 10.0),
        "a live process of this host": (os.getpid(), socket.gethostname(), 10.0),
        "a young lock of another host": (12345, "elsewhere", 10.0),
        "an old lock of another host": (12345, "elsewhere", 7 * 3600.0),
    }[holder]
    (root / LOCK_FILE).write_text(json.dumps({"host": host, "pid": pid, "time": time.time() - age_s, "token": "t"}))
    if taken:
        with store_lock(root):
            assert json.loads((root / LOCK_FILE).read_text())["pid"] == os.getpid()
        assert not (root / LOCK_FILE).exists()
    else:
        with pytest.raises(StoreError, match=f"pid {pid}"), store_lock(root):
            pass


def test_a_kill_inside_an_atomic_write_keeps_the_old_file_and_the_next_write_removes_the_temporary(tmp_path):
    from facedata.files import write_bytes_atomic

    path = tmp_path / "manifest.parquet"
    path.write_bytes(b"old")
    # The child stops halfway through writing the temporary, as a kill would find it.
    code = ("import os, sys, time, pathlib\nimport facedata.files as files\n"
            "def half(target, data):\n    with open(target, 'wb') as f:\n        f.write(data[: len(data) // 2])\n"
            "        f.flush()\n    print('halfway', flush=True)\n    time.sleep(120)\n"
            "files._write_whole = half\nfiles.write_bytes_atomic(pathlib.Path(sys.argv[1]), b'new' * 1000)\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"halfway\n"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert path.read_bytes() == b"old" and len(left) == 2 and left[0].startswith(f".manifest.parquet.{child.pid}-")
    write_bytes_atomic(path, b"newer")  # the killed writer's temporary goes with the next write of the file
    assert path.read_bytes() == b"newer" and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.parquet"]


def test_the_next_writer_removes_the_temporaries_a_killed_one_left_in_the_store(tmp_path):
    from facedata.store import clear_staging

    store = tmp_path / "store"
    for name in ("manifests/.sequences.parquet.1-aa.tmp", ".facedata.json.1-bb.tmp",
                 "arrays.zarr/identities/m--x/zarr.1234.partial", ".staging/0123/zarr.json"):
        (store / name).parent.mkdir(parents=True, exist_ok=True)
        (store / name).write_bytes(b"part")
    (store / "manifests/sequences.parquet").write_bytes(b"whole")
    with store_lock(store):
        pass
    assert sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file()) == \
           [".lock", "manifests/sequences.parquet"]
    assert clear_staging(store) == 0
